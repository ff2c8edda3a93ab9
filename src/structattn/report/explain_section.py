"""Report section: explanation methods compared (per target: ranking, table, side-by-side maps).

Reads ``metrics.json["explanations"]["scores"]`` (written by `structattn explain` or
`structattn run --methods ...`) and ``explanations.h5``; skipped when there are no scores.
Per target the methods are listed most faithful on this run first (`rank_methods`) and the
maps show that method first; a target the ViT did not learn gets a warning above it.
"""

from __future__ import annotations

import html

import numpy as np

from ..data.patches import extract_patches
from ..data.truth import truth_masks
from ..evaluate.faithful import RANDOMISATION_FAIL, faithful_method, rank_methods
from ..evaluate.suite import TABLE_COLUMNS, comparison_rows
from .explain_figures import plot_method_maps, plot_score_bars
from .base import fig_to_html, not_learned_warning, register_section, table_html
from .summary import faithfulness_phrase, unlearned_targets

N_SHOWN = 4  # points shown side by side

SECTION_NOTE = (
    "<p class='note'>Every method explains the same points. Scores rank by |attribution|; "
    "deletion/insertion replace tokens by 0 (the training mean after standardisation); "
    "'centre' is a model-free Gaussian prior (a reference, never ranked); 'random order' the faithfulness "
    "reference. Randomisation ρ: Spearman between maps of the trained and a re-initialised model "
    "(near 0 passes, near 1 fails). Methods are listed most faithful on this run first: those with "
    f"randomisation ρ ≥ {RANDOMISATION_FAIL:g} fail the sanity check and come last; the rest rank by "
    "faithfulness = (insertion − deletion) minus the same for the random order (higher better). "
    "See docs/explanations.md.</p>"
)


def _passes_cell(p: bool | None) -> str:
    return "not checked" if p is None else ("yes" if p else f"no (ρ ≥ {RANDOMISATION_FAIL:g})")


def _best_line(target_scores: dict, ranked: list[dict]) -> str:
    """The "most faithful on this run" box of one target (escaped HTML)."""
    best = faithful_method(target_scores)
    if best is None:
        return ("<div class='best'>No method is faithful on this run: each fails the randomisation check or "
                "lacks deletion/insertion scores.</div>")
    r = ranked[0]
    rho = "n/a" if r["randomisation_spearman"] is None else f"{r['randomisation_spearman']:.2f}"
    return (f"<div class='best'>most faithful on this run: <b>{html.escape(best)}</b> "
            f"({html.escape(faithfulness_phrase(r))}; deletion AUC {r['deletion_auc']:.3g}, "
            f"insertion AUC {r['insertion_auc']:.3g}, randomisation ρ {rho})</div>")


def _target_table(target: str, target_scores: dict, ranked: list[dict]) -> str:
    """Ranked methods, then the centre prior and the random order, with every score present."""
    raw = {r["method"]: r for r in comparison_rows({target: target_scores})}
    cols = [k for k, _ in TABLE_COLUMNS if any(r.get(k) is not None for r in raw.values())]
    header = ["rank", "method", "faithfulness", "passes randomisation"] + [dict(TABLE_COLUMNS)[k] for k in cols]
    rows = [[k + 1, r["method"], r["score"], _passes_cell(r["passes_randomisation"])]
            + [raw[r["method"]].get(k) for k in cols] for k, r in enumerate(ranked)]
    for name, label in (("centre", "prior"), ("random order", "reference")):
        if name in raw:
            rows.append([label, name, None, ""] + [raw[name].get(k) for k in cols])
    return table_html(header, rows)


def linear_path_note(section: dict, target: str) -> str:
    """For a model with a linear path (`--readout spatial_embed`, `--prefer-ridge`): how much of the target's
    output passes no attention, and what that means for the attention family (escaped HTML);
    empty otherwise."""
    share = section.get("linear_path_share", {}).get(target)
    if share is None:
        return ""
    path = section.get("linear_path") or "the tokens' embeddings (--readout spatial_embed)"  # runs before `linear_path` was recorded
    return (f"<p class='note'>{share:.0%} of what the model reads for {html.escape(target)} comes from its linear "
            f"path, {html.escape(path)}, the rest from the tokens' final states. The linear part passes no attention: attention, rollout and gradattn place it on the tokens "
            "it is read from; AttnLRP, SHAP, IG and occlusion explain both parts.</p>")


def _method_order(ranked: list[dict], listed: list[str], maps: dict, target: str) -> list[str]:
    """Map columns: ranked methods (most faithful first), any others explained, the centre prior last."""
    order = [r["method"] for r in ranked] + [m for m in listed if m != "centre"] + ["centre"]
    return [m for m in dict.fromkeys(order) if m in maps and target in maps[m]]


@register_section(45, "Explanations compared")
def explanations_compared(ctx) -> str | None:
    metrics = ctx.run.metrics
    section = metrics.get("explanations", {})
    scores = section.get("scores")
    if not scores:
        return None
    unlearned = unlearned_targets(metrics)
    try:
        n_all = len(ctx.run.explanation_index())
        idx, maps = ctx.run.explanations(rows=np.arange(min(N_SHOWN, n_all)))  # only the points shown are read
    except (OSError, KeyError):
        idx, maps = np.zeros(0, np.int64), {}
    img = None
    if maps and len(idx):
        sample = ctx.sample
        window = next(iter(next(iter(maps.values())).values())).shape[-1]
        shown = np.arange(len(idx))
        img = extract_patches(sample.image[:1], sample.positions[idx[shown]], window=window, pad_mode="edge")[:, 0]
    parts = [SECTION_NOTE]
    for target, per in scores.items():
        target = str(target)
        ranked = rank_methods(per)
        parts.append(f"<h3>{html.escape(target)}</h3>")
        if target in unlearned:  # before anything about its explanations
            parts.append(not_learned_warning(target, unlearned[target]))
        parts.append(_best_line(per, ranked) + linear_path_note(section, target) + _target_table(target, per, ranked))
        methods = _method_order(ranked, list(section.get("methods", [])), maps, target) if img is not None else []
        if not methods:
            continue
        per_maps = {m: maps[m][target][shown] for m in methods}
        masks = truth_masks(sample, target=target, window=window, index=idx[shown])  # None without ground truth
        fig = plot_method_maps(img, per_maps, masks=masks, row_labels=[f"pt {i}" for i in idx[shown]])
        parts.append(f"<p class='note'>{html.escape(target)}: same points, every method, most faithful first.</p>"
                     + fig_to_html(fig, alt=f"maps {target}"))
    rnd = {t: {m: np.nan if v.get("randomisation_spearman") is None else v["randomisation_spearman"]
               for m, v in per.items() if not m.startswith("_")}
           for t, per in scores.items()}
    parts.append("<h3>Randomisation check, all targets</h3>" + fig_to_html(
        plot_score_bars(rnd, metric="Spearman ρ, trained vs re-initialised", reference=0.0), alt="randomisation"))
    return "".join(parts)
