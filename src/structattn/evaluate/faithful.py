"""Which explanation method is faithful on *this* run: rank methods by their own scores.

Reads one target's scores as `evaluate_methods` writes them (``scores[target]``, also
``metrics.json["explanations"]["scores"][target]``). Two tests, in order:

1. Sanity (Adebayo et al. 2018): a map whose Spearman ρ between the trained and a
   re-initialised model is >= `RANDOMISATION_FAIL` does not depend on what the model
   learned, so however good its curves look it ranks after every method that passes.
2. Faithfulness: ``(insertion_auc - deletion_auc)`` above the same gap of the random
   order (``"_random"``): removing the top-ranked tokens first should hurt the output
   most (low deletion AUC), revealing them first should recover it fastest (high
   insertion AUC), and both only count where they beat an uninformed order.

The centre prior (``"centre"``) is a model-free reference, never a candidate; keys
starting with ``"_"`` are not methods. Pure Python: no torch, no files.
"""

from __future__ import annotations

import math

RANDOMISATION_FAIL = 0.5  # Spearman ρ at or above this: the map survives weight re-drawing (fails)
PRIOR = "centre"  # model-free reference, scored next to the methods but never ranked


def _finite(v) -> float | None:
    """`v` as a float, or None when missing, non-numeric or NaN/inf (JSON writes NaN as null)."""
    if v is None or isinstance(v, (bool, str)):
        return None
    try:
        v = float(v)  # also numpy scalars
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _gap(row: dict) -> float | None:
    ins, dele = _finite(row.get("insertion_auc")), _finite(row.get("deletion_auc"))
    return None if ins is None or dele is None else ins - dele


def rank_methods(target_scores: dict) -> list[dict]:
    """The explanation methods of one target, most faithful on this run first.

    Methods that fail the randomisation check (ρ >= 0.5) come after all others; methods
    without a randomisation score come after those that pass. Within each group the
    faithfulness score decides (higher first; methods without one last); ties keep the
    input order.

    Args:
        target_scores: method -> score dict with ``deletion_auc``, ``insertion_auc`` and
            ``randomisation_spearman`` (any may be missing or None), plus the optional
            ``"_random"`` reference ``{"deletion_auc", "insertion_auc"}``.

    Returns:
        One dict per method: ``method``; ``score`` = (insertion − deletion) − the random
        order's (insertion − deletion), or the plain gap when there is no random order,
        None without both AUCs; ``passes_randomisation`` True / False / None (not
        checked); and the raw ``deletion_auc``, ``insertion_auc``,
        ``randomisation_spearman``, ``auroc`` and ``random_gap`` (None where missing).

    Example:
        >>> s = {"attention": {"deletion_auc": 0.2, "insertion_auc": 0.9, "randomisation_spearman": 0.9},
        ...      "ig": {"deletion_auc": 0.3, "insertion_auc": 0.6, "randomisation_spearman": 0.1},
        ...      "centre": {"deletion_auc": 0.1, "insertion_auc": 0.9, "randomisation_spearman": 1.0},
        ...      "_random": {"deletion_auc": 0.5, "insertion_auc": 0.5}}
        >>> [(r["method"], round(r["score"], 2), r["passes_randomisation"]) for r in rank_methods(s)]
        [('ig', 0.3, True), ('attention', 0.7, False)]
    """
    if not isinstance(target_scores, dict):
        raise TypeError(f"target_scores: expected a dict method -> scores, got {type(target_scores).__name__}")
    ref = target_scores.get("_random")
    random_gap = _gap(ref) if isinstance(ref, dict) else None
    rows = []
    for method, row in target_scores.items():
        if method == PRIOR or str(method).startswith("_"):
            continue
        if not isinstance(row, dict):
            raise TypeError(f"target_scores[{method!r}]: expected a dict of scores, got {type(row).__name__}")
        gap = _gap(row)
        rho = _finite(row.get("randomisation_spearman"))
        rows.append({
            "method": method,
            "score": None if gap is None else gap - (random_gap or 0.0),
            "passes_randomisation": None if rho is None else rho < RANDOMISATION_FAIL,
            "deletion_auc": _finite(row.get("deletion_auc")),
            "insertion_auc": _finite(row.get("insertion_auc")),
            "randomisation_spearman": rho,
            "auroc": _finite(row.get("auroc")),
            "random_gap": random_gap,
        })
    group = {True: 0, None: 1, False: 2}  # passes, not checked, fails
    # sorted() is stable: ties keep the order the methods were scored in
    return sorted(rows, key=lambda r: (group[r["passes_randomisation"]], r["score"] is None, -(r["score"] or 0.0)))


def faithful_method(target_scores: dict) -> str | None:
    """The most faithful method of one target on this run, or None if no method qualifies.

    The top row of `rank_methods`, provided it has a faithfulness score and does not
    fail the randomisation check (a map that ignores the trained weights is never called
    faithful, even when it is the only one).

    Example:
        >>> faithful_method({"attention": {"deletion_auc": 0.2, "insertion_auc": 0.9,
        ...                                "randomisation_spearman": 0.95},
        ...                  "gradattn": {"deletion_auc": 0.4, "insertion_auc": 0.5,
        ...                               "randomisation_spearman": 0.02}})
        'gradattn'
    """
    rows = rank_methods(target_scores)
    if not rows or rows[0]["score"] is None or rows[0]["passes_randomisation"] is False:
        return None
    return rows[0]["method"]
