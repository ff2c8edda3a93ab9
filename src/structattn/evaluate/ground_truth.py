"""Scores against known causal regions (the synthetic generator's rule)."""

from __future__ import annotations

import numpy as np
from ._tokens import as_numpy, row_auroc


def ground_truth_scores(maps, masks, *, within=None) -> dict:
    """Pixel AUROC of ``|a|`` against the causal masks, and the attribution mass ratio.

    Args:
        maps: (M, w, w) attributions (ranked by magnitude).
        masks: (M, w, w) bool ground-truth causal regions (`structattn.data.synthetic.causal_masks`).
        within: optional (M, w, w) or (w, w) bool region to score inside (AUROC only, e.g.
            the rule's disk): then only the *classes* matter, not the distance to the
            centre, and a centre prior scores about 0.5.

    Returns:
        ``auroc``: mean over points whose mask is neither empty nor full of the per-point
        pixel ROC AUC (0.5 = chance); ``mass_ratio``: mean share of ``|a|`` inside the mask
        divided by the mean share of pixels inside it (1 = no better than uniform);
        ``n_points``: points scored for AUROC.

    Example:
        >>> m = np.zeros((1, 4, 4), bool); m[0, :2] = True
        >>> ground_truth_scores(m.astype(float), m)["auroc"]
        1.0
    """
    a = np.abs(as_numpy(maps))
    mk = np.asarray(masks)
    if mk.dtype != bool:
        raise TypeError(f"masks: expected a bool array, got dtype {mk.dtype}")
    if a.shape != mk.shape or a.ndim != 3:
        raise ValueError(f"masks: expected the shape of maps {a.shape} (M, w, w), got {mk.shape}")
    a2, m2 = a.reshape(len(a), -1), mk.reshape(len(mk), -1)
    if not np.isfinite(a2).all():
        bad = int((~np.isfinite(a2)).any(1).sum())
        raise ValueError(f"maps: expected finite attributions, got non-finite values in {bad} of {len(a2)} maps")
    if within is None:
        aucs = row_auroc(a2, m2)
    else:
        wi = np.broadcast_to(np.asarray(within, dtype=bool), mk.shape).reshape(len(mk), -1)
        if (wi == wi[:1]).all():  # one region for every point: score its columns together
            aucs = row_auroc(a2[:, wi[0]], m2[:, wi[0]]) if len(wi) else np.zeros(0)
        else:
            aucs = np.array([row_auroc(a2[i, wi[i]][None], m2[i, wi[i]][None])[0] for i in range(len(a2))])
    aucs = aucs[np.isfinite(aucs)]  # points whose mask is neither empty nor full
    share = (a2 * m2).sum(1) / np.maximum(a2.sum(1), 1e-12)
    area = m2.mean(1)
    has = area > 0
    ratio = float(share[has].mean() / area[has].mean()) if has.any() else float("nan")
    return {"auroc": float(np.mean(aucs)) if len(aucs) else float("nan"), "mass_ratio": ratio, "n_points": len(aucs)}
