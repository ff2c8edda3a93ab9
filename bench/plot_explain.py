"""Figures and tables for docs/explanations.md from bench/results/explain.json and its .maps.npz.

Run after ``bench/bench_explain.py``: ``PYTHONPATH=src python bench/plot_explain.py``.
Writes the figures to docs/img/ and prints the two markdown tables of the docs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from structattn.report.explain_figures import plot_curves, plot_method_maps, plot_score_bars

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "img"
METHODS = ["attention", "rollout", "gradattn", "shap", "ig", "occlusion", "attnlrp", "centre"]


def markdown_tables(res: dict) -> str:
    """The summary and per-target tables of docs/explanations.md, as markdown."""
    out = ["| method | throughput vs SHAP | points/s | pixel AUROC | in-disk AUROC |", "|---|---|---|---|---|"]
    for m, s in res["summary"].items():
        out.append(f"| {m} | {s['throughput_vs_shap']:.0f}× | {s['points_per_second']:.1f} | {s['auroc']:.3f} | "
                   f"{s['auroc_within']:.3f} |")
    out += ["", "| target | method | AUROC | in-disk AUROC | mass ratio | deletion AUC ↓ | insertion AUC ↑ | ρ vs SHAP "
            "| top-k vs SHAP | randomisation ρ | fwd/pt | bwd/pt | ms/pt | × SHAP |", "|---" * 14 + "|"]
    for target in res["model_test_r2"]:
        for r in (r for r in res["rows"] if r["target"] == target):
            out.append(f"| {target} | {r['method']} | {r['auroc']:.3f} | {r['auroc_within']:.3f} | {r['mass_ratio']:.2f} | "
                       f"{r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} | {r['spearman_vs_shap']:.2f} | "
                       f"{r['topk_vs_shap']:.2f} | {r['randomisation_spearman']:.2f} | {r['forwards_per_point']:.0f} | "
                       f"{r['backwards_per_point']:.0f} | {1e3 * r['seconds_per_point']:.2f} | {r['throughput_vs_shap']:.0f} |")
        rnd = res["random_order"][target]
        out.append(f"| {target} | (random order) | | | | {rnd['deletion_auc']:.3f} | {rnd['insertion_auc']:.3f} |"
                   + " |" * 7)
    return "\n".join(out)


def main() -> None:
    res = json.loads((HERE / "results" / "explain.json").read_text())
    z = np.load(HERE / "results" / "explain.maps.npz")
    DOCS.mkdir(parents=True, exist_ok=True)
    targets = list(res["model_test_r2"])
    pick = [0, 5, 11, 17]  # four fixed points of the 64
    for t in ("V+", "V-"):
        maps = {m: z[f"{t}/{m}"][pick] for m in METHODS}
        fig = plot_method_maps(z["patches"][pick, 0], maps, masks=z[f"mask/{t}"][pick],
                               row_labels=[f"pt {p}" for p in z["points"][pick]])
        fig.suptitle(f"{t}: same points, every method (cyan: true causal region)", fontsize=9)
        fig.savefig(DOCS / f"explain_maps_{t.replace('+', 'plus').replace('-', 'minus')}.png", dpi=110)
    rows = res["rows"]
    for metric, ref in (("auroc", 0.5), ("auroc_within", 0.5), ("randomisation_spearman", 0.0)):
        vals = {t: {r["method"]: r[metric] for r in rows if r["target"] == t} for t in targets}
        plot_score_bars(vals, metric=metric, reference=ref).savefig(DOCS / f"explain_{metric}.png", dpi=110)
    print("wrote", sorted(p.name for p in DOCS.glob("explain_*.png")))
    print(markdown_tables(res))


if __name__ == "__main__":
    main()
