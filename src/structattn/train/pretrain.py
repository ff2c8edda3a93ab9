"""Self-supervised masked-token pretraining of the ViT on the whole structure image (SimMIM).

The image holds far more patches than there are labelled points: a 256 x 256 scan gives
65k patch positions against ~2k spectroscopy points. Before the supervised fit, the encoder
(stem, token embedding, positions, blocks) learns to fill in masked tokens of random patches
cut anywhere in the image (Xie et al., SimMIM, CVPR 2022): half the tokens of each patch are
blanked (pixels set to 0 = the image mean after standardisation, and their embedding replaced
by a learned mask token), and a linear decoder predicts the blanked pixels from each token's
final state. No target is used, so pretraining on held-out regions leaks no label.
"""

from __future__ import annotations

import logging
import tempfile
import warnings

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data.patches import extract_patches
from ..nets.vit import ViTRegressor


class MaskedTokenModule(L.LightningModule):
    """Reconstruct masked tokens' pixels; trains `model`'s encoder in place."""

    def __init__(self, model: ViTRegressor, *, mask_ratio: float, lr: float, weight_decay: float, seed: int) -> None:
        super().__init__()
        self.model = model
        cfg = model.cfg
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.decoder = nn.Linear(cfg.dim, cfg.in_channels * cfg.patch**2)
        self.mask_ratio, self.lr, self.weight_decay = mask_ratio, lr, weight_decay
        self._gen = torch.Generator().manual_seed(seed)
        self.losses: list[float] = []

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        m, cfg = self.model, self.model.cfg
        b, g, p = len(x), cfg.grid, cfg.patch
        n_mask = max(1, int(round(self.mask_ratio * g * g)))
        order = torch.argsort(torch.rand(b, g * g, generator=self._gen), dim=1).to(x.device)
        mask = torch.zeros(b, g * g, dtype=torch.bool, device=x.device)
        mask.scatter_(1, order[:, :n_mask], True)  # (B, g*g) tokens to blank
        pix = mask.view(b, 1, g, 1, g, 1).expand(b, 1, g, p, g, p).reshape(b, 1, g * p, g * p)
        xin = x.masked_fill(pix, 0.0)  # the stem must not see blanked pixels
        t = m.embed_cells(xin).flatten(2).transpose(1, 2)  # (B, g*g, dim)
        t = torch.where(mask[..., None], self.mask_token.expand(b, g * g, -1), t)
        h = torch.cat([m.cls.expand(b, -1, -1), t], dim=1) + m.pos
        for blk in m.blocks:
            h, _ = blk(h)
        pred = self.decoder(m.norm(h[:, 1:]))  # (B, g*g, C*p*p)
        # target pixels in the same token order: (B, C, g, p, g, p) -> (B, g*g, C*p*p)
        tgt = x.view(b, cfg.in_channels, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)
        return ((pred - tgt) ** 2).mean(-1)[mask].mean()

    def training_step(self, batch, _):
        loss = self._step(batch[0])
        self.log("mim_loss", loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=len(batch[0]))
        return loss

    def on_train_epoch_end(self) -> None:
        self.losses.append(float(self.trainer.callback_metrics["mim_loss"]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def pretrain_masked(
    model: ViTRegressor,
    image: np.ndarray,
    *,
    n_patches: int = 2048,
    epochs: int = 10,
    mask_ratio: float = 0.5,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    pad_mode: str = "reflect",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """Pretrain `model` in place on `n_patches` random patches of a standardised (C, H, W) image.

    Returns a history dict (masked-pixel MSE per epoch, on standardised pixels).
    """
    if n_patches < 1 or epochs < 1:
        raise ValueError(f"pretrain: expected n_patches >= 1 and epochs >= 1, got {n_patches}, {epochs}")
    if not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio: expected a fraction in (0, 1), got {mask_ratio}")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    L.seed_everything(seed, workers=True, verbose=False)
    rng = np.random.default_rng(seed)
    h, w = image.shape[1:]
    pos = np.stack([rng.integers(0, h, n_patches), rng.integers(0, w, n_patches)], 1).astype(float)
    x = torch.as_tensor(extract_patches(image, pos, window=model.cfg.window, pad_mode=pad_mode))
    loader = DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    module = MaskedTokenModule(model, mask_ratio=mask_ratio, lr=lr, weight_decay=weight_decay, seed=seed)
    accel = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[device]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer = L.Trainer(max_epochs=epochs, accelerator=accel, devices=1, deterministic=True, logger=False,
                            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                            default_root_dir=tmp)
        trainer.fit(module, loader)
    model.cpu()
    return {"mim_loss": module.losses, "n_patches": n_patches, "epochs": epochs, "mask_ratio": mask_ratio}
