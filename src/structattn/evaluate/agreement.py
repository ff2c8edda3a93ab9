"""Agreement between methods: rank correlation and top-k token overlap."""

from __future__ import annotations

import numpy as np
from ._tokens import infer_patch, row_spearman, token_scores


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over points of the Spearman correlation of two (M, T) score arrays (NaN-safe)."""
    rho = row_spearman(a, b)  # NaN where a map is constant: it has no ranking
    rho = rho[np.isfinite(rho)]
    return float(np.mean(rho)) if len(rho) else float("nan")


def _topk(a: np.ndarray, b: np.ndarray, k: int) -> float:
    ta = np.argsort(-a, axis=1, kind="stable")[:, :k]
    tb = np.argsort(-b, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))


def agreement(maps_by_method: dict, *, patch: int | None = None, k: int | None = None) -> tuple[dict, dict]:
    """Pairwise token-level agreement of methods explaining the same points and target.

    Args:
        maps_by_method: name -> (M, w, w) maps of the same points.
        patch: token side in pixels (compared at token level: ties inside a token are not
            information); default: inferred from the maps (the largest p on which every
            map is constant), 1 for pixel-level maps.
        k: top-k tokens for the overlap; default 10 % of the tokens (at least 1).

    Returns:
        (spearman, topk): nested dicts ``[a][b]`` of mean Spearman rank correlation of
        ``|a|`` and mean fraction of shared top-k tokens.

    Example:
        >>> x = np.random.default_rng(0).random((3, 8, 8))
        >>> rho, top = agreement({"a": x, "b": x})
        >>> round(rho["a"]["b"], 6), top["a"]["b"]
        (1.0, 1.0)
    """
    if not maps_by_method:
        raise ValueError("maps_by_method: expected at least one method's maps, got none")
    if patch is None:
        patch = min(infer_patch(m) for m in maps_by_method.values())
    tok = {name: token_scores(m, patch=patch) for name, m in maps_by_method.items()}
    shapes = {name: t.shape for name, t in tok.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"maps_by_method: expected the same points and window for every method, got {shapes}")
    t = next(iter(tok.values())).shape[1]
    k = max(1, round(0.1 * t)) if k is None else int(k)
    if not 1 <= k <= t:
        raise ValueError(f"k: expected an integer in [1, {t}] (tokens), got {k}")
    names = list(tok)
    rho = {a: {b: (1.0 if a == b else _spearman_rows(tok[a], tok[b])) for b in names} for a in names}
    top = {a: {b: _topk(tok[a], tok[b], k) for b in names} for a in names}
    return rho, top
