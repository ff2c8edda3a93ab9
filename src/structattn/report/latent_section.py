"""Report section of `--targets latent` runs: latent maps, traversals, surrogate R² and
explanation maps per latent. Registered on import (see `structattn.report.html.render_report`)."""

from __future__ import annotations

import html

import numpy as np

from .base import fig_to_html, register_section, table_html


@register_section(45, "Unsupervised loop latents")
def latent_section(ctx) -> str | None:
    path = ctx.run.path / "latent.npz"
    if not path.is_file():
        return None
    from .latent_figures import latent_figures

    with np.load(path) as f:
        summ = {k: f[k] for k in f.files}
    names = [str(n) for n in summ["names"].tolist()]
    learned = ctx.run.metrics.get("targets", {})
    r2 = {n: float(learned[n]["r2"]) for n in names if n in learned}
    with ctx.run.open_explanations() as (_, maps):  # mean |map| read a chunk of points at a time
        mean_maps = {
            method: {n: _mean_abs(per[n]) for n in names if n in per and len(per[n])}
            for method, per in maps.items()
        }
    mean_maps = {m: v for m, v in mean_maps.items() if v}
    kind = str(summ["kind"])
    rows = [[kind.upper(), float(summ["recon_error"]), float(summ["recon_error_rel"]), float(summ["recon_error_heldout"])]]
    if "baseline_kind" in summ:
        rows.append([str(summ["baseline_kind"]).upper() + " (same size)", float(summ["baseline_recon_error"]),
                     float(summ["baseline_recon_error_rel"]), float(summ["baseline_recon_error_heldout"])])
    parts = [
        f"<p class='note'>{html.escape(kind.upper())} with {len(names)} latents, fitted on the training split's "
        "loops only (no labels); the ViT then learned the latents from the structure patch. "
        "Relative error: share of per-loop-centred loop variance not reconstructed; held-out: points outside "
        "the training split.</p>",
        table_html(["loop model", "reconstruction MSE", "relative", "MSE held-out"], rows),
    ]
    if "kl_per_latent" in summ:
        kl = html.escape(", ".join(f"{n}: {k:.3f}" for n, k in zip(names, summ["kl_per_latent"])))
        parts.append(f"<p class='note'>KL per latent (nats; &lt; 0.01 = inactive, carries no information): {kl}</p>")
    if r2:
        kl = dict(zip(names, summ["kl_per_latent"])) if "kl_per_latent" in summ else {}
        # R² is scale-free: an inactive latent's tiny residual variation can still be "predicted"
        rows_r2 = [[n, v, ("yes" if kl[n] >= 0.01 else "no (ignore its R²)") if n in kl else "-"] for n, v in r2.items()]
        parts.append(table_html(["latent", "surrogate test R²", "active"], rows_r2))
    shared = [m for m, per in mean_maps.items()
              if len(per) > 1 and all(np.array_equal(v, next(iter(per.values()))) for v in per.values())]
    if shared:
        parts.append(f"<p class='note'>{html.escape(', '.join(shared))}: one map for all outputs (target-agnostic, "
                     "like raw [CLS] attention), so it cannot separate latents; use a target-specific method "
                     "(e.g. gradient-weighted attention, integrated gradients) to see per-latent structures.</p>")
    for caption, fig in latent_figures(summ, ctx.sample.positions, r2=r2 or None, mean_maps=mean_maps or None):
        parts.append(f"<p class='note'>{html.escape(caption)}</p>" + fig_to_html(fig, alt=caption))
    return "".join(parts)


def _mean_abs(ds, chunk: int = 1024) -> np.ndarray:
    """Mean over points of |maps| for an (M, w, w) array or h5py dataset, `chunk` points at a time."""
    total = np.zeros(ds.shape[1:])
    for i in range(0, len(ds), chunk):
        total += np.abs(np.asarray(ds[i:i + chunk], np.float64)).sum(0)
    return total / len(ds)
