"""The core report sections: accuracy against baselines, target maps, parity, attribution gallery."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np

from ..data.patches import extract_patches
from ..data.truth import truth_masks
from ..evaluate.faithful import RANDOMISATION_FAIL, faithful_method, rank_methods
from . import figures
from .base import fig_to_html, not_learned_warning, register_section, table_html
from ..train.baselines import MIN_R2 as LEARNED_MIN_R2
from ..train.trainer import describe_training
from .summary import faithfulness_phrase, judged_ensemble, judged_r2, unlearned_targets


BASELINE_COLUMNS = (("mean", "mean"), ("ridge", "ridge"), ("position", "position"), ("cnn", "CNN"))  # key, header
BASELINES_NOTE = (
    "Every target is also fitted by baselines on the same split: <b>mean</b>, the training mean (R² about 0 "
    "or below); <b>ridge</b>, ridge regression on the standardised patch pixels, penalty chosen on the "
    "validation blocks; <b>position</b>, a smooth function of the point's coordinates only (is the property "
    "just a spatial trend?); <b>CNN</b>, a small CNN trained by the same trainer. A target counts as "
    "<b>learned</b> when the ViT's test R² is at least {min_r2:g} and at least the best baseline's R² plus "
    "the margin."
)


def _baseline_keys(targets: dict) -> list[str]:
    """Baseline names in display order: the known four first, then any others the run wrote."""
    seen = list(dict.fromkeys(k for t in targets.values() for k in (t.get("baselines") or {})))
    return [k for k, _ in BASELINE_COLUMNS if k in seen] + [k for k in seen if k not in dict(BASELINE_COLUMNS)]


def _learned_cell(t: dict) -> str:
    return "" if "learned" not in t else ("yes" if t["learned"] else "NO")


@register_section(10, "Accuracy on held-out spatial blocks")
def overview(ctx) -> str:
    m = ctx.run.metrics
    targets = m["targets"]
    keys = _baseline_keys(targets)
    if keys:  # issue 12: the ViT next to its baselines, and the verdict
        labels = dict(BASELINE_COLUMNS)
        rows = [[name, judged_r2(s)] + [(s.get("baselines") or {}).get(k) for k in keys]
                + [s.get("margin"), _learned_cell(s), s.get("verdict", ""),
                   f"{s['mae']:.3g} {s.get('unit', '')}".strip(), s["n"]] for name, s in targets.items()]
        out = f"<p>{BASELINES_NOTE.format(min_r2=LEARNED_MIN_R2)}</p>"
        if any(judged_ensemble(s) for s in targets.values()):
            out += ("<p class='note'>--verdict ensemble: the ViT column is the test R² of the ensemble's mean, and "
                    "the CNN's is the mean of as many CNNs (the primary ViT's own R² is in the uncertainty "
                    "section).</p>")
        out += table_html(["target", "ViT R²"] + [labels.get(k, k) for k in keys]
                          + ["margin", "learned", "verdict", "ViT test MAE", "test points"], rows,
                          row_classes=["unlearned" if s.get("learned") is False else None for s in targets.values()])
        r2 = np.array([[judged_r2(s)] + [np.nan if (s.get("baselines") or {}).get(k) is None else s["baselines"][k]
                                    for k in keys] for s in targets.values()], dtype=float)
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(targets), 3.2))
        figures.r2_bars(r2, targets=list(targets), models=["ViT"] + [labels.get(k, k) for k in keys],
                        threshold=LEARNED_MIN_R2, ax=ax)
        out += fig_to_html(fig, alt="test R² of the ViT and its baselines")
    else:  # older runs: no baselines were fitted
        rows = [[name, s["r2"], s["mae"], s.get("unit", ""), s["n"]] for name, s in targets.items()]
        out = table_html(["target", "test R²", "test MAE", "unit", "test points"], rows)
        out += "<p class='note'>This run has no baselines (older run folder): nothing says whether the ViT learned.</p>"
    out += (f"<p class='note'>split: {html.escape(str(m['split']['description']))}. "
            f"Why blocks: {html.escape(str(m['split']['why']))}.</p>")
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


@register_section(32, "How the ViT trained")
def training(ctx) -> str | None:
    t = ctx.run.metrics.get("training") or {}
    if not t.get("epochs"):
        return None
    names = list(ctx.run.metrics.get("targets", {}))
    out = "".join(f"<p>{html.escape(line)}</p>" for line in describe_training(t, names))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    figures.training_curves(t["epochs"], names, best_epoch=t.get("best_epoch"), axes=axes)
    fig.tight_layout()
    return out + fig_to_html(fig, alt="training and validation loss per epoch")


def gallery_choice(metrics: dict, methods: list[str]) -> tuple[str | None, str | None, str]:
    """(method, target, why) for the gallery: the most faithful method of the first learned target.

    Falls back to the first target when none was learned, and to raw attention (or the first
    method explained) when the run has no scores or no method qualifies; `why` says which.
    """
    targets = list(metrics.get("targets", {}))
    scores = (metrics.get("explanations") or {}).get("scores") or {}
    learned = [t for t in targets if metrics["targets"][t].get("learned") is not False]
    target = next((t for t in learned + targets if t in scores), targets[0] if targets else None)
    fallback = "attention" if "attention" in methods else (methods[0] if methods else None)
    if not scores or target not in scores:
        return fallback, target, ("this run scored no explanation methods, so none is known to be faithful; "
                                  f"showing {fallback}")
    best = faithful_method(scores[target])
    if best is None or best not in methods:
        return fallback, target, (f"no method is faithful on this run for {target} (each fails the randomisation "
                                  f"check or lacks deletion/insertion scores); showing {fallback} as a picture, "
                                  "not as evidence")
    row = next(r for r in rank_methods(scores[target]) if r["method"] == best)
    rho = row["randomisation_spearman"]
    before = [t for t in targets[:targets.index(target)] if t not in learned]
    skipped = f"; {', '.join(before)} not learned, so the first learned target is shown" if before else ""
    return best, target, (f"{best} is the most faithful method on this run for {target}: "
                          f"{faithfulness_phrase(row)}, and it passes the randomisation check "
                          f"(ρ {'n/a' if rho is None else f'{rho:.2f}'} < {RANDOMISATION_FAIL:g}){skipped}")


@register_section(40, "Attention on test points")
def attention_gallery(ctx) -> str | None:
    idx = ctx.run.explanation_index()
    if len(idx) == 0:
        return None
    cfg = ctx.run.config["run"]
    n = min(int(cfg.get("gallery", 8)), len(idx))
    pick = np.unique(np.linspace(0, len(idx) - 1, n).round().astype(int))
    n = len(pick)
    _, maps = ctx.run.explanations(rows=pick)  # only the gallery's points are read: maps[m][t][j] is pick[j]
    if not maps:
        return None
    m = ctx.run.metrics
    method, target, why = gallery_choice(m, list(maps))
    if method is None or method not in maps:
        return None
    if target not in maps[method]:
        target = next(iter(maps[method]))
    s = ctx.sample
    pad = "edge" if cfg["pad_mode"] == "exclude" else cfg["pad_mode"]
    patches = extract_patches(s.image, s.positions[idx[pick]], window=cfg["window"], pad_mode=pad)
    masks = truth_masks(s, target=target, window=cfg["window"], index=idx[pick])  # None without ground truth
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.6), squeeze=False)
    for j in range(n):
        figures.overlay(patches[j, 0], maps[method][target][j],
                        mask=None if masks is None else masks[j], title=f"point {idx[pick[j]]}", ax=axes[0, j])
    head = f"<h3>{html.escape(method)} on {html.escape(target)}</h3>"
    warn = ""
    unlearned = unlearned_targets(m)
    if target in unlearned:
        warn = not_learned_warning(target, unlearned[target])
    what = "last-layer [CLS] attention (head mean)" if method == "attention" else f"{html.escape(method)} attribution"
    note = (f"<p class='note'>Why this method: {html.escape(why)}. "
            f"Shown: |{what}| over the first channel; + marks the spectroscopy point"
            + (f"; cyan: the rule's causal region for {html.escape(target)}" if masks is not None else "") + ".</p>")
    return head + warn + note + fig_to_html(fig, alt=f"{method} gallery")
