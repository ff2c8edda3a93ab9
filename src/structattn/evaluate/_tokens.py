"""Shared helper: pixel maps -> token scores used for ranking."""

from __future__ import annotations

import numpy as np
import torch


def as_numpy(maps) -> np.ndarray:
    """Tensor or array -> float64 numpy, no copy when possible."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    return np.asarray(maps, dtype=np.float64)


def token_scores(maps, *, patch: int) -> np.ndarray:
    """(B, w, w) maps -> (B, g*g) token magnitudes ``mean |a|`` over each token's pixels.

    Ranking uses magnitudes: signed methods (SHAP, IG, occlusion) mark a region that lowers
    the output as just as causal as one that raises it.
    """
    a = np.abs(as_numpy(maps))
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[-1] % patch:
        raise ValueError(f"maps: expected (B, w, w) with w a multiple of patch={patch}, got {a.shape}")
    b, w, _ = a.shape
    g = w // patch
    return a.reshape(b, g, patch, g, patch).mean((2, 4)).reshape(b, g * g)


def infer_patch(maps) -> int:
    """Largest token side p (dividing w) such that every map is constant on its p x p tokens.

    Token-level methods repeat one score over a token's pixels, so p is recoverable
    exactly; pixel-level maps give 1.
    """
    a = as_numpy(maps)
    if a.ndim != 3:
        raise ValueError(f"maps: expected (B, w, w), got shape {a.shape}")
    w = a.shape[-1]
    for p in sorted((d for d in range(2, w + 1) if w % d == 0), reverse=True):
        g = w // p
        blocks = a.reshape(len(a), g, p, g, p)
        if np.allclose(blocks, blocks[:, :, :1, :, :1]):
            return p
    return 1
