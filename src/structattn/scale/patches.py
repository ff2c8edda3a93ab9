"""Patches cut on demand: memory bounded by the batch, not by the number of points.

`PatchSource` holds the structure image (a numpy array or an ``np.memmap``: it is never
padded or copied as a whole) and the points, and cuts the standardised (b, C, w, w) patches
of any index set when asked. The crops are exactly those of
`structattn.data.extract_patches` (same rounding, same padding of points near the edge):
a point near the edge is cut from a small crop, padded with the same ``np.pad`` mode, which
equals padding the whole image because the crop reaches the image's border on that side.
`PatchDataset` serves them to a torch ``DataLoader`` (training or a Lightning predict loop).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.patches import PAD_MODES


class PatchSource:
    """Standardised patches of `positions` cut from `image` on demand.

    Args:
        image: (C, H, W) array or memmap (float); only the crops asked for are read.
        positions: (N, 2) float (row, col) pixel positions.
        window: patch side in pixels.
        pad_mode: ``np.pad`` mode for points near the edge (``"exclude"`` cuts with
            ``"edge"``, as the run does for points it kept).
        mean, std: (C,) per-channel standardisation (None: raw values).

    Example:
        >>> src = PatchSource(np.zeros((1, 20, 20), np.float32), np.array([[0, 0], [10, 10]]), window=8)
        >>> src.take(np.array([1])).shape
        (1, 1, 8, 8)
    """

    def __init__(self, image, positions, *, window: int, pad_mode: str = "reflect",
                 mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        if getattr(image, "ndim", None) != 3:
            raise ValueError(f"image: expected a (C, H, W) array, got shape {getattr(image, 'shape', None)}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode: expected one of {PAD_MODES}, got {pad_mode!r}")
        if not isinstance(window, (int, np.integer)) or window < 4:
            raise ValueError(f"window: expected an integer >= 4 pixels, got {window!r}")
        pos = np.asarray(positions, float)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise ValueError(f"positions: expected (N, 2), got shape {pos.shape}")
        self.image = image
        self.rc = np.rint(pos).astype(np.int64)  # (N, 2): 16 bytes a point
        self.window = int(window)
        self.mode = "edge" if pad_mode == "exclude" else pad_mode
        c = image.shape[0]
        self.mean = np.zeros(c, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.std = np.ones(c, np.float32) if std is None else np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.rc)

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        return (self.image.shape[0], self.window, self.window)

    def cut(self, i: int) -> np.ndarray:
        """(C, w, w) float32 raw patch of point `i`."""
        w, half = self.window, self.window // 2
        h_img, w_img = self.image.shape[1:]
        r0, c0 = int(self.rc[i, 0]) - half, int(self.rc[i, 1]) - half
        r1, c1 = r0 + w, c0 + w
        if r0 >= 0 and c0 >= 0 and r1 <= h_img and c1 <= w_img:
            return np.asarray(self.image[:, r0:r1, c0:c1], np.float32)
        # near the edge: a crop reaching the border (and far enough inside for "reflect"), padded
        a0, a1 = max(0, r0 - w), min(h_img, r1 + w)
        b0, b1 = max(0, c0 - w), min(w_img, c1 + w)
        crop = np.asarray(self.image[:, a0:a1, b0:b1], np.float32)
        pr = (max(0, -r0), max(0, r1 - h_img))
        pc = (max(0, -c0), max(0, c1 - w_img))
        padded = np.pad(crop, ((0, 0), pr, pc), mode=self.mode)
        rr, cc = r0 - a0 + pr[0], c0 - b0 + pc[0]
        return padded[:, rr:rr + w, cc:cc + w]

    def take(self, index: np.ndarray) -> np.ndarray:
        """(b, C, w, w) float32 standardised patches of the points `index`."""
        index = np.asarray(index, np.int64).reshape(-1)
        out = np.empty((len(index), *self.patch_shape), np.float32)
        for k, i in enumerate(index):
            out[k] = self.cut(int(i))
        out -= self.mean[None, :, None, None]
        out /= self.std[None, :, None, None]
        return out


class PatchDataset(Dataset):
    """Items of a `PatchSource` for a DataLoader.

    Item ``j`` is ``(j, patch)`` (``(C, w, w)`` float32 tensor) for predicting, or
    ``(patch, y[j])`` when targets `y` (n, K) are given (training). ``index`` (n,) picks
    which points of the source the items are (default all).
    """

    def __init__(self, source: PatchSource, index: np.ndarray | None = None, y: np.ndarray | None = None) -> None:
        self.source = source
        self.index = np.arange(len(source)) if index is None else np.asarray(index, np.int64)
        if y is not None and len(y) != len(self.index):
            raise ValueError(f"y: expected {len(self.index)} rows (one per item), got {len(y)}")
        self.y = None if y is None else np.asarray(y, np.float32)  # numpy: pickles to spawned workers

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int):
        x = torch.from_numpy(self.source.take(self.index[j:j + 1])[0])
        if self.y is None:
            return j, x
        return x, torch.from_numpy(self.y[j])
