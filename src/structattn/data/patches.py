"""Patch extraction: window x window crops of the structure image centred on each point.

Alignment contract (DESIGN.md): for a point at (row r, col c), rounded to the nearest
pixel, the patch is ``image[:, r - w//2 : r - w//2 + w, c - w//2 : c - w//2 + w]``, so the
point sits at patch pixel ``(w//2, w//2)``. Explanation maps share this pixel grid.

Points near the edge: with ``pad_mode`` one of numpy's ``np.pad`` modes (``"reflect"``,
the default, ``"edge"``, ``"constant"`` = zeros after standardisation) the image is padded
by w//2 so every point gets a full patch; with ``pad_mode="exclude"`` points whose patch
would leave the image are dropped (`patch_inside` tells which).
"""

from __future__ import annotations

import numpy as np

PAD_MODES = ("reflect", "edge", "constant", "exclude")


def _check(window: int, pad_mode: str) -> None:
    if not isinstance(window, (int, np.integer)) or window < 4:
        raise ValueError(f"window: expected an integer >= 4 pixels, got {window!r}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode: expected one of {PAD_MODES}, got {pad_mode!r}")


def patch_inside(positions: np.ndarray, *, shape: tuple[int, int], window: int) -> np.ndarray:
    """(N,) bool: True where the whole window x window patch lies inside an image of `shape`."""
    rc = np.rint(np.asarray(positions)).astype(int)
    lo = rc - window // 2
    hi = lo + window
    return (lo[:, 0] >= 0) & (lo[:, 1] >= 0) & (hi[:, 0] <= shape[0]) & (hi[:, 1] <= shape[1])


def extract_patches(
    image: np.ndarray, positions: np.ndarray, *, window: int, pad_mode: str = "reflect"
) -> np.ndarray:
    """(N, C, window, window) float32 patches centred on `positions` (N, 2) of a (C, H, W) image.

    With ``pad_mode="exclude"`` every point must already be inside (filter with
    `patch_inside` first); otherwise the image is padded by ``window // 2``.
    """
    _check(window, pad_mode)
    img = np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"image: expected (C, H, W), got shape {img.shape}")
    rc = np.rint(np.asarray(positions, dtype=float)).astype(int)
    half = window // 2
    if pad_mode == "exclude":
        inside = patch_inside(rc, shape=img.shape[1:], window=window)
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            raise ValueError(
                f"positions: point {i} at {tuple(rc[i])} has a {window}x{window} patch leaving the image "
                f"{img.shape[1:]}; filter with patch_inside() or use a padding pad_mode"
            )
        padded, off = img, -half
    else:
        pad = ((0, 0), (half, window - half), (half, window - half))
        padded = np.pad(img, pad, mode=pad_mode)
        off = 0
    # Gather all crops at once with a strided view: (C, H', W', w, w) -> index by corners.
    view = np.lib.stride_tricks.sliding_window_view(padded, (window, window), axis=(1, 2))
    rows = rc[:, 0] + off
    cols = rc[:, 1] + off
    return np.ascontiguousarray(view[:, rows, cols].transpose(1, 0, 2, 3)).astype(np.float32)
