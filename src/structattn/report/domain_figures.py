"""Figures for domain segmentation and attribution-by-domain statistics.

Every function takes plain arrays and an optional matplotlib ``ax`` and returns the
axes it drew on; none of them saves files (the caller decides).
"""

from __future__ import annotations

import numpy as np

# Fixed colours per class name so figures agree across images and runs.
CLASS_COLORS = {
    "c+": (0.84, 0.30, 0.22),
    "c-": (0.22, 0.42, 0.84),
    "a": (0.96, 0.82, 0.20),
    "wall_cc": (0.05, 0.05, 0.05),
    "wall_ac": (0.25, 0.70, 0.35),
    "wall": (0.60, 0.60, 0.60),
}
_FALLBACK = [(0.55, 0.35, 0.65), (0.9, 0.5, 0.1), (0.3, 0.8, 0.8), (0.7, 0.7, 0.3)]


def class_colors(names) -> np.ndarray:
    """(L, 3) RGB colour per class name (fixed for known names)."""
    out, k = [], 0
    for n in names:
        if n in CLASS_COLORS:
            out.append(CLASS_COLORS[n])
        else:
            out.append(_FALLBACK[k % len(_FALLBACK)])
            k += 1
    return np.asarray(out, dtype=float)


def _ax(ax, figsize=(4, 4)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_segmentation(labels: np.ndarray, names, *, ax=None, title: str | None = None, legend: bool = True,
                      extent=None):
    """Draw an (H, W) label image with fixed class colours and a legend with area shares.

    Args:
        labels: (H, W) int, indices into `names`.
        names: (L,) class names.
        ax: axes to draw on (new figure if None).
        title: optional title.
        legend: add a legend with each class's area share.
        extent: optional imshow extent, e.g. (0, width_um, height_um, 0).
    """
    from matplotlib.patches import Patch

    ax = _ax(ax)
    lab = np.asarray(labels)
    cols = class_colors(names)
    ax.imshow(cols[lab], interpolation="nearest", extent=extent)
    if legend:
        frac = np.bincount(lab.ravel(), minlength=len(names)) / lab.size
        handles = [Patch(color=cols[i], label=f"{n} ({100 * frac[i]:.0f}%)") for i, n in enumerate(names)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_channel(image2d: np.ndarray, *, ax=None, title: str | None = None, cmap: str = "gray", extent=None):
    """Draw one structure channel with a 1-99 percentile colour range."""
    ax = _ax(ax)
    arr = np.asarray(image2d, dtype=float)
    lo, hi = np.percentile(arr, [1, 99])
    ax.imshow(arr, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", extent=extent)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_enrichment(names, enrichment: np.ndarray, ci: np.ndarray, *, ax=None, title: str | None = None,
                    groups: dict | None = None):
    """Enrichment per class on a log axis with its interval; 1 = proportional to area.

    Args:
        names: (L,) class names.
        enrichment: (L,) enrichment values.
        ci: (L, 2) interval (low, high).
        ax: axes (new figure if None).
        title: optional title.
        groups: optional extra series ``{label: (enrichment (L,), ci (L, 2))}`` drawn beside
            the main one (e.g. low vs high property points).
    """
    ax = _ax(ax, figsize=(4.5, 3))
    series = {"all": (np.asarray(enrichment, float), np.asarray(ci, float))}
    if groups:
        series.update({k: (np.asarray(v[0], float), np.asarray(v[1], float)) for k, v in groups.items()})
    x = np.arange(len(names))
    width = 0.8 / len(series)
    cols = class_colors(names)
    markers = ["o", "v", "^", "s", "D"]
    for j, (label, (e, c)) in enumerate(series.items()):
        off = (j - (len(series) - 1) / 2) * width
        ok = np.isfinite(e) & (e > 0)
        err = np.vstack([e - c[:, 0], c[:, 1] - e])
        for i in np.flatnonzero(ok):
            ax.errorbar(x[i] + off, e[i], yerr=np.clip(err[:, i : i + 1], 0, None), fmt=markers[j % 5],
                        color=cols[i], mec="k", mew=0.5, ecolor="k", elinewidth=0.8, capsize=2, ms=5)
        # Legend entry in neutral grey: the colour codes the class, the marker the group.
        ax.plot([], [], markers[j % 5], color="0.6", mec="k", mew=0.5, label=label)
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("enrichment (attribution / area)", fontsize=8)
    if len(series) > 1:
        ax.legend(fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_point_enrichment(positions: np.ndarray, values: np.ndarray, *, shape: tuple[int, int], ax=None,
                          background: np.ndarray | None = None, title: str | None = None, vmax: float = 4.0):
    """Per-point enrichment of one class as coloured dots over the image (log2 scale).

    Args:
        positions: (M, 2) (row, col) of the explained points.
        values: (M,) enrichment of one class per point; NaN (class absent) drawn hollow.
        shape: (H, W) of the image, for the axes.
        ax: axes (new figure if None).
        background: optional (H, W) grey image underneath (e.g. amplitude).
        title: optional title.
        vmax: colour range is log2 in [-log2 vmax, +log2 vmax].
    """
    ax = _ax(ax)
    pos = np.asarray(positions, float)
    v = np.asarray(values, float)
    if background is not None:
        plot_channel(background, ax=ax)
    else:
        ax.imshow(np.ones(shape), cmap="gray", vmin=0, vmax=1)
    lim = float(np.log2(vmax))
    ok = np.isfinite(v) & (v > 0)
    lv = np.full_like(v, -lim)
    lv[ok] = np.clip(np.log2(v[ok]), -lim, lim)
    sc = ax.scatter(pos[ok, 1], pos[ok, 0], c=lv[ok], cmap="RdBu_r", vmin=-lim, vmax=lim, s=8, edgecolors="none")
    zero = np.isfinite(v) & (v == 0)
    ax.scatter(pos[zero, 1], pos[zero, 0], c=[[0.13, 0.4, 0.67]], s=8, edgecolors="none")
    ax.scatter(pos[~np.isfinite(v), 1], pos[~np.isfinite(v), 0], facecolors="none", edgecolors="0.6", s=6, lw=0.4)
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    cb = ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label("log2 enrichment", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_enrichment_matrix(row_labels, names, enrichment: np.ndarray, ci: np.ndarray, *, ax=None,
                           title: str | None = None, vmax: float = 4.0):
    """Heatmap of log2 enrichment: rows (e.g. "method / target") x domain classes.

    Each cell shows the enrichment; ``*`` marks an interval excluding 1 (enriched or
    depleted), blank cells are classes absent from every patch.

    Args:
        row_labels: (R,) labels of the rows.
        names: (L,) class names.
        enrichment: (R, L) enrichment values.
        ci: (R, L, 2) intervals.
        ax: axes (new figure if None).
        title: optional title.
        vmax: colour range is log2 in [-log2 vmax, +log2 vmax].
    """
    e = np.asarray(enrichment, float)
    c = np.asarray(ci, float)
    ax = _ax(ax, figsize=(1.2 + 0.8 * len(names), 0.6 + 0.35 * len(row_labels)))
    lim = float(np.log2(vmax))
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.clip(np.log2(e), -lim, lim)
    im = ax.imshow(np.ma.masked_invalid(lv), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for r in range(e.shape[0]):
        for k in range(e.shape[1]):
            if not np.isfinite(e[r, k]):
                continue
            sig = (c[r, k, 0] > 1.0) or (c[r, k, 1] < 1.0)
            ax.text(k, r, f"{e[r, k]:.2f}{'*' if sig else ''}", ha="center", va="center", fontsize=7,
                    color="white" if abs(lv[r, k]) > 0.6 * lim else "black")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticks(np.arange(len(row_labels)))
    ax.set_yticklabels(row_labels, fontsize=8)
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label("log2 enrichment", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def domain_section_figures(
    *,
    labels: np.ndarray,
    names,
    background: np.ndarray,
    positions: np.ndarray,
    rows,
    enrichment: np.ndarray,
    ci: np.ndarray,
    per_point: np.ndarray,
    split: tuple | None = None,
    row_for_maps: int = 0,
) -> dict:
    """The figures of the report's domain section, from arrays.

    Args:
        labels: (H, W) int segmentation; names: (L,) its classes.
        background: (H, W) structure channel shown under the segmentation (e.g. amplitude).
        positions: (M, 2) explained points.
        rows: (R,) row labels, e.g. ``"attention / V+"``.
        enrichment: (R, L); ci: (R, L, 2).
        per_point: (M, L) per-point enrichment of the row `row_for_maps`.
        split: optional ``(label_low, e_low (L,), ci_low (L, 2), label_high, e_high, ci_high)``
            for the row `row_for_maps`.
        row_for_maps: which row the per-class maps and the split show.

    Returns:
        ``{"segmentation", "enrichment", "class_maps", "split"?: matplotlib Figure}``; the
        caller saves and closes them.
    """
    import matplotlib.pyplot as plt

    figs = {}
    fig, axs = plt.subplots(1, 2, figsize=(8.5, 3.6))
    plot_channel(background, ax=axs[0], title="structure")
    plot_segmentation(labels, names, ax=axs[1], title="domain classes")
    fig.tight_layout()
    figs["segmentation"] = fig

    fig, ax = plt.subplots(figsize=(1.8 + 0.9 * len(names), 0.9 + 0.32 * len(rows)))
    plot_enrichment_matrix(list(rows), names, enrichment, ci, ax=ax,
                           title="attribution / area per class (* = 95% CI excludes 1)")
    fig.tight_layout()
    figs["enrichment"] = fig

    n = len(names)
    cols = min(n, 3)
    nrows = int(np.ceil(n / cols))
    fig, axs = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False)
    for k, name in enumerate(names):
        plot_point_enrichment(positions, per_point[:, k], shape=labels.shape, ax=axs.flat[k],
                              background=background, title=f"{name}: {rows[row_for_maps]}")
    for ax in list(axs.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    figs["class_maps"] = fig

    if split is not None:
        lab_lo, e_lo, ci_lo, lab_hi, e_hi, ci_hi = split
        fig, ax = plt.subplots(figsize=(1.5 + 0.8 * n, 3.2))
        plot_enrichment(names, enrichment[row_for_maps], ci[row_for_maps], ax=ax,
                        groups={lab_lo: (e_lo, ci_lo), lab_hi: (e_hi, ci_hi)}, title=str(rows[row_for_maps]))
        fig.tight_layout()
        figs["split"] = fig
    return figs
