"""Ground-truth causal regions of a sample's targets, in each point's patch.

Two kinds of generator truth exist:

* class-in-disk (`structattn.data.synthetic`): ``truth = {"radius": r, "classes": {target:
  [label classes]}}`` with a label image; the region is the disk of radius r around the
  point restricted to those classes (it moves with the domain pattern);
* fixed regions (`structattn.data.semisynthetic`): ``truth = {"regions": {target: (s, s)
  bool}}``, a mask in patch coordinates centred on the point (pixel (s//2, s//2) is the
  point), the same for every point: the rule reads those pixels wherever the point is.

`truth_masks` turns either into (M, window, window) masks pixel-aligned with
`structattn.data.patches.extract_patches`.
"""

from __future__ import annotations

import numpy as np

from .sample import Sample


def truth_targets(sample: Sample) -> list[str]:
    """Names of the targets that have a ground-truth region in `sample` (possibly none)."""
    t = sample.truth or {}
    if "regions" in t:
        return list(t["regions"])
    if "classes" in t and sample.labels is not None:
        return list(t["classes"])
    return []


def centred_crop(mask: np.ndarray, window: int) -> np.ndarray:
    """A (s, s) mask centred at (s//2, s//2) re-cut to (window, window) centred at window//2.

    Example:
        >>> m = np.zeros((5, 5), bool); m[2, 2] = True
        >>> np.argwhere(centred_crop(m, 8)).tolist()
        [[4, 4]]
    """
    mask = np.asarray(mask, bool)
    s = mask.shape[0]
    out = np.zeros((window, window), bool)
    # patch pixel p <-> offset p - window//2; source pixel q <-> offset q - s//2
    lo = max(0, window // 2 - s // 2)
    hi = min(window, window // 2 - s // 2 + s)
    src_lo = lo - (window // 2 - s // 2)
    out[lo:hi, lo:hi] = mask[src_lo : src_lo + hi - lo, src_lo : src_lo + hi - lo]
    return out


def truth_masks(sample: Sample, *, target: str, window: int, index: np.ndarray | None = None) -> np.ndarray | None:
    """(M, window, window) bool causal region of `target` at the points `index`, or None.

    None when the sample carries no ground truth for `target` (real data, or a target the
    generator's rule does not define).
    """
    t = sample.truth or {}
    idx = np.arange(sample.n_points) if index is None else np.asarray(index)
    if "regions" in t:
        if target not in t["regions"]:
            return None
        m = centred_crop(np.asarray(t["regions"][target], bool), window)
        return np.broadcast_to(m, (len(idx), window, window)).copy()
    if "classes" in t and sample.labels is not None and target in t["classes"]:
        from .synthetic import causal_masks

        return causal_masks(sample, target=target, window=window, index=idx)
    return None


def truth_within(sample: Sample, *, target: str, window: int) -> np.ndarray | None:
    """(window, window) bool region the ground truth lives in (the rule's disk), or None.

    Scoring inside it (``auroc_within``) asks whether a map picks the right pixels *within*
    the region the rule reads, which a centre prior cannot game. Fixed-region truth has no
    such inner structure, so None.
    """
    t = sample.truth or {}
    if "classes" in t and sample.labels is not None and target in t["classes"]:
        yy, xx = np.mgrid[0:window, 0:window] - window // 2
        return (yy**2 + xx**2) <= t["radius"] ** 2
    return None
