"""Report section "Domain patterns": attribution by domain class (from ``domains.h5``).

Registered on import (`structattn.report.html.render_report` imports it); renders nothing
when the run has no ``domains`` entry in ``metrics.json``. Rows of targets the ViT did not
learn are marked, with a warning above the table.
"""

from __future__ import annotations

import html

import h5py
import numpy as np

from . import domain_figures
from .base import fig_to_html, not_learned_warning, register_section, table_html
from .summary import unlearned_targets


@register_section(60, "Domain patterns: attribution by domain class")
def domain_patterns(ctx) -> str | None:
    summary = ctx.run.metrics.get("domains")
    path = ctx.run.path / (summary or {}).get("file", "domains.h5")
    if not summary or not path.is_file():
        return None
    s = ctx.sample
    with h5py.File(path, "r") as f:
        labels = f["labels"][()].astype(np.int64)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["names"][()]]
        positions = f["positions"][()]
        rows, enr, ci, per_point = [], [], [], {}
        for method in summary["enrichment"]:
            for target in summary["enrichment"][method]:
                g = f[f"{method}/{target}"]
                rows.append(f"{method} / {target}")
                enr.append(g["enrichment"][()])
                ci.append(g["ci"][()])
                per_point[rows[-1]] = g["per_point"][()]
    if not rows:
        return None
    enr, ci = np.array(enr), np.array(ci)
    seg = summary["segmentation"]
    notes = "; ".join(f"{k}: {v}" for k, v in seg["notes"].items())
    out = (f"<p>Segmentation: <b>{html.escape(str(seg['method']))}</b> ({html.escape(notes)}). "
           "Enrichment = (share of |attribution| on a class) / (its area share in the patch), ratio of means over "
           f"the {summary['n_points']} explained points; 95% bootstrap interval over points. "
           "&gt; 1: the method looks at that class more than its area; * in the figure: interval excludes 1.</p>")
    # Issue 12: statistics of a target the ViT did not learn describe a model that does not predict it.
    unlearned = unlearned_targets(ctx.run.metrics)
    shown = dict.fromkeys(t for per_t in summary["enrichment"].values() for t in per_t if t in unlearned)
    out += "".join(not_learned_warning(t, unlearned[t]) for t in shown)
    table, classes = [], []
    for method, per_t in summary["enrichment"].items():
        for target, res in per_t.items():
            for r in res["classes"]:
                if r["enrichment"] is None:
                    continue
                flag = "enriched" if r["ci_low"] > 1 else ("depleted" if r["ci_high"] < 1 else "")
                if target in unlearned:
                    flag = "target NOT LEARNED: not evidence" + (f" ({flag})" if flag else "")
                table.append([method, target, r["class"], r["reference_share"], r["attribution_share"],
                              r["enrichment"], f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]", flag])
                classes.append("unlearned" if target in unlearned else None)
    out += table_html(["method", "target", "class", "area share", "attribution share", "enrichment", "95% CI", ""],
                      table, row_classes=classes)
    # Per-class maps and the low/high split for the first row that has a split (learned targets first).
    first = 0
    split = None
    for k, row in sorted(enumerate(rows), key=lambda kr: kr[1].split(" / ", 1)[1] in unlearned):
        method, target = row.split(" / ", 1)
        sp = summary["enrichment"][method][target].get("split")
        if sp:
            first = k
            lo, hi = sp["low"]["classes"], sp["high"]["classes"]

            def arr(cls):
                e = np.array([np.nan if c["enrichment"] is None else c["enrichment"] for c in cls])
                c_ = np.array([[np.nan if c["ci_low"] is None else c["ci_low"],
                                np.nan if c["ci_high"] is None else c["ci_high"]] for c in cls])
                return e, c_

            (e_lo, c_lo), (e_hi, c_hi) = arr(lo), arr(hi)
            t_lo, t_hi = sp["thresholds"]
            split = (f"low {target} (≤ {t_lo:.3g})", e_lo, c_lo, f"high {target} (≥ {t_hi:.3g})", e_hi, c_hi)
            break
    bg_name = "amplitude" if "amplitude" in s.channels else s.channels[0]
    figs = domain_figures.domain_section_figures(
        labels=labels, names=names, background=s.image[s.channels.index(bg_name)], positions=positions,
        rows=rows, enrichment=enr, ci=ci, per_point=per_point[rows[first]], split=split, row_for_maps=first,
    )
    out += fig_to_html(figs["segmentation"], alt="domain segmentation")
    out += fig_to_html(figs["enrichment"], alt="enrichment per class")
    if "split" in figs:
        out += ("<p class='note'>Low vs high property: the lowest and highest third of the explained points; "
                "the middle third is left out.</p>" + fig_to_html(figs["split"], alt="enrichment low vs high"))
    out += (f"<p class='note'>Per-point enrichment of each class for {html.escape(rows[first])} (log2; red = more "
            "attribution than area, hollow = class absent from that patch).</p>")
    out += fig_to_html(figs["class_maps"], alt="per-class enrichment maps")
    return out
