"""Figures for explanations: side-by-side maps, deletion/insertion curves, score bars.

Every function takes arrays (no models, no files) and draws on a given ``ax`` (or
``axes``) or, when none is given, on a new `matplotlib.figure.Figure` (no pyplot global
state, so it works headless and in threads). Each returns the figure it drew on.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure


def _new_axes(rows: int, cols: int, *, size: float = 1.6):
    fig = Figure(figsize=(cols * size, rows * size), layout="constrained")
    return fig, np.atleast_2d(fig.subplots(rows, cols, squeeze=False))


def plot_map(attribution: np.ndarray, *, image: np.ndarray | None = None, mask: np.ndarray | None = None,
             title: str | None = None, ax=None):
    """One (w, w) map, optionally over a (w, w) structure image and with the mask outlined."""
    a = np.asarray(attribution, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"attribution: expected a (w, w) map, got shape {a.shape}")
    fig = ax.figure if ax is not None else Figure(figsize=(2, 2))
    ax = ax if ax is not None else fig.add_subplot()
    mag = np.abs(a)  # ranking is by magnitude (see structattn.evaluate)
    if image is not None:
        ax.imshow(np.asarray(image), cmap="gray")
        ax.imshow(mag, cmap="magma", alpha=0.6)
    else:
        ax.imshow(mag, cmap="magma")
    if mask is not None:
        ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors="cyan", linewidths=0.8)
    c = a.shape[0] // 2
    ax.plot([c], [c], marker="+", color="white", ms=6)  # the measured point
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_method_maps(images: np.ndarray, maps_by_method: Mapping[str, np.ndarray], *,
                     masks: np.ndarray | None = None, row_labels: Sequence[str] | None = None, axes=None):
    """Grid: one row per point, the structure channel then every method's map.

    Args:
        images: (M, w, w) structure channel shown under the maps (e.g. PFM amplitude).
        maps_by_method: name -> (M, w, w) maps of the same points (magnitude shown).
        masks: optional (M, w, w) bool ground truth, outlined in cyan.
        row_labels: optional (M,) labels (e.g. point indices).
        axes: optional (M, 1 + n_methods) array of axes.
    """
    images = np.asarray(images)
    names = list(maps_by_method)
    m = len(images)
    for n in names:
        if np.shape(maps_by_method[n]) != images.shape:
            raise ValueError(f"maps_by_method[{n!r}]: expected shape {images.shape}, got {np.shape(maps_by_method[n])}")
    if axes is None:
        fig, axes = _new_axes(m, 1 + len(names))
    else:
        axes = np.atleast_2d(axes)
        fig = axes[0, 0].figure
    for i in range(m):
        axes[i, 0].imshow(images[i], cmap="gray")
        if masks is not None:
            axes[i, 0].contour(masks[i].astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]), fontsize=8)
        for j, n in enumerate(names):
            plot_map(maps_by_method[n][i], mask=None if masks is None else masks[i], ax=axes[i, j + 1],
                     title=n if i == 0 else None)
    axes[0, 0].set_title("structure", fontsize=8)
    return fig


def plot_curves(fraction: Sequence[float], curves_by_method: Mapping[str, Sequence[float]], *,
                kind: str = "deletion", ax=None):
    """Deletion or insertion curves (y) against the fraction of tokens changed (x)."""
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind: expected 'deletion' or 'insertion', got {kind!r}")
    fig = ax.figure if ax is not None else Figure(figsize=(3.5, 2.6), layout="constrained")
    ax = ax if ax is not None else fig.add_subplot()
    for name, c in curves_by_method.items():
        ax.plot(fraction, c, label=name, ls="--" if name in ("random", "_random") else "-", lw=1.2)
    ax.set_xlabel("fraction of tokens " + ("removed" if kind == "deletion" else "revealed"))
    ax.set_ylabel("normalised output gap" if kind == "deletion" else "output recovered")
    ax.set_title(kind, fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_score_bars(values: Mapping[str, Mapping[str, float]], *, metric: str, ax=None, reference: float | None = None):
    """Grouped bars: ``values[target][method]`` of one metric (e.g. AUROC), one group per target.

    Args:
        values: target -> method -> value.
        metric: axis label.
        reference: optional horizontal line (0.5 for AUROC, 0 for similarity).
    """
    targets = list(values)
    methods = list(dict.fromkeys(m for t in targets for m in values[t]))
    fig = ax.figure if ax is not None else Figure(figsize=(1.2 + 1.1 * len(targets), 2.8), layout="constrained")
    ax = ax if ax is not None else fig.add_subplot()
    width = 0.8 / max(len(methods), 1)
    for j, m in enumerate(methods):
        ax.bar(np.arange(len(targets)) + (j - (len(methods) - 1) / 2) * width,
               [values[t].get(m, np.nan) for t in targets], width, label=m)
    if reference is not None:
        ax.axhline(reference, color="k", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(targets)), targets)
    ax.set_ylabel(metric)
    ax.legend(fontsize=6, ncol=2)
    return fig
