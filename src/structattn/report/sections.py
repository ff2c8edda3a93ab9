"""The core report sections: overview, target maps, parity, attention gallery."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..data.patches import extract_patches
from . import figures
from .html import fig_to_html, register_section, table_html


@register_section(10, "Accuracy on held-out spatial blocks")
def overview(ctx) -> str:
    m = ctx.run.metrics
    rows = [[name, s["r2"], s["mae"], s.get("unit", ""), s["n"]] for name, s in m["targets"].items()]
    out = table_html(["target", "test R²", "test MAE", "unit", "test points"], rows)
    out += f"<p class='note'>split: {m['split']['description']}. Why blocks: {m['split']['why']}.</p>"
    gt = m.get("ground_truth", {}).get("scores", {})
    if gt:
        rows = [[meth, t, s["share"], s["area_share"], s["ratio"], s["n"]]
                for meth, per in gt.items() for t, s in per.items()]
        out += "<p>Known causal region (generator rule): share of attribution inside it against its area share.</p>"
        out += table_html(["method", "target", "share in region", "area share", "ratio", "points"], rows)
    s = ctx.sample
    p = ctx.run.predictions
    fig, ax = plt.subplots(figsize=(6, 6))
    figures.structure_with_split(s.image[0], p["positions"], p["split"], title=f"{s.channels[0]} and the split", ax=ax)
    return out + fig_to_html(fig, alt="structure image with split")


@register_section(20, "Targets over the sample")
def target_maps(ctx) -> str:
    p, s = ctx.run.predictions, ctx.sample
    names = [str(n) for n in p["target_names"]]
    units = [str(u) for u in p["units"]]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    for k, (n, u) in enumerate(zip(names, units)):
        figures.point_map(s.image[0], p["positions"], p["y_true"][:, k], title=n, unit=u, ax=axes[0, k])
    return fig_to_html(fig, alt="target maps")


@register_section(30, "Predicted against measured (test points)")
def parity_plots(ctx) -> str:
    p, m = ctx.run.predictions, ctx.run.metrics
    names = [str(n) for n in p["target_names"]]
    test = p["split"] == 2
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False)
    for k, n in enumerate(names):
        figures.parity(p["y_true"][test, k], p["y_pred"][test, k], title=n, unit=str(p["units"][k]),
                       r2=m["targets"][n]["r2"], ax=axes[0, k])
    fig.tight_layout()
    return fig_to_html(fig, alt="parity plots")


@register_section(40, "Attention on test points")
def attention_gallery(ctx) -> str | None:
    idx, maps = ctx.run.explanations()
    if "attention" not in maps or len(idx) == 0:
        return None
    cfg = ctx.run.config["run"]
    s = ctx.sample
    n = min(int(cfg.get("gallery", 8)), len(idx))
    pick = np.linspace(0, len(idx) - 1, n).round().astype(int)
    pad = "edge" if cfg["pad_mode"] == "exclude" else cfg["pad_mode"]
    patches = extract_patches(s.image, s.positions[idx[pick]], window=cfg["window"], pad_mode=pad)
    target = next(iter(maps["attention"]))
    masks = None
    if s.truth is not None and s.labels is not None and target in s.truth["classes"]:
        from ..data.synthetic import causal_masks

        masks = causal_masks(s, target=target, window=cfg["window"], index=idx[pick])
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.6), squeeze=False)
    for j in range(n):
        figures.overlay(patches[j, 0], maps["attention"][target][pick[j]],
                        mask=None if masks is None else masks[j], title=f"point {idx[pick[j]]}", ax=axes[0, j])
    note = ("<p class='note'>Last-layer [CLS] attention (head mean) over the first channel; "
            "+ marks the spectroscopy point" + ("; cyan: the rule's causal region for " + target if masks is not None else "")
            + ".</p>")
    return note + fig_to_html(fig, alt="attention gallery")
