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


def row_auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row ROC AUC of ``scores`` against bool ``labels``, both (M, N): the Mann-Whitney form.

    Equals ``sklearn.metrics.roc_auc_score(labels[i], scores[i])`` for every row (ties count
    half, as sklearn's trapezoid does), without its per-call input checks, which cost ~100x
    the arithmetic on a few hundred pixels. Rows whose labels are all one class are NaN.
    """
    from scipy.stats import rankdata

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 2:
        raise ValueError(f"labels: expected the (M, N) shape of scores {s.shape}, got {y.shape}")
    ranks = rankdata(s, axis=1)  # average ranks for ties
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    u = (ranks * y).sum(1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row Spearman rank correlation of two (M, N) arrays (``scipy.stats.spearmanr`` of each
    row pair, average ranks for ties); NaN where either row is constant."""
    from scipy.stats import rankdata

    ra = rankdata(np.asarray(a, dtype=np.float64), axis=1)
    rb = rankdata(np.asarray(b, dtype=np.float64), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / den, np.nan)
