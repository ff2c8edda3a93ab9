"""Report section: explanation methods compared (table, side-by-side maps, randomisation).

Reads ``metrics.json["explanations"]["scores"]`` (written by `structattn explain` or
`structattn run --methods ...`) and ``explanations.h5``; skipped when there are no scores.
"""

from __future__ import annotations

import html

import numpy as np

from ..data.patches import extract_patches
from ..evaluate.suite import TABLE_COLUMNS, comparison_rows
from .explain_figures import plot_method_maps, plot_score_bars
from .html import fig_to_html, register_section, table_html

N_SHOWN = 4  # points shown side by side


@register_section(45, "Explanations compared")
def explanations_compared(ctx) -> str | None:
    section = ctx.run.metrics.get("explanations", {})
    scores = section.get("scores")
    if not scores:
        return None
    parts = [
        "<p class='note'>Every method explains the same points. Scores rank by |attribution|; "
        "deletion/insertion replace tokens by 0 (the training mean after standardisation); "
        "'centre' is a model-free Gaussian prior; 'random order' the faithfulness reference. "
        "Randomisation ρ: Spearman between maps of the trained and a re-initialised model "
        "(near 0 passes, near 1 fails). See docs/explanations.md.</p>"
    ]
    rows = comparison_rows(scores)
    cols = [k for k, _ in TABLE_COLUMNS if any(r.get(k) is not None for r in rows)]
    header = ["target", "method"] + [dict(TABLE_COLUMNS)[k] for k in cols]
    parts.append(table_html(header, [[r["target"], r["method"]] + [
        "" if r.get(k) is None else r[k] for k in cols] for r in rows]))
    rnd = {t: {m: v.get("randomisation_spearman") for m, v in per.items() if not m.startswith("_")}
           for t, per in scores.items()}
    parts.append("<h3>Randomisation check</h3>" + fig_to_html(
        plot_score_bars(rnd, metric="Spearman ρ, trained vs re-initialised", reference=0.0), alt="randomisation"))
    try:
        idx, maps = ctx.run.explanations()
    except (OSError, KeyError):
        return "".join(parts)
    methods = [m for m in section.get("methods", []) if m in maps] + (["centre"] if "centre" in maps else [])
    if not methods:
        return "".join(parts)
    sample = ctx.sample
    window = next(iter(maps[methods[0]].values())).shape[-1]
    shown = np.arange(min(N_SHOWN, len(idx)))
    img = extract_patches(sample.image[:1], sample.positions[idx[shown]], window=window, pad_mode="edge")[:, 0]
    for target in next(iter(maps.values())):
        per = {m: maps[m][target][shown] for m in methods if target in maps[m]}
        masks = None
        if sample.truth is not None and target in sample.truth.get("classes", {}):
            from ..data.synthetic import causal_masks

            masks = causal_masks(sample, target=target, window=window, index=idx[shown])
        fig = plot_method_maps(img, per, masks=masks, row_labels=[f"pt {i}" for i in idx[shown]])
        parts.append(f"<h3>{html.escape(str(target))}: same points, every method</h3>"
                     + fig_to_html(fig, alt=f"maps {target}"))
    return "".join(parts)
