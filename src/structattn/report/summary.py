"""Plain-text run summary (issue 12): did the model learn each target, and which method to trust.

Reads a ``metrics.json`` dict only; returns plain lines (no rich markup, no HTML) that the
CLI prints and tests read. Old run folders without baselines or verdicts still summarise:
missing parts are left out, never guessed.
"""

from __future__ import annotations

from ..evaluate.faithful import faithful_method, rank_methods


def _num(v) -> str:
    return "n/a" if v is None else f"{float(v):.3g}"


def unlearned_targets(metrics: dict) -> dict[str, str]:
    """Targets whose ``learned`` is False -> their verdict sentence (a short default if none).

    Targets without a ``learned`` entry (older runs) are not listed: no verdict, no warning.

    Example:
        >>> unlearned_targets({"targets": {"V+": {"r2": 0.05, "learned": False}, "V-": {"r2": 0.6}}})
        {'V+': 'not learned: the ViT did no better than its baselines'}
    """
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics: expected the metrics.json dict, got {type(metrics).__name__}")
    return {str(name): str(t.get("verdict") or "not learned: the ViT did no better than its baselines")
            for name, t in metrics.get("targets", {}).items() if t.get("learned") is False}


def judged_ensemble(target: dict) -> bool:
    """Whether the verdict judged the ensemble mean (``--verdict ensemble``)."""
    return str(target.get("judged", "")).startswith("ensemble")


def judged_r2(target: dict):
    """The test R² the verdict judged: the ensemble mean's with ``--verdict ensemble``, else the ViT's
    (older runs have no ``r2_judged``)."""
    return target.get("r2_judged", target.get("r2"))


def accuracy_line(name: str, target: dict) -> str:
    """One target's ViT R² against its baselines and the verdict, as one line.

    Example:
        >>> accuracy_line("V+", {"r2": 0.05, "baselines": {"mean": -0.01, "ridge": None},
        ...                      "learned": False, "verdict": "not learned: no better than mean"})
        'V+: ViT R² 0.05 | mean -0.01, ridge n/a | NOT LEARNED (not learned: no better than mean)'
    """
    parts = [f"{name}: {'ViT ensemble' if judged_ensemble(target) else 'ViT'} R² {_num(judged_r2(target))}"]
    base = target.get("baselines")
    if base:
        parts.append(", ".join(f"{k} {_num(v)}" for k, v in base.items()))
    else:
        parts.append("no baselines in this run")
    if "learned" in target:
        word = "learned" if target["learned"] else "NOT LEARNED"
        parts.append(f"{word} ({target['verdict']})" if target.get("verdict") else word)
    return " | ".join(parts)


def faithful_line(name: str, target_scores: dict, *, learned: bool | None = None) -> str:
    """One target's most faithful explanation method with its scores, as one line."""
    best = faithful_method(target_scores)
    caveat = " (target not learned: its explanations are not evidence)" if learned is False else ""
    if best is None:
        return (f"{name}: no explanation method is faithful on this run (each fails the randomisation "
                f"check or lacks deletion/insertion scores){caveat}")
    r = next(r for r in rank_methods(target_scores) if r["method"] == best)
    return (f"{name}: most faithful method on this run: {best} ({faithfulness_phrase(r)}; "
            f"deletion {_num(r['deletion_auc'])}, insertion {_num(r['insertion_auc'])}, "
            f"randomisation ρ {_num(r['randomisation_spearman'])}){caveat}")


def faithfulness_phrase(row: dict) -> str:
    """A `rank_methods` row's score in words: how far insertion − deletion beats the random order.

    Example:
        >>> faithfulness_phrase({"score": -0.1, "random_gap": 0.0})
        'insertion − deletion trails the random order by 0.1'
    """
    if row.get("score") is None:
        return "no deletion/insertion scores"
    if row.get("random_gap") is None:
        return f"insertion − deletion {_num(row['score'])}, no random-order reference"
    word = "beats" if row["score"] >= 0 else "trails"
    return f"insertion − deletion {word} the random order by {_num(abs(row['score']))}"


def summary_lines(metrics: dict) -> list[str]:
    """Plain-text lines for the end of a run: one accuracy line per target, then, when the
    run scored explanations, one line per target naming the most faithful method.

    Args:
        metrics: the ``metrics.json`` dict (``targets`` and optionally ``explanations``).

    Example:
        >>> m = {"targets": {"V+": {"r2": 0.62, "baselines": {"mean": 0.0, "ridge": 0.3},
        ...                         "learned": True, "verdict": "learned: R² 0.62 beats ridge (0.3)"}},
        ...      "explanations": {"scores": {"V+": {"ig": {"deletion_auc": 0.2, "insertion_auc": 0.7,
        ...                                                "randomisation_spearman": 0.1}}}}}
        >>> for line in summary_lines(m): print(line)
        V+: ViT R² 0.62 | mean 0, ridge 0.3 | learned (learned: R² 0.62 beats ridge (0.3))
        V+: most faithful method on this run: ig (insertion − deletion 0.5, no random-order reference; deletion 0.2, insertion 0.7, randomisation ρ 0.1)
    """
    if not isinstance(metrics, dict) or not isinstance(metrics.get("targets"), dict):
        raise TypeError("metrics: expected the metrics.json dict with a 'targets' mapping")
    targets = metrics["targets"]
    lines = [accuracy_line(str(name), t) for name, t in targets.items()]
    scores = (metrics.get("explanations") or {}).get("scores") or {}
    for name, per in scores.items():
        lines.append(faithful_line(str(name), per, learned=targets.get(name, {}).get("learned")))
    return lines
