"""Masked-token pretraining (SimMIM) learns the image's texture and is seeded."""

import numpy as np
import pytest
import torch

from structattn.nets.vit import ViTConfig, ViTRegressor
from structattn.train.pretrain import pretrain_masked


def _stripes(seed=0):
    """Vertical stripes with a 6 px period plus a little noise: masked tokens are predictable."""
    rng = np.random.default_rng(seed)
    cols = np.sin(2 * np.pi * np.arange(96) / 6.0)
    img = np.broadcast_to(cols, (96, 96)) + 0.05 * rng.standard_normal((96, 96))
    return img[None].astype(np.float32)


def _model():
    torch.manual_seed(0)
    return ViTRegressor(ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=2, heads=2, stem=8))


def test_pretraining_learns_to_fill_masked_tokens(one_torch_thread):
    hist = pretrain_masked(_model(), _stripes(), n_patches=1024, epochs=8, lr=3e-3, batch_size=32)
    loss = hist["mim_loss"]
    # unit-variance pixels: predicting 0 costs ~0.5 per pixel (sin²); the stripes are predictable from neighbours
    assert loss[0] > 0.3 and loss[-1] < 0.25 * loss[0], loss


def test_pretraining_is_seeded_and_validates(one_torch_thread):
    a, b = _model(), _model()
    pretrain_masked(a, _stripes(), n_patches=64, epochs=1, seed=3)
    pretrain_masked(b, _stripes(), n_patches=64, epochs=1, seed=3)
    x = torch.as_tensor(_stripes()[None, :, :16, :16])
    torch.testing.assert_close(a.eval()(x), b.eval()(x))
    with pytest.raises(ValueError, match="mask_ratio"):
        pretrain_masked(_model(), _stripes(), mask_ratio=1.0)


def test_pretrained_weights_are_kept_in_a_new_checkpoint_folder(one_torch_thread, tmp_path):
    """fit_vit with pretraining and a checkpoint folder that does not exist yet (what every
    `structattn run --pretrain-epochs N` does) writes pretrained.pt there, and a resumed call
    reads those weights back instead of pretraining again: same model, same history."""
    from structattn.train.trainer import TrainConfig, fit_vit

    rng = np.random.default_rng(0)
    img = _stripes()
    x = np.stack([img[:, r:r + 16, c:c + 16] for r, c in rng.integers(0, 80, (40, 2))])
    y = x[:, 0, 6:10, 6:10].mean((1, 2))[:, None].astype(np.float32)
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=1, heads=2, stem=8, n_outputs=1)
    tcfg = TrainConfig(epochs=2, warmup=1, pretrain_epochs=1, progress=False)
    ck = tmp_path / "checkpoints" / "vit"
    a, ha = fit_vit(x, y, train_index=np.arange(30), val_index=np.arange(30, 40), vit=cfg, train=tcfg,
                    pretrain_image=img, checkpoint_dir=ck)
    assert (ck / "pretrained.pt").is_file() and len(ha["pretrain"]["mim_loss"]) == 1
    (ck / "final.pt").unlink()  # as if killed after pretraining; last.ckpt resumes the supervised fit
    (ck / "last.ckpt").unlink()
    b, hb = fit_vit(x, y, train_index=np.arange(30), val_index=np.arange(30, 40), vit=cfg, train=tcfg,
                    pretrain_image=img, checkpoint_dir=ck)
    assert hb["pretrain"] == ha["pretrain"]
    xt = torch.as_tensor(x[:4])
    torch.testing.assert_close(a(xt), b(xt))
