"""Dense prediction (`structattn predict`) over several processes: a Lightning predict loop.

Each rank predicts a contiguous share of the grid positions with every ensemble member and
writes its share into a shard (`structattn.scale.sharded.predict_to_shards`); global rank 0
merges the shards into maps.h5 (`structattn.maps.predict_dense`). The work per batch is
`structattn.scale.predict.predict_batch` (NaN outside the image for ``pad_mode="exclude"``), as
in the one-process `predict_batches`, on raw patches cut on demand by a `PatchSource` (the same
crops as `iter_patches`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from .patches import PatchDataset, PatchSource
from .predict import predict_batch
from .sharded import predict_to_shards


class DenseModule(L.LightningModule):
    """predict_step: (positions j, {"mean": {target: (b,)}, "std": {target: (b,)}}) for one batch."""

    def __init__(self, members: list, calibration, positions: np.ndarray, *, shape, window: int,
                 pad_mode: str) -> None:
        super().__init__()
        self.members, self.calibration = members, calibration
        self.nets = torch.nn.ModuleList([m.model for m in members])  # so that Lightning moves them to the device
        self.positions, self.shape = positions, tuple(shape)
        self.window, self.pad_mode = int(window), pad_mode
        self.names = list(members[0].target_names)

    def predict_step(self, batch, batch_idx):
        j, x = batch
        j = j.cpu().numpy()
        m, s = predict_batch(self.members, self.calibration, x.cpu().numpy(), self.positions[j], shape=self.shape,
                             window=self.window, pad_mode=self.pad_mode)
        out = {"mean": {t: m[:, k] for k, t in enumerate(self.names)}}
        if s is not None:
            out["std"] = {t: s[:, k] for k, t in enumerate(self.names)}
        return j, out


def predict_shards(members: list, calibration, image: np.ndarray, positions: np.ndarray, shard_dir: str | Path, *,
                   window: int, pad_mode: str, batch: int, parallel) -> list[Path] | None:
    """Every rank predicts its contiguous share of `positions` (N, 2) into a shard in `shard_dir`.

    Returns the shard paths on global rank 0, None on the other ranks.
    """
    source = PatchSource(image, positions, window=window, pad_mode=pad_mode)  # raw patches: members standardise
    module = DenseModule(members, calibration, positions, shape=image.shape[1:], window=window, pad_mode=pad_mode)
    groups = ["mean"] + (["std"] if len(members) > 1 else [])
    return predict_to_shards(module, PatchDataset(source), shard_dir, groups=groups,
                             targets=list(members[0].target_names), item_shape=(), batch=batch, parallel=parallel,
                             align_to_batches=True)  # the one-process batches: a calibrated std amplifies noise
