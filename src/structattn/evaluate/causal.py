"""How much of an explanation falls inside a known causal region."""

from __future__ import annotations

import numpy as np


def causal_share(maps: np.ndarray, masks: np.ndarray) -> dict:
    """Attribution share inside the causal region against the region's area share.

    Args:
        maps: (M, w, w) attributions; their absolute values are used (sign carries no
            location information for this score).
        masks: (M, w, w) bool causal regions.

    Returns:
        ``share`` (mean over points of |map| mass inside the mask / total mass),
        ``area_share`` (mean mask area / patch area), ``ratio`` = share / area_share
        (1 = no better than spreading attribution evenly) and ``n`` points used; points
        with an empty mask are skipped.
    """
    maps = np.abs(np.asarray(maps, dtype=np.float64))
    masks = np.asarray(masks, bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps/masks: expected equal (M, w, w) shapes, got {maps.shape} and {masks.shape}")
    use = masks.any(axis=(1, 2))
    if not use.any():
        return {"share": float("nan"), "area_share": float("nan"), "ratio": float("nan"), "n": 0}
    m, k = maps[use], masks[use]
    total = m.sum(axis=(1, 2))
    share = np.where(total > 0, (m * k).sum(axis=(1, 2)) / np.where(total > 0, total, 1), 0.0)
    area = k.mean(axis=(1, 2))
    return {
        "share": float(share.mean()),
        "area_share": float(area.mean()),
        "ratio": float(share.mean() / area.mean()),
        "n": int(use.sum()),
    }
