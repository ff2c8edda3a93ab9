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


def r2_bars(r2: np.ndarray, *, targets: list[str], models: list[str], threshold: float | None = 0.1,
            floor: float = -0.5, ax=None):
    """Grouped bars of test R²: one group per target, one bar per model (ViT and its baselines).

    Args:
        r2: (K, M) R² of target k by model m; NaN where a model was not run (no bar).
        targets: (K,) target names (x tick labels).
        models: (M,) model names (legend), e.g. ["ViT", "mean", "ridge", "position", "CNN"].
        threshold: optional dotted line: the least R² that counts as learned.
        floor: lower y limit; bars below it are cut there and labelled with their value (a
            very negative R² would otherwise flatten every other bar).
    """
    r2 = np.asarray(r2, dtype=float)
    if r2.ndim != 2 or r2.shape != (len(targets), len(models)):
        raise ValueError(f"r2: expected shape (len(targets), len(models)) = ({len(targets)}, {len(models)}), "
                         f"got {r2.shape}")
    ax = _ax(ax, (1.6 + 1.3 * len(targets), 3.2))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(targets))
    for j, name in enumerate(models):
        pos = x + (j - (len(models) - 1) / 2) * width
        vals = r2[:, j]
        ax.bar(pos, np.maximum(vals, floor), width, label=name,
               color="#222222" if j == 0 else None, zorder=2)  # the ViT first, in black
        for xp, v in zip(pos[vals < floor], vals[vals < floor]):  # cut bars: say how far down they go
            ax.text(xp, floor + 0.02, f"{v:.2g}", rotation=90, ha="center", va="bottom", fontsize=6,
                    color="white" if j == 0 else "black", zorder=3)
    ax.axhline(0, color="k", lw=0.6)
    if threshold is not None:
        ax.axhline(threshold, color="#c0392b", lw=0.8, ls=":", label=f"learned needs R² ≥ {threshold:g}")
    top = np.nanmax(r2) if np.isfinite(r2).any() else 1.0
    ax.set_ylim(floor, max(1.0, top) + 0.05)
    ax.set_xticks(x, targets)
    ax.set_ylabel("test R²")
    ax.legend(fontsize=7, ncol=min(len(models) + 1, 6), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return ax


def training_curves(epochs: list[dict], names: list[str], *, best_epoch: int | None = None, axes=None):
    """Loss curves of a fit history (`metrics.json` → training.epochs): the training and validation
    loss, and each target's validation MSE (dotted while its term was out of the loss). Two axes."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    e = np.array([r["epoch"] for r in epochs])
    axes[0].semilogy(e, [r["train_loss"] for r in epochs], label="training loss")
    axes[0].semilogy(e, [r["val_loss"] for r in epochs], label="validation MSE (mean over targets)")
    axes[0].set_title("loss (standardised targets)")
    if all("val_mse" in r for r in epochs) and epochs:
        mse = np.array([r["val_mse"] for r in epochs], dtype=float)
        frozen = np.array([r.get("frozen") or [False] * mse.shape[1] for r in epochs], dtype=bool)
        out = np.vstack([np.zeros((1, mse.shape[1]), bool), frozen[:-1]])  # epoch i ran with frozen[i-1]
        for k, n in enumerate(names[:mse.shape[1]]):
            (line,) = axes[1].semilogy(e, np.where(out[:, k], np.nan, mse[:, k]), label=n)
            if out[:, k].any():
                axes[1].semilogy(e, mse[:, k], ls=":", color=line.get_color())
        axes[1].axhline(1.0, color="grey", lw=0.8)  # the training mean's MSE, roughly
        axes[1].set_title("validation MSE per target (dotted: left out of the loss)")
        axes[1].legend(fontsize=7, ncol=2)
    else:
        axes[1].set_axis_off()
    for ax in axes:
        if best_epoch is not None and best_epoch >= 0:
            ax.axvline(best_epoch, color="k", ls="--", lw=0.8)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    return axes
