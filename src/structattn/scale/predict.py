"""Batched ensemble prediction at positions of an image, with the calibrated uncertainty.

The one prediction loop under `structattn predict` (dense maps, `structattn.maps`), `structattn
suggest` and the multi-process `structattn.scale.dense`: patches cut on demand by a
`PatchSource`, `batch` at a time, every ensemble member applied, and the members' spread
turned into a calibrated std (`structattn.train.uncertainty`). Only one batch of patches exists
at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..data.patches import patch_inside
from .patches import PatchSource


def iter_patches(image: np.ndarray, positions: np.ndarray, *, window: int, pad_mode: str,
                 batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, (b, C, w, w) float32 patches) for `positions` (N, 2), `batch` at a time.

    The same crops as `structattn.data.extract_patches` (a patch leaving the image is cut
    from edge padding when ``pad_mode="exclude"``; mask those with `patch_inside`), cut by
    `PatchSource`: only one batch of them exists at a time, and the image is
    never padded or copied as a whole.
    """
    if batch < 1:
        raise ValueError(f"--batch: expected >= 1, got {batch}")
    source = PatchSource(image, positions, window=window, pad_mode=pad_mode)
    for start in range(0, len(source), batch):
        yield start, source.take(np.arange(start, min(start + batch, len(source))))


def predict_members(members: list, patches: np.ndarray) -> np.ndarray:
    """(M, b, K) predictions of every member (`TrainedModel`) for raw (b, C, w, w) patches."""
    return np.stack([m.predict(patches, batch_size=len(patches)) for m in members])


def mean_and_std(preds: np.ndarray, calibration) -> tuple[np.ndarray, np.ndarray | None]:
    """(M, b, K) member predictions -> (b, K) mean and calibrated std (None for one member)."""
    if len(preds) == 1:
        return preds[0], None
    from ..train.uncertainty import ensemble_stats

    mean, spread = ensemble_stats(preds)
    return mean, calibration.apply(spread)


def predict_batches(members: list, calibration, image: np.ndarray, positions: np.ndarray, *, window: int,
                    pad_mode: str, batch: int = 256) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Yield (start, (b, K) mean, (b, K) std or None) for `positions`, one batch at a time.

    Positions whose patch leaves the image are NaN when ``pad_mode="exclude"``.
    """
    for start, patches in iter_patches(image, positions, window=window, pad_mode=pad_mode, batch=batch):
        m, s = predict_batch(members, calibration, patches, positions[start:start + len(patches)],
                             shape=image.shape[1:], window=window, pad_mode=pad_mode)
        yield start, m, s


def predict_batch(members: list, calibration, patches: np.ndarray, positions: np.ndarray, *, shape, window: int,
                  pad_mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(b, K) mean and calibrated std (or None) of one batch of raw patches at `positions` (b, 2).

    Positions whose patch leaves the image are NaN when ``pad_mode="exclude"``.
    """
    m, s = mean_and_std(predict_members(members, patches), calibration)
    if pad_mode == "exclude":
        outside = ~patch_inside(positions, shape=shape, window=window)
        m[outside] = np.nan
        if s is not None:
            s[outside] = np.nan
    return m, s


def predict_points(members: list, calibration, image: np.ndarray, positions: np.ndarray, *, window: int,
                   pad_mode: str, batch: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, K) mean and std (None without an ensemble) at `positions`, computed batch by batch."""
    n, k = len(positions), len(members[0].target_names)
    mean = np.full((n, k), np.nan, np.float32)
    std = None if len(members) == 1 else np.full((n, k), np.nan, np.float32)
    for start, m, s in predict_batches(members, calibration, image, positions, window=window, pad_mode=pad_mode,
                                       batch=batch):
        mean[start:start + len(m)] = m
        if std is not None:
            std[start:start + len(m)] = s
    return mean, std
