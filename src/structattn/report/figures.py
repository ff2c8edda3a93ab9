"""Core figures. Each takes arrays and an optional ``ax`` and returns the axes."""

from __future__ import annotations

import numpy as np
import matplotlib.pyplot as plt

SPLIT_COLOURS = {0: ("train", "#1f77b4"), 1: ("validation", "#ff7f0e"), 2: ("test", "#d62728"), -1: ("unused", "#999999")}


def _ax(ax, size=(5, 5)):
    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


def structure_with_split(image: np.ndarray, positions: np.ndarray, split: np.ndarray, *, title: str = "", ax=None):
    """One image channel (H, W) with the points coloured by split part."""
    ax = _ax(ax)
    ax.imshow(image, cmap="gray")
    for part, (name, colour) in SPLIT_COLOURS.items():
        sel = split == part
        if sel.any():
            ax.scatter(positions[sel, 1], positions[sel, 0], s=6, c=colour, label=f"{name} ({int(sel.sum())})")
    ax.legend(loc="upper right", fontsize=7, markerscale=2)
    ax.set_title(title)
    ax.set_axis_off()
    return ax


def point_map(image: np.ndarray, positions: np.ndarray, values: np.ndarray, *, title: str = "", unit: str = "",
              ax=None, cmap: str = "viridis"):
    """Values at the points drawn over a faint structure channel."""
    ax = _ax(ax)
    ax.imshow(image, cmap="gray", alpha=0.5)
    sc = ax.scatter(positions[:, 1], positions[:, 0], c=values, s=10, cmap=cmap)
    plt.colorbar(sc, ax=ax, fraction=0.046, label=unit)
    ax.set_title(title)
    ax.set_axis_off()
    return ax


def parity(y_true: np.ndarray, y_pred: np.ndarray, *, title: str = "", unit: str = "", r2: float | None = None, ax=None):
    """Predicted against measured on test points, with the identity line."""
    ax = _ax(ax, (4, 4))
    ax.scatter(y_true, y_pred, s=8, alpha=0.7)
    lo, hi = float(np.nanmin([y_true.min(), y_pred.min()])), float(np.nanmax([y_true.max(), y_pred.max()]))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"measured {unit}")
    ax.set_ylabel(f"predicted {unit}")
    ax.set_title(title + (f"  R²={r2:.3f}" if r2 is not None else ""))
    return ax


def overlay(patch: np.ndarray, attribution: np.ndarray, *, mask: np.ndarray | None = None, title: str = "", ax=None):
    """A (w, w) structure patch with an attribution map on top; optional causal-region contour."""
    ax = _ax(ax, (2.5, 2.5))
    ax.imshow(patch, cmap="gray")
    ax.imshow(np.abs(attribution), cmap="inferno", alpha=0.55)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
    w = patch.shape[0]
    ax.plot([w // 2], [w // 2], "+", color="lime", ms=8)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return ax
