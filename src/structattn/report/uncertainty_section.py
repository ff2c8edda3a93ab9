"""Report section: calibration of the deep ensemble's uncertainty on the test blocks."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt

from ..train.uncertainty import COVERAGE_95_RANGE
from .base import fig_to_html, register_section, table_html
from .map_figures import reliability_plot


@register_section(35, "Uncertainty: calibration on held-out blocks")
def uncertainty_section(ctx) -> str | None:
    u = ctx.run.metrics.get("uncertainty") or {}
    if int(u.get("members", 1)) < 2:
        return ("<p class='note'>This run has no uncertainty (one model; <code>--ensemble 3</code> or more trains a "
                "deep ensemble and calibrates it).</p>") if u else None
    cal = u["calibration"]["per_target"]
    targets = ctx.run.metrics["targets"]
    rows = [[t, s["coverage_68"], s["coverage_95"], s["mean_std"], s["spearman_error_std"], cal[t]["scale"],
             cal[t]["floor"], targets[t].get("r2_ensemble"), targets[t].get("r2")] for t, s in u["test"].items()]
    out = (f"<p>A deep ensemble of {u['members']} ViTs (seeds {', '.join(map(str, u['seeds']))}; model.pt is the "
           "first) gives each prediction a mean and a spread. The spread is calibrated per target on the "
           f"{html.escape(u['calibration']['fitted_on'])}: {html.escape(u['calibration']['formula'])} "
           f"(method {html.escape(u['calibration'].get('choice', u['calibration']['method']))}). "
           "Coverage is measured on the test blocks, which "
           "took no part in training, early stopping or calibration: a calibrated model holds 68 % and 95 % of "
           "the test values inside its 68 % and 95 % intervals. The validation blocks are few and the test "
           "blocks lie elsewhere on the sample, so expect a few points' difference either way. \"rank ρ\": Spearman correlation of |error| with "
           "the std (does the uncertainty say where the errors are?).</p>")
    warnings = u.get("coverage_warnings") or {}  # runs before 2026-11-27 have none
    if warnings:
        lo, hi = COVERAGE_95_RANGE
        out += (f"<div class='warn'><b>Calibration off on the test blocks</b> (95 % coverage outside {lo}-{hi}): "
                + "; ".join(html.escape(w) for w in warnings.values()) + ".</div>")
    out += table_html(["target", "coverage 68 %", "coverage 95 %", "mean std", "rank ρ(|error|, std)", "scale",
                       "floor", "ensemble R²", "ViT R² (model.pt)"], rows)
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    reliability_plot(u["reliability"]["levels"], u["reliability"]["observed"], ax=ax)
    return out + fig_to_html(fig, alt="reliability plot")
