"""Figures of the loop analysis: descriptor maps, fit-quality map, example fits.

Plots take arrays and an optional ``ax``; nothing here computes loop physics.
Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state).
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_map", "descriptor_maps_figure", "fit_quality_figure", "example_fits_figure", "pick_example_fits"]


def plot_map(values: np.ndarray, shape: tuple[int, int], *, ax, title: str = "", mask: np.ndarray | None = None, cmap: str = "viridis", unit: str = ""):
    """Show (N,) values on a (rows, cols) grid; points with ``mask`` False are greyed.

    Args:
        values: (N,) values, row-major over ``shape``.
        shape: (rows, cols).
        ax: matplotlib axes to draw on.
        title: axes title.
        mask: (N,) bool, True where the value is trustworthy.
        cmap: colour map.
        unit: colour-bar label.

    Returns:
        The image artist.
    """
    img = np.asarray(values, dtype=float).reshape(shape).copy()
    if mask is not None:
        img = np.ma.masked_where(~np.asarray(mask, dtype=bool).reshape(shape) | ~np.isfinite(img), img)
    finite = np.asarray(img[np.isfinite(img)] if mask is None else img.compressed())
    vmin, vmax = (np.percentile(finite, [2, 98]) if finite.size else (None, None))
    cm = matplotlib.colormaps[cmap].with_extremes(bad="0.8")  # greyed: untrustworthy points
    im = ax.imshow(img, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=unit)
    return im


def descriptor_maps_figure(values: dict, shape: tuple[int, int], *, names, units: dict | None = None, quality: np.ndarray | None = None) -> Figure:
    """One map per descriptor, untrustworthy points greyed.

    Args:
        values: name -> (N,) descriptor values.
        shape: (rows, cols) of the grid.
        names: descriptors to show, in order.
        units: name -> unit string for the colour bars.
        quality: (N,) bool mask of trustworthy points.
    """
    names = list(names)
    ncol = min(3, len(names))
    nrow = int(np.ceil(len(names) / ncol))
    fig = Figure(figsize=(3.4 * ncol, 3.0 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        unit = (units or {}).get(name, "")
        plot_map(values[name], shape, ax=ax, title=name, mask=quality, unit=unit)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig


def fit_quality_figure(r2: np.ndarray, shape: tuple[int, int], *, quality: np.ndarray | None = None) -> Figure:
    """Map of the fit R² (clipped to [0, 1]) and its histogram."""
    fig = Figure(figsize=(7.0, 3.0), layout="constrained")
    ax_map, ax_hist = fig.subplots(1, 2)
    r = np.clip(np.nan_to_num(np.asarray(r2, dtype=float), nan=0.0), 0.0, 1.0)
    im = ax_map.imshow(r.reshape(shape), cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax_map.set_title(f"fit R² (median {np.median(r):.3f})", fontsize=9)
    ax_map.set_xticks([])
    ax_map.set_yticks([])
    fig.colorbar(im, ax=ax_map, fraction=0.046, pad=0.04)
    ax_hist.hist(r, bins=40, range=(0, 1), color="0.4")
    if quality is not None:
        ax_hist.hist(r[np.asarray(quality, dtype=bool)], bins=40, range=(0, 1), color="tab:blue", alpha=0.7, label="trustworthy")
        ax_hist.legend(fontsize=8)
    ax_hist.set_xlabel("R²")
    ax_hist.set_ylabel("loops")
    return fig


def pick_example_fits(r2: np.ndarray, *, quality: np.ndarray | None = None, count: int = 6) -> np.ndarray:
    """Indices of example loops spread over the R² range (best, median, worst trustworthy, ...)."""
    r = np.nan_to_num(np.asarray(r2, dtype=float), nan=-np.inf)
    pool = np.flatnonzero(quality) if quality is not None and np.any(quality) else np.arange(r.size)
    order = pool[np.argsort(r[pool])[::-1]]
    picks = np.unique(np.linspace(0, order.size - 1, min(count, order.size)).round().astype(int))
    return order[picks]


def example_fits_figure(voltage: np.ndarray, loops: np.ndarray, fitted: np.ndarray | None, *, indices, r2: np.ndarray | None = None, raw: np.ndarray | None = None) -> Figure:
    """Measured (clean) loops with their fits, one panel per index.

    Args:
        voltage: (V,) bias.
        loops: (N, V) clean loops.
        fitted: (N, V) fitted loops, or None.
        indices: loops to show.
        r2: (N,) fit R² for the titles.
        raw: (N, V) loops before spike repair, drawn faintly where they differ.
    """
    idx = list(indices)
    ncol = min(3, max(1, len(idx)))
    nrow = int(np.ceil(len(idx) / ncol)) or 1
    fig = Figure(figsize=(3.4 * ncol, 2.6 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, i in zip(axes, idx):
        if raw is not None:
            bad = raw[i] != loops[i]
            ax.plot(voltage[bad], loops[i][bad], "x", color="tab:red", ms=5, label="repaired")
        ax.plot(voltage, loops[i], ".", color="0.3", ms=4, label="measured")
        if fitted is not None:
            ax.plot(voltage, fitted[i], "-", color="tab:blue", lw=1.2, label="9-param fit")
        title = f"point {i}" + (f", R² {r2[i]:.3f}" if r2 is not None and np.isfinite(r2[i]) else "")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("bias [V]", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(idx):]:
        ax.set_visible(False)
    if idx:
        axes[0].legend(fontsize=7)
    return fig
