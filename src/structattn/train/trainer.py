"""Training the ViT regressor with PyTorch Lightning, and the saved-model bundle.

Inputs are standardised per channel (statistics of the whole structure image: no target
information, so no leak) and targets per column (statistics of the training points only).
Early stopping and the choice of the best epoch watch one validation criterion (`TrainConfig.
criterion`): by default the MSE over all standardised targets; ``log_mse`` averages each target's
log MSE instead, so every target's relative progress counts alike; ``capped_mse`` caps each target's
MSE at the training mean's, so a target the model cannot learn does not decide when the others stop.
The best epoch's weights are restored.
"""

from __future__ import annotations

import io
import math
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from ..nets.vit import ViTConfig, ViTRegressor


@dataclass
class TrainConfig:
    """Optimisation options (saved with every run)."""

    epochs: int = 80  # upper bound; early stopping usually ends sooner
    batch_size: int = 32  # small data: small batches give more updates per epoch (round 20: 32 beat 64)
    lr: float = 3e-3  # AdamW peak learning rate (linear warm-up, then cosine decay to 5% over `epochs`)
    warmup: int = 5  # epochs of linear learning-rate warm-up (transformers diverge early without it)
    pretrain_epochs: int = 0  # masked-token pretraining epochs on the whole image (0 = none); see docs/training.md
    weight_decay: float = 0.3  # AdamW decoupled weight decay (0.3 beat 0.05 on the real-texture sweep)
    patience: int = 15  # epochs without validation improvement before stopping
    criterion: str = "mse"  # what early stopping and the best epoch watch: see CRITERIA
    stopping: str = "criterion"  # "criterion": stop after `patience` epochs without improving the criterion;
    # "targets": only once no target's own validation MSE has improved for `patience` epochs (a target the model
    # cannot learn then does not end training for the others; the best epoch is still the criterion's). See
    # STOPPINGS and docs/training.md, round 23
    target_patience: int = 0  # > 0: leave a target's term out of the loss while its own validation MSE has
    # not improved for this many epochs (a target that cannot be learned stops being over-fitted; it
    # comes back if the shared layers improve it); 0 = off
    augment: str = "none"  # "none", "flips" or "dihedral" (flips + 90-degree turns); see docs/training.md
    ema: float = 0.0  # > 0: validate, pick the best epoch and keep an exponential moving average of the
    # weights, updated after every step with this decay (0.99: about the last 100 steps); 0 = off
    sam: float = 0.0  # > 0: sharpness-aware minimisation (Foret et al. 2021) with this radius rho around AdamW
    # (each step's gradient is taken at the weights moved by rho along the normalised gradient: two
    # forward/backward passes per step); 0 = off; docs/training.md, round 15
    seed: int = 0  # seeds weights, batches and augmentation
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    progress: bool = True  # show Lightning's progress bar
    devices: int = 1  # processes (CPU) or GPUs per node; > 1 trains with Lightning's DDP (docs/scale.md)
    num_nodes: int = 1  # machines, each running `devices` processes (started by torchrun / srun)
    strategy: str = "auto"  # "auto", "ddp" or "ddp_spawn" (see structattn.scale.parallel)
    precision: str = "32"  # "32" or "bf16-mixed" (autocast; for GPUs)


AUGMENTATIONS = ("none", "flips", "dihedral")

# The validation criterion. "mse": the MSE over all standardised targets; a target that cannot be
# learned (its MSE stays near 1 and rises as it over-fits) then decides when every target stops.
# "log_mse": the mean over targets of log(MSE_k); a fall from 0.04 to 0.02 on a learned target
# weighs as much as one from 0.8 to 0.4 (sweep round 6, docs/training.md).
# "capped_mse": the mean over targets of min(MSE_k, MSE0_k), MSE0_k being the validation MSE of the
# training points' mean (the mean over validation points of (y_k − training mean_k)²); a target the
# model predicts worse than the training mean does not vote on when the others stop (round 19,
# docs/training.md).
CRITERIA = ("capped_mse", "log_mse", "mse")
# When training ends (the best epoch is chosen by the criterion either way): "criterion", after `patience`
# epochs without improving it (Lightning's EarlyStopping); "targets", once every target's own validation MSE
# has gone `patience` epochs without improving (`_TargetsStop`; round 23 of docs/training.md).
STOPPINGS = ("criterion", "targets")


def check_stopping(value) -> str:
    if value not in STOPPINGS:
        raise ValueError(f"stopping: expected one of {STOPPINGS}, got {value!r}")
    return value


def epochs_since_best(best: list[float] | None, since: list[int] | None,
                      mse: list[float]) -> tuple[list[float], list[int]]:
    """One epoch's per-target bookkeeping: each target's lowest validation MSE so far and the epochs since it
    strictly improved (None, None before the first epoch). Shared by `--target-patience` and `--stopping targets`."""
    if best is None or since is None:
        best, since = [math.inf] * len(mse), [0] * len(mse)
    best, since = list(best), list(since)
    for k, v in enumerate(mse):
        if v < best[k]:
            best[k], since[k] = v, 0
        else:
            since[k] += 1
    return best, since


def check_criterion(value) -> str:
    if value not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {value!r}")
    return value


def validation_score(mse: torch.Tensor, criterion: str, mse0: torch.Tensor | None = None) -> torch.Tensor:
    """The criterion from per-target validation MSEs (K,); `mse0` (K,), the training mean's
    validation MSEs, is needed by ``capped_mse`` only."""
    if criterion == "mse":
        return mse.mean()
    if criterion == "capped_mse":
        if mse0 is None:
            raise ValueError("capped_mse: the training mean's validation MSEs (mse0) are needed")
        return torch.minimum(mse, mse0.to(mse)).mean()
    return torch.log(mse.clamp_min(1e-12)).mean()


def check_target_patience(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"target_patience: expected a number of epochs >= 0 (0 = off), got {value!r}")
    return int(value)


def check_sam(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"sam: expected a finite radius rho >= 0 (0 = off, e.g. 0.05), got {value!r}")
    return float(value)


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around a base optimiser (Foret et al. 2021, their Algorithm 1).

    ``step(closure)``: the closure (Lightning's: zero_grad, training step, backward) gives the
    gradient g at w; the weights move to w + rho g / ||g|| (one norm over all parameters), the closure
    runs again there, the weights return to w, and the base optimiser steps with that second
    gradient. The base owns the parameter groups (so the learning-rate schedule reaches it) and the
    state (so a checkpoint holds AdamW's moments and resumes exactly).
    """

    def __init__(self, params, base: type[torch.optim.Optimizer], *, rho: float, **kwargs) -> None:
        if rho <= 0:
            raise ValueError(f"rho: expected > 0, got {rho!r}")
        self.base = base(params, **kwargs)
        super().__init__(self.base.param_groups, {"rho": rho, **self.base.defaults})
        self.param_groups = self.base.param_groups
        for g in self.param_groups:
            g.setdefault("rho", rho)
        self.first_pass = True  # RegressionModule logs the loss of the first pass only

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise ValueError("SAM.step: needs a closure that recomputes the loss and its gradients")
        with torch.enable_grad():
            loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        moved = []
        for g in self.param_groups:
            scale = g["rho"] / (norm + 1e-12)
            for p in g["params"]:
                if p.grad is not None:
                    e = p.grad * scale
                    p.add_(e)
                    moved.append((p, e))
        self.first_pass = False
        try:
            with torch.enable_grad():
                closure()
        finally:
            for p, e in moved:
                p.sub_(e)
            self.first_pass = True
        self.base.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict)
        self.param_groups = self.base.param_groups


def check_ema(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"ema: expected a decay in [0, 1) (0 = off, e.g. 0.99), got {value!r}")
    return float(value)


class _EMAUpdate:
    """`AveragedModel` update: ema <- decay * ema + (1 - decay) * current, for every parameter and
    buffer at once. A module-level class, not torch's `get_ema_multi_avg_fn` closure, so the
    module still pickles for ddp_spawn."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema: list[torch.Tensor], current: list[torch.Tensor], _n) -> None:
        floats = [(e, c) for e, c in zip(ema, current) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1.0 - self.decay)
        for e, c in zip(ema, current):
            if not e.is_floating_point():
                e.copy_(c)


def check_augment(value) -> str:
    """Validate an augmentation choice; old run configs stored a bool (True meant dihedral)."""
    if isinstance(value, bool):
        return "dihedral" if value else "none"
    if value not in AUGMENTATIONS:
        raise ValueError(f"augment: expected one of {AUGMENTATIONS}, got {value!r}")
    return value


def _augment(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Random symmetry per sample of x (B, C, w, w): "flips" (4 elements) or "dihedral" (8)."""
    if mode == "none":
        return x
    if mode == "flips":  # horizontal and/or vertical mirror; keeps wall orientation classes
        fh = torch.randint(0, 2, (len(x),), generator=gen).bool().to(x.device)
        fv = torch.randint(0, 2, (len(x),), generator=gen).bool().to(x.device)
        x = torch.where(fh[:, None, None, None], torch.flip(x, dims=(3,)), x)
        return torch.where(fv[:, None, None, None], torch.flip(x, dims=(2,)), x)
    return _dihedral(x, gen)


def _dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Apply one random element of the square's symmetry group per sample. x: (B, C, w, w)."""
    k = torch.randint(0, 4, (len(x),), generator=gen).to(x.device)
    flip = torch.randint(0, 2, (len(x),), generator=gen).bool().to(x.device)
    out = torch.empty_like(x)
    for kk in range(4):
        for ff in (False, True):
            sel = (k == kk) & (flip == ff)
            if sel.any():
                v = torch.rot90(x[sel], kk, dims=(2, 3))
                out[sel] = torch.flip(v, dims=(3,)) if ff else v
    return out


class RegressionModule(L.LightningModule):
    """MSE regression of standardised targets with any (B, C, w, w) -> (B, K) module."""

    def __init__(self, model: torch.nn.Module, train: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.tcfg = train
        self._gen = torch.Generator().manual_seed(train.seed)
        self.loader_gen: torch.Generator | None = None  # the training DataLoader's shuffling generator
        self.history: list[dict] = []
        self.val_mse: list[float] = []  # per-target validation MSE of the last validation epoch
        # (K,) the validation MSE of the training points' mean (`capped_mse`): a constant of the data,
        # set once by fit_model
        self.val_mse0: torch.Tensor | None = None
        # per-target loss freezing (TrainConfig.target_patience): best validation MSE so far and epochs
        # since it improved; a term is frozen (out of the loss) while that count reaches the patience
        self.target_best: list[float] | None = None
        self.target_since: list[int] | None = None
        # TrainConfig.ema: a moving average of the weights (torch's AveragedModel), which validation,
        # the best epoch and the weights kept then use; the optimiser still steps `model`
        self.ema: AveragedModel | None = None  # fit_model checks the decay before building this module
        if train.ema > 0:
            self.ema = AveragedModel(model, multi_avg_fn=_EMAUpdate(train.ema), use_buffers=True)
            self.ema.requires_grad_(False)

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validation scores and `_KeepBest` keeps: the moving average, or the model."""
        return self.model if self.ema is None else self.ema.module

    # Resuming must continue exactly where the killed run was: Lightning restores weights,
    # optimiser, schedule and callbacks; the random streams (batch order, augmentation,
    # dropout) and the loss history are ours to save.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["structattn"] = {
            "history": list(self.history),
            "augment_rng": self._gen.get_state(),
            "loader_rng": None if self.loader_gen is None else self.loader_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "targets": {"best": self.target_best, "since": self.target_since},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        st = checkpoint.get("structattn", {})
        self.history = list(st.get("history", []))
        if "augment_rng" in st:
            self._gen.set_state(st["augment_rng"])
        if st.get("loader_rng") is not None and self.loader_gen is not None:
            self.loader_gen.set_state(st["loader_rng"])
        if "torch_rng" in st:
            torch.set_rng_state(st["torch_rng"])
        t = st.get("targets", {})
        self.target_best, self.target_since = t.get("best"), t.get("since")

    # ddp_spawn pickles the module to its workers; a torch.Generator would travel as a
    # shared-memory tensor, which the spawn launcher rejects ("bad value(s) in fds_to_keep")
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_gen"] = self._gen.get_state().numpy().copy()
        state["loader_gen"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        gen = torch.Generator()
        gen.set_state(torch.from_numpy(state["_gen"]))
        self.__dict__.update({**state, "_gen": gen})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_n = 0.0, 0

    def training_step(self, batch, _):
        x, *held, y = batch  # held: the wavelet features of x (`_held_wavelet_features`), only unaugmented
        x = _augment(x, self.tcfg.augment, self._gen)
        per_target = ((_predict(self.model, x, held) - y) ** 2).mean(0)
        frozen = self.frozen
        if any(frozen):
            keep = torch.tensor([not f for f in frozen], dtype=per_target.dtype, device=per_target.device)
            per_target = per_target * keep  # frozen terms contribute nothing (and no gradient)
        loss = per_target.mean()
        opt = self.optimizers(use_pl_optimizer=False) if self._trainer is not None else None
        if isinstance(opt, SAM) and not opt.first_pass:  # SAM's second pass, at the moved weights: not logged
            return loss
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=len(x), sync_dist=True)
        self._loss_sum += float(loss.detach()) * len(x)
        self._loss_n += len(x)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def on_validation_epoch_start(self) -> None:
        self._val_sse: torch.Tensor | None = None
        self._val_n = 0

    def validation_step(self, batch, _):
        x, *held, y = batch
        sse = ((_predict(self.evaluated, x, held) - y) ** 2).detach().double().sum(0)  # per target; MSEs at the end
        self._val_sse = sse if self._val_sse is None else self._val_sse + sse
        self._val_n += len(x)

    def on_validation_epoch_end(self) -> None:
        if self._val_sse is None:
            return
        sse, n = self._val_sse, torch.tensor(float(self._val_n), dtype=torch.float64, device=self._val_sse.device)
        if self.trainer.world_size > 1:  # per-target sums over the ranks, then the criterion
            sse = self.trainer.strategy.reduce(sse, reduce_op="sum")
            n = self.trainer.strategy.reduce(n, reduce_op="sum")
        mse = sse / n
        self.val_mse = [float(v) for v in mse]
        if self.tcfg.target_patience > 0 and not self.trainer.sanity_checking:
            self._update_frozen()
        # both from the reduced sums, so equal on every rank (early stopping, best epoch)
        self.log("val_loss", mse.mean().float(), prog_bar=True, sync_dist=False)
        self.log("val_score", validation_score(mse, self.tcfg.criterion, self.val_mse0).float(), sync_dist=False)

    @property
    def frozen(self) -> list[bool]:
        """Which targets' terms are out of the loss now (TrainConfig.target_patience)."""
        if self.target_since is None or self.tcfg.target_patience <= 0:
            return []
        return [s >= self.tcfg.target_patience for s in self.target_since]

    def _update_frozen(self) -> None:
        """Per-target patience on the (rank-reduced, so identical on every rank) validation MSEs."""
        self.target_best, self.target_since = epochs_since_best(self.target_best, self.target_since, self.val_mse)
        frozen = self.frozen
        if frozen and all(frozen):  # nothing left to train on
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        # this epoch's mean training loss and its validation loss (validation ran before this hook)
        val = self.trainer.callback_metrics.get("val_loss")
        score = self.trainer.callback_metrics.get("val_score")
        if val is not None and self._loss_n:
            self.history.append({"epoch": int(self.current_epoch), "train_loss": self._loss_sum / self._loss_n,
                                 "val_loss": float(val), "val_score": float(score), "val_mse": list(self.val_mse),
                                 **({"val_mse0": self.val_mse0.tolist()} if self.val_mse0 is not None else {}),
                                 **({"frozen": self.frozen} if self.tcfg.target_patience > 0 else {})})

    def configure_optimizers(self):
        if self.tcfg.sam > 0:
            opt = SAM(self.model.parameters(), torch.optim.AdamW, rho=self.tcfg.sam, lr=self.tcfg.lr,
                      weight_decay=self.tcfg.weight_decay)
        else:
            opt = torch.optim.AdamW(self.model.parameters(), lr=self.tcfg.lr, weight_decay=self.tcfg.weight_decay)
        e, w = self.tcfg.epochs, min(self.tcfg.warmup, self.tcfg.epochs - 1)

        def factor(epoch: int) -> float:  # per-epoch multiplier of the peak lr
            if epoch < w:
                return (epoch + 1) / (w + 1)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (epoch - w) / max(e - w, 1)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": sched}


class _KeepBest(Callback):
    """Keep the state dict of the epoch with the lowest validation criterion (in memory)."""

    def __init__(self) -> None:
        self.best = float("inf")
        self.state: dict | None = None
        self.epoch = -1

    def on_validation_end(self, trainer, pl_module) -> None:  # after the module logged val_score
        if trainer.sanity_checking:
            return
        val = float(trainer.callback_metrics.get("val_score", float("inf")))
        if val < self.best:
            self.best, self.epoch = val, int(trainer.current_epoch)
            self.state = {k: v.detach().clone() for k, v in pl_module.evaluated.state_dict().items()}

    def on_train_end(self, trainer, pl_module) -> None:
        # the best weights into the module itself: under ddp_spawn only the module's weights
        # come back to the calling process, not this callback's state
        if self.state is not None:
            pl_module.model.load_state_dict(self.state)
        if trainer.world_size > 1 and trainer.is_global_zero and self.report is not None:
            torch.save({"history": pl_module.history, "best": self.best, "epoch": self.epoch}, self.report)

    report: Path | None = None  # where rank 0 leaves history and best epoch for the caller (DDP)

    def state_dict(self) -> dict:  # saved in checkpoints, so a resumed run keeps the best epoch
        return {"best": self.best, "epoch": self.epoch, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.epoch, self.state = state["best"], state["epoch"], state["state"]


class _TargetsStop(Callback):
    """End training once no target's own validation MSE has improved (strictly) for `patience` epochs
    (`TrainConfig.stopping="targets"`): the stand-in for EarlyStopping, with its state in checkpoints."""

    def __init__(self, patience: int) -> None:
        self.patience = int(patience)
        self.best: list[float] | None = None
        self.since: list[int] | None = None

    def on_validation_end(self, trainer, pl_module) -> None:  # after the module set val_mse
        if trainer.sanity_checking or not pl_module.val_mse:
            return
        self.best, self.since = epochs_since_best(self.best, self.since, pl_module.val_mse)
        if all(s >= self.patience for s in self.since):
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"best": self.best, "since": self.since}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.since = state["best"], state["since"]


class _EpochCheckpoint(Checkpoint):  # a Checkpoint: Lightning calls it after the module's epoch-end hook
    """Write a full Lightning checkpoint at the end of every epoch, after its validation and
    early-stopping check (ModelCheckpoint with ``save_top_k=0`` writes ``last.ckpt`` only when
    training ends), atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        tmp = self.path.with_suffix(".ckpt.tmp")
        trainer.save_checkpoint(tmp)  # every rank calls it, rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


def _predict(model: torch.nn.Module, x: torch.Tensor, held: list) -> torch.Tensor:
    """model(x), given x's wavelet features when the batch holds them (`_held_wavelet_features`)."""
    return model(x, wavelet_features=held[0]) if held else model(x)


class _WithFeatures(torch.utils.data.Dataset):
    """Items ``(x, f[j], y)`` of a dataset of ``(x, y)`` items and per-item features ``f``."""

    def __init__(self, base, features: torch.Tensor) -> None:
        self.base, self.features = base, features

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, j: int):
        x, y = self.base[j]
        return x, self.features[j], y


HELD_FEATURE_BYTES = 512 * 2**20


def _held_wavelet_features(model: torch.nn.Module, x, index: np.ndarray, dataset):
    """`dataset` with each item's ``model.wavelet`` features alongside (`_WithFeatures`), for a
    `ViTRegressor` with `ViTConfig.wavelets` when they fit in `HELD_FEATURE_BYTES`; else `dataset`."""
    if not isinstance(model, ViTRegressor) or not model.cfg.wavelets or not len(index):
        return dataset
    from .baselines import _block

    cfg = model.cfg
    size = model.wavelet.out_channels * (cfg.window // cfg.patch) ** 2
    if len(index) * size * 4 > HELD_FEATURE_BYTES:
        return dataset
    wav = model.wavelet.cpu()
    with torch.no_grad():
        f = torch.cat([wav(torch.as_tensor(np.asarray(_block(x, index[i:i + 256]), np.float32)))
                       for i in range(0, len(index), 256)])
    return _WithFeatures(dataset, f)


def fit_vit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    train_index: np.ndarray,
    val_index: np.ndarray,
    vit: ViTConfig,
    train: TrainConfig,
    pretrain_image: np.ndarray | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[ViTRegressor, dict]:
    """Train a `ViTRegressor` on standardised patches x (N, C, w, w) and targets y (N, K).

    With ``train.pretrain_epochs > 0`` and a standardised (C, H, W) ``pretrain_image``, the
    encoder is first pretrained by masked-token reconstruction on the whole image
    (`structattn.train.pretrain`). With `checkpoint_dir`, training can be resumed after a
    kill (see `fit_model`); the pretrained weights are kept there too. A `vit` with ``linear_base``
    first gets its base by `fit_linear_base` (round 10 of docs/training.md, reproduced by
    `bench/sweep_vit.py --config spatial_linbase`; not what `structattn run --prefer-ridge` does).

    Returns:
        The model with the best validation epoch's weights (in eval mode) and a history
        dict (per-epoch losses, best epoch, stopped epoch).
    """
    L.seed_everything(train.seed, workers=True, verbose=False)  # same weights for the same seed
    model = ViTRegressor(vit)
    pre = None
    if pretrain_image is not None and train.pretrain_epochs > 0:
        from .pretrain import pretrain_masked

        saved = None if checkpoint_dir is None else Path(checkpoint_dir) / "pretrained.pt"
        if saved is not None and saved.is_file():
            payload = _load_checkpoint_file(saved)
            model.load_state_dict(payload["state_dict"])
            pre = payload["history"]
        else:
            pre = pretrain_masked(model, pretrain_image, epochs=train.pretrain_epochs, seed=train.seed,
                                  device=train.device, progress=train.progress)
            if saved is not None:
                _save_checkpoint_file(saved, {"state_dict": model.state_dict(), "history": pre})
    base = None
    if vit.linear_base:
        base = fit_linear_base(model, x, y, train_index=train_index, val_index=val_index)
    model, history = fit_model(model, x, y, train_index=train_index, val_index=val_index, train=train,
                               checkpoint_dir=checkpoint_dir)
    if pre is not None:
        history["pretrain"] = pre
    if base is not None:
        history["linear_base"] = base
    return model, history


LINEAR_BASE_MIN_R2 = 0.5  # a target keeps its ridge base when ridge explains this much of its validation variance


class WaveletRidgeRows:
    """Ridge features of patches `x` ((N, C, w, w) or a `PatchSource`), cut a batch at a time: each patch's
    pixels followed by its token cells' wavelet-modulus means (`WaveletModulus` at `orientations`,
    the cell means left out), in the order `ViTRegressor.set_linear_base` reads them (round 16c)."""

    CACHE_BYTES = HELD_FEATURE_BYTES  # each point's moduli are kept once computed, when all of them fit in this

    def __init__(self, x, *, patch: int, orientations: int) -> None:
        from ..nets.wavelet import WaveletModulus
        from .baselines import _block

        self.x = x
        c, w = _block(x, np.arange(1)).shape[1:3]
        self.channels = int(c)
        self.wavelet = WaveletModulus(self.channels, patch=patch, orientations=orientations)
        n_mod = (self.wavelet.out_channels - self.channels) * (w // patch) ** 2
        # ridge reads the training rows on several passes (moments, fit): compute each point's moduli once
        fits = len(x) * n_mod * 4 <= self.CACHE_BYTES
        self._moduli = np.empty((len(x), n_mod), np.float32) if fits else None
        self._done = np.zeros(len(x), bool) if fits else None

    def __len__(self) -> int:
        return len(self.x)

    def _compute(self, p: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.wavelet(torch.as_tensor(p))[:, self.channels:].reshape(len(p), -1).numpy()

    def take(self, index: np.ndarray) -> np.ndarray:
        from .baselines import _block

        index = np.asarray(index, np.int64)
        p = np.asarray(_block(self.x, index), np.float32)
        if self._moduli is None:
            m = self._compute(p)
        else:
            new = ~self._done[index]
            if new.any():
                rows = np.flatnonzero(new)
                self._moduli[index[rows]] = self._compute(p[rows])
                self._done[index[rows]] = True
            m = self._moduli[index]
        return np.concatenate([p.reshape(len(p), -1), m], axis=1)


def pixel_ridge(x, y: np.ndarray, *, train_index: np.ndarray, val_index: np.ndarray, wavelets: int = 0,
                patch: int | None = None) -> dict:
    """Ridge on the model's standardised patch pixels `x` ((N, C, w, w) or a `PatchSource`) against
    targets `y` (N, K), the penalty chosen per target on the validation points: the `ridge`
    baseline's procedure (`structattn.train.baselines.ridge_coefficients`), written as a linear
    map of the model's input, so `ViTRegressor.set_linear_base` can hold it. With `wavelets` > 0 the
    features also hold each token cell's wavelet-modulus means (`WaveletRidgeRows`; `patch` = token side).

    Returns:
        {"weight": (K, C, w, w), "bias": (K,), "val_pred": (len(val_index), K),
         "val_r2": (K,) (-inf for a constant target), "alpha": (K,)}, and with `wavelets`
        "wavelet_weight": (K, C J L, g, g) and "wavelets"
    """
    from .baselines import _block, ridge_fit_select  # baselines imports this module

    y = np.asarray(y, np.float64)
    shape = _block(x, np.arange(1)).shape[1:]  # (C, w, w)
    if wavelets:
        if not patch or shape[-1] % patch:
            raise ValueError(f"patch: expected the token side (a divisor of the window {shape[-1]}), got {patch!r}")
        rows = WaveletRidgeRows(x, patch=patch, orientations=wavelets)
    else:
        rows = x
    fit = ridge_fit_select(rows, y, train=train_index, val=val_index)
    yv = y[val_index]
    var = yv.var(0)
    r2 = np.where(var > 0, 1.0 - fit["val_mse"] / np.where(var > 0, var, 1.0), -np.inf)
    coef = fit["chosen"].T / fit["sd"]  # (K, p) on the rows
    k, n_pix = y.shape[1], int(np.prod(shape))
    out = {"weight": coef[:, :n_pix].reshape(k, *shape), "bias": fit["ym"] - coef @ fit["mu"],
           "val_pred": fit["val_pred"], "val_r2": r2, "alpha": fit["alpha"]}
    if wavelets:
        g = shape[-1] // patch
        out["wavelet_weight"] = coef[:, n_pix:].reshape(k, -1, g, g)
        out["wavelets"] = int(wavelets)
    return out


def fit_linear_base(model: ViTRegressor, x, y: np.ndarray, *, train_index: np.ndarray, val_index: np.ndarray,
                    min_val_r2: float = LINEAR_BASE_MIN_R2) -> dict:
    """Fit and fix a model's linear base before training (`ViTConfig.linear_base`; docs/training.md
    round 10, not adopted): `pixel_ridge`, kept for a target only where its validation R² is at
    least `min_val_r2` (the others get a zero base). The model then learns what the base leaves.

    Returns:
        {"used": [bool] * K, "ridge_val_r2": [float] * K, "alpha": [float] * K, "min_val_r2": float}
    """
    r = pixel_ridge(x, y, train_index=train_index, val_index=val_index)
    used = r["val_r2"] >= min_val_r2
    w = np.where(used[:, None, None, None], r["weight"], 0.0)
    model.set_linear_base(w, np.where(used, r["bias"], 0.0))
    return {"used": [bool(u) for u in used], "ridge_val_r2": [float(v) for v in r["val_r2"]],
            "alpha": [float(a) for a in r["alpha"]], "min_val_r2": float(min_val_r2)}


def fit_model(
    model: torch.nn.Module,
    x,
    y: np.ndarray,
    *,
    train_index: np.ndarray,
    val_index: np.ndarray,
    train: TrainConfig,
    checkpoint_dir: Path | None = None,
    hold_features: bool = True,
) -> tuple[torch.nn.Module, dict]:
    """Train any regressor (the ViT, the CNN baseline) with the same loop; see `fit_vit`.

    A ViT with wavelet-modulus token features (`ViTConfig.wavelets`) trained without augmentation
    gets them computed once per point (`hold_features`, up to `HELD_FEATURE_BYTES`) rather than in
    every step: the transform has no trained parameters, and it was about a fifth of a step's time.

    `x` is an (N, C, w, w) array of standardised patches or a `structattn.scale.PatchSource`
    (patches cut on the fly, memory bounded by the batch). ``train.devices`` /
    ``num_nodes`` / ``strategy`` / ``precision`` go to Lightning (DDP over several
    processes, GPUs or nodes; see docs/scale.md).

    With `checkpoint_dir`, a Lightning checkpoint (``last.ckpt``: weights, optimiser,
    schedule, early stopping, best epoch, random streams) is written after every epoch and
    the finished model as ``final.pt``; calling again with the same folder continues from
    there, to the same result as an uninterrupted run with the same seed.
    """
    check_augment(train.augment)
    check_ema(train.ema)
    check_sam(train.sam)
    ck_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if ck_dir is not None and (ck_dir / "final.pt").is_file():  # finished before the interruption
        payload = _load_checkpoint_file(ck_dir / "final.pt")
        model.load_state_dict(payload["state_dict"])
        return model.cpu().eval(), payload["history"]
    for name in ("lightning.pytorch", "lightning.fabric"):  # no banner/tips; our caller reports progress
        logging.getLogger(name).setLevel(logging.WARNING)
    from ..scale.parallel import check_parallel, trainer_kwargs
    from ..scale.patches import PatchDataset, PatchSource

    accel = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}.get(train.device)
    if accel is None:
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'auto', got {train.device!r}")
    par = check_parallel(accelerator=accel, devices=train.devices, num_nodes=train.num_nodes,
                         strategy=train.strategy, precision=train.precision)
    L.seed_everything(train.seed, workers=True, verbose=False)
    gen = torch.Generator().manual_seed(train.seed)
    if isinstance(x, PatchSource):  # patches cut per batch: memory bounded by the batch, not N
        ya = np.asarray(y, np.float32)
        tr_set, va_set = PatchDataset(x, train_index, ya[train_index]), PatchDataset(x, val_index, ya[val_index])
    else:
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        tr_set, va_set = TensorDataset(xt[train_index], yt[train_index]), TensorDataset(xt[val_index], yt[val_index])
    if hold_features and train.augment == "none":
        tr_set, va_set = (_held_wavelet_features(model, x, i, d) for i, d in ((train_index, tr_set), (val_index, va_set)))
    # several processes: Lightning shuffles with a DistributedSampler seeded by seed_everything
    tr = DataLoader(tr_set, batch_size=train.batch_size, shuffle=True, generator=gen if par.world_size == 1 else None)
    va = DataLoader(va_set, batch_size=256)
    module = RegressionModule(model, train)
    y64 = np.asarray(y, np.float64)
    module.val_mse0 = torch.as_tensor(((y64[val_index] - y64[train_index].mean(0)) ** 2).mean(0))
    module.loader_gen = gen if par.world_size == 1 else None
    keep = _KeepBest()
    check_criterion(train.criterion)
    check_target_patience(train.target_patience)
    check_stopping(train.stopping)
    stop = (EarlyStopping(monitor="val_score", patience=train.patience, mode="min") if train.stopping == "criterion"
            else _TargetsStop(train.patience))
    callbacks: list[Callback] = [keep, stop]
    resume_from = None
    if ck_dir is not None:
        ck_dir.mkdir(parents=True, exist_ok=True)
        callbacks.append(_EpochCheckpoint(ck_dir / "last.ckpt"))  # after early stopping has updated
        if (ck_dir / "last.ckpt").is_file():
            resume_from = str(ck_dir / "last.ckpt")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        keep.report = Path(tmp) / "keep_best.pt"
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        trainer = L.Trainer(
            max_epochs=train.epochs,
            **trainer_kwargs(par),
            deterministic=True,
            logger=False,
            enable_checkpointing=ck_dir is not None,
            enable_model_summary=False,
            enable_progress_bar=train.progress,
            callbacks=callbacks,
            default_root_dir=tmp,
            num_sanity_val_steps=0,
        )
        try:
            trainer.fit(module, tr, va, ckpt_path=resume_from)
        except (RuntimeError, KeyError, EOFError, OSError) as exc:
            if resume_from is None:
                raise
            raise ValueError(f"--resume: cannot continue from {resume_from} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); run again without --resume") from None
        if par.world_size > 1 and keep.report.is_file():  # ddp_spawn: history and best epoch from rank 0
            rep = torch.load(keep.report, map_location="cpu", weights_only=False)
            module.history, keep.best, keep.epoch = rep["history"], rep["best"], rep["epoch"]
            keep.state = None  # the module already holds the best weights (on_train_end)
    model = module.model.cpu()
    if keep.state is not None:
        model.load_state_dict(keep.state)
    model.eval()
    history = {
        "epochs": module.history,
        "best_epoch": keep.epoch,
        "criterion": train.criterion,
        "stopping": train.stopping,
        "best_val_score": keep.best,
        "best_val_loss": next((e["val_loss"] for e in module.history if e["epoch"] == keep.epoch), float("nan")),
        "stopped_epoch": int(trainer.current_epoch),
    }
    if train.target_patience > 0:
        history["target_patience"] = train.target_patience
        history["frozen_from"] = frozen_from(module.history)
    if ck_dir is not None:
        _save_checkpoint_file(ck_dir / "final.pt", {"state_dict": model.state_dict(), "history": history})
    return model, history


def frozen_from(epochs: list[dict]) -> list[int | None]:
    """Per target, the epoch at whose end its loss term was left out for the rest of training (None:
    trained to the end), from the per-epoch history of a fit with `target_patience`."""
    rows = [(e["epoch"], e["frozen"]) for e in epochs if e.get("frozen")]
    if not rows:
        return []
    out: list[int | None] = []
    for j in range(len(rows[-1][1])):
        start = None
        for epoch, frozen in reversed(rows):  # back from the end while the term stays out
            if not frozen[j]:
                break
            start = epoch
        out.append(start)
    return out


def describe_training(history: dict, names: list[str]) -> list[str]:
    """Plain sentences about a fit history (`fit_vit`/`fit_model`): epochs, best epoch and what
    chose it, and the targets left out of the loss (`target_patience`). For the run log and report."""
    epochs = history.get("epochs") or []
    if not epochs:
        return []
    crit = history.get("criterion", "mse")
    crit_text = {"mse": "the validation MSE over all targets",
                 "log_mse": "the mean over targets of each target's log validation MSE",
                 "capped_mse": "mean over targets of the validation MSE, each capped at the training mean's"}.get(crit, crit)
    took = f" in {history['seconds']:.0f} s" if isinstance(history.get("seconds"), (int, float)) else ""
    out = [f"{len(epochs)} epochs trained{took}; the weights kept are epoch {history.get('best_epoch')}'s, the "
           f"lowest {crit_text} ({crit})."]
    if history.get("stopping") == "targets":
        out.append("Training ran until no target's own validation MSE had improved for the patience "
                   "(--stopping targets).")
    base = history.get("linear_base")
    if base:
        kept = [f"{n} ({r:.2f})" for n, u, r in zip(names, base["used"], base["ridge_val_r2"]) if u]
        out.append(f"Linear base (round 10: ridge on the pixels fitted before training, kept where its validation R² >= {base['min_val_r2']:g}): "
                   + (", ".join(kept) if kept else "no target") + "; the ViT learned what it leaves.")
    left = [f"{n} (after epoch {e})" for n, e in zip(names, history.get("frozen_from") or []) if e is not None]
    if left:
        p = history.get("target_patience")
        out.append(f"Left out of the loss to the end, their validation MSE not having improved for {p} "
                   f"epoch{'s' if p != 1 else ''} (--target-patience): {', '.join(left)}.")
    return out


def _save_checkpoint_file(path: Path, payload: dict) -> None:
    """torch.save to `path` atomically (temp file, then rename)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)  # pretraining writes before fit_model makes the folder
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)  # a kill never leaves half a file under the real name


def _load_checkpoint_file(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, KeyError) as exc:
        raise ValueError(f"--resume: cannot read {path} ({type(exc).__name__}); run again without --resume") from None


def standardise_patches(patches: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(N, C, w, w) raw patches -> float32, standardised per channel with (C,) `mean` and `std`."""
    return ((np.asarray(patches, np.float32) - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


@torch.no_grad()
def predict_batched(model: torch.nn.Module, take, n: int, *, batch_size: int = 512) -> np.ndarray:
    """(n, K) float32 outputs of `model` (eval mode, on its own device) for inputs ``take(a, b)``
    (the items a..b-1, an array or tensor), `batch_size` at a time; freed batch memory goes back
    to the OS every few batches (`structattn.scale.memory`), so resident memory stays flat."""
    from ..scale.memory import every

    model.eval()
    device = next(model.parameters()).device  # CPU, or where Lightning put it
    out = []
    for k, a in enumerate(range(0, n, batch_size)):
        xb = torch.as_tensor(take(a, min(n, a + batch_size)), dtype=torch.float32).to(device)
        out.append(model(xb).float().cpu())
        every(k)
    return torch.cat(out).numpy() if out else np.empty((0, model.cfg.n_outputs), np.float32)


@dataclass
class TrainedModel:
    """A trained ViT with everything needed to apply it to raw patches."""

    model: ViTRegressor
    target_names: tuple[str, ...]
    channel_mean: np.ndarray  # (C,)
    channel_std: np.ndarray  # (C,)
    target_mean: np.ndarray  # (K,)
    target_std: np.ndarray  # (K,)
    pad_mode: str = "reflect"
    extra: dict = field(default_factory=dict)

    @property
    def window(self) -> int:
        return self.model.cfg.window

    def standardise(self, patches: np.ndarray) -> torch.Tensor:
        """Raw (N, C, w, w) patches -> model input tensor."""
        return torch.as_tensor(standardise_patches(patches, self.channel_mean, self.channel_std))

    def predict(self, patches: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
        """Raw (N, C, w, w) patches -> (N, K) predictions in target units."""
        x = self.standardise(patches)
        out = predict_batched(self.model, lambda a, b: x[a:b], len(x), batch_size=batch_size)
        return out * self.target_std + self.target_mean

    def predict_points(self, source, index: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
        """(len(index), K) predictions in target units for points `index` of a `PatchSource`.

        The source must standardise with this model's channel statistics; patches are cut
        `batch_size` at a time, so memory is bounded by the batch, not by len(index).
        """
        if not (np.allclose(source.mean, self.channel_mean) and np.allclose(source.std, self.channel_std)):
            raise ValueError("source: its channel standardisation differs from the model's")
        index = np.asarray(index, np.int64)
        out = predict_batched(self.model, lambda a, b: source.take(index[a:b]), len(index), batch_size=batch_size)
        return out * self.target_std + self.target_mean

    def save(self, path: str | os.PathLike) -> None:
        """Write model weights, architecture and scalers to one file (atomically)."""
        payload = {
            "vit_config": self.model.cfg.to_dict(),
            "state_dict": self.model.state_dict(),
            "target_names": list(self.target_names),
            "channel_mean": self.channel_mean.tolist(),
            "channel_std": self.channel_std.tolist(),
            "target_mean": self.target_mean.tolist(),
            "target_std": self.target_std.tolist(),
            "pad_mode": self.pad_mode,
            "extra": json.loads(json.dumps(self.extra)),
        }
        _save_checkpoint_file(Path(path), payload)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainedModel":
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            model = ViTRegressor(ViTConfig(**{"stem": 0, "pos_bias": False, **payload["vit_config"]}))  # 0.1 models had neither
            model.load_state_dict(payload["state_dict"])
        except (OSError, RuntimeError, KeyError, EOFError) as exc:
            raise ValueError(f"model: cannot load a structattn model from {path} ({exc})") from None
        model.eval()
        f32 = lambda k: np.asarray(payload[k], np.float32)  # noqa: E731
        return cls(
            model=model,
            target_names=tuple(payload["target_names"]),
            channel_mean=f32("channel_mean"),
            channel_std=f32("channel_std"),
            target_mean=f32("target_mean"),
            target_std=f32("target_std"),
            pad_mode=payload.get("pad_mode", "reflect"),
            extra=payload.get("extra", {}),
        )
