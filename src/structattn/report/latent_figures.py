"""Figures of loop latents: maps over the sample, traversals, surrogate R² per latent.

Every function takes arrays (no estimator, no file) and an optional matplotlib ``ax`` /
``axes``; it returns the figure it drew on. Numerical modules never import this one.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files and the HTML report
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _grid_image(values: np.ndarray, positions: np.ndarray) -> np.ndarray | None:
    """(R, C) image if `positions` (N, 2) form a full regular grid, else None."""
    rows, cols = np.unique(positions[:, 0]), np.unique(positions[:, 1])
    if rows.size * cols.size != positions.shape[0]:
        return None
    img = np.full((rows.size, cols.size), np.nan)
    img[np.searchsorted(rows, positions[:, 0]), np.searchsorted(cols, positions[:, 1])] = values
    return img


def plot_latent_maps(
    latents: np.ndarray,
    positions: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    image: np.ndarray | None = None,
    axes=None,
):
    """One map per latent over the sample.

    Args:
        latents: (N, L) latents.
        positions: (N, 2) (row, col) of the points in image pixels.
        names: (L,) titles; ``latent0`` ... by default.
        image: optional (H, W) structure image shown faintly underneath (scatter mode).
        axes: optional sequence of L axes.

    Points on a full regular grid are drawn as an image (like an SPM map); otherwise as a
    scatter over the structure image.
    """
    z = np.asarray(latents, dtype=float)
    pos = np.asarray(positions, dtype=float)
    if z.ndim != 2 or pos.shape != (z.shape[0], 2):
        raise ValueError(f"latents/positions: expected (N, L) and (N, 2), got {z.shape} and {pos.shape}")
    n_lat = z.shape[1]
    names = list(names) if names is not None else [f"latent{i}" for i in range(n_lat)]
    if axes is None:
        fig, axes = plt.subplots(1, n_lat, figsize=(3.2 * n_lat, 3.0), squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    for j, ax in enumerate(axes[:n_lat]):
        # colour limits at the 2nd/98th percentile: measured latents have a few extreme points
        lo, hi = np.nanpercentile(z[:, j], [2, 98])
        grid = _grid_image(z[:, j], pos) if image is None else None
        if grid is not None:
            extent = (pos[:, 1].min(), pos[:, 1].max(), pos[:, 0].max(), pos[:, 0].min())
            im = ax.imshow(grid, cmap="RdBu_r", extent=extent, interpolation="nearest", vmin=lo, vmax=hi)
        else:
            if image is not None:
                ax.imshow(np.asarray(image), cmap="gray", alpha=0.5)
            im = ax.scatter(pos[:, 1], pos[:, 0], c=z[:, j], s=8, cmap="RdBu_r", vmin=lo, vmax=hi)
            ax.set_ylim(ax.get_ylim()[::-1] if image is None else ax.get_ylim())
        ax.set_title(names[j])
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def plot_traversal(
    voltage: np.ndarray,
    loops: np.ndarray,
    values: np.ndarray,
    *,
    name: str = "latent",
    ax=None,
):
    """Decoded loops along one latent's traversal, coloured by the latent value.

    Args:
        voltage: (V,) waveform.
        loops: (S, V) decoded loops (from `structattn.latent.traverse`).
        values: (S,) latent values of the steps.
        name: latent name for the title and colour bar.
        ax: optional axes.
    """
    v = np.asarray(voltage, dtype=float)
    x = np.asarray(loops, dtype=float)
    vals = np.asarray(values, dtype=float)
    if x.ndim != 2 or x.shape[1] != v.shape[0] or vals.shape != (x.shape[0],):
        raise ValueError(f"loops/values: expected (S, V={v.shape[0]}) and (S,), got {x.shape} and {vals.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.0))
    cmap = plt.get_cmap("viridis")
    span = np.ptp(vals) or 1.0
    for loop, val in zip(x, vals):
        ax.plot(v, loop, color=cmap((val - vals.min()) / span), lw=1.2)
    sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(vals.min(), vals.max()))
    ax.figure.colorbar(sm, ax=ax, fraction=0.046, pad=0.04, label=name)
    ax.set_xlabel("bias (V)")
    ax.set_ylabel("response (a.u.)")
    ax.set_title(f"traversal of {name}")
    return ax.figure


def plot_r2_per_latent(r2: Sequence[float], names: Sequence[str], *, ax=None):
    """Bar chart of the surrogate's test R² per latent."""
    r2 = np.asarray(r2, dtype=float)
    if r2.shape != (len(names),):
        raise ValueError(f"r2: expected one value per name ({len(names)}), got shape {r2.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.8 * len(names), 3.0))
    ax.bar(range(len(names)), r2, color="tab:blue")
    ax.set_xticks(range(len(names)), list(names))
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(min(0.0, float(np.nanmin(r2)) - 0.05), 1.0)
    ax.set_ylabel("test R²")
    ax.set_title("surrogate: structure -> latent")
    return ax.figure


def plot_recon_errors(errors: dict[str, float], *, ax=None, ylabel: str = "reconstruction MSE"):
    """Bar chart comparing reconstruction errors of the latent models (e.g. VAE/PCA/NMF)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.0))
    keys = list(errors)
    ax.bar(range(len(keys)), [errors[k] for k in keys], color=["tab:red", "tab:gray", "tab:green"][: len(keys)])
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel(ylabel)
    return ax.figure


def plot_maps_per_latent(maps: dict[str, np.ndarray], *, method: str = "attention", axes=None):
    """Mean explanation map per latent: {latent name: (w, w)} drawn side by side."""
    names = list(maps)
    if not names:
        raise ValueError("maps: expected at least one {latent: (w, w)} entry, got none")
    if axes is None:
        fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.0), squeeze=False)
        axes = axes[0]
    for ax, name in zip(axes, names):
        m = np.asarray(maps[name], dtype=float)
        if m.ndim != 2:
            raise ValueError(f"maps[{name!r}]: expected a (w, w) map, got shape {m.shape}")
        im = ax.imshow(m, cmap="magma")
        ax.set_title(f"{method}: {name}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return axes[0].figure


def latent_figures(
    summary: dict,
    positions: np.ndarray,
    *,
    r2: dict[str, float] | None = None,
    mean_maps: dict[str, dict[str, np.ndarray]] | None = None,
) -> list[tuple[str, object]]:
    """All figures of the report's latent section as (caption, Figure) pairs.

    Args:
        summary: the arrays of ``latent.npz`` (see `structattn.latent.latent_summary`).
        positions: (N, 2) point positions.
        r2: {latent name: surrogate test R²} for the latents the ViT learned.
        mean_maps: {method: {latent name: (w, w) mean map over explained points}}.
    """
    names = [str(n) for n in np.asarray(summary["names"]).tolist()]
    kind = str(summary["kind"])
    figs: list[tuple[str, object]] = [
        (f"{kind.upper()} latents over the sample (colour limits at the 2nd/98th percentile)",
         plot_latent_maps(summary["latents"], positions, names=names)),
    ]
    n = len(names)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.0), squeeze=False)
    for j in range(n):
        plot_traversal(summary["voltage"], summary["traversals"][j], summary["traversal_values"][j],
                       name=names[j], ax=axes[0][j])
    fig.tight_layout()
    figs.append(("Latent traversals: decoded loops while one latent moves over mean ± 2 std (others at "
                 "their mean); read each latent as this change of loop shape", fig))
    if r2:
        figs.append(("Surrogate: test R² of the ViT per latent",
                     plot_r2_per_latent([r2[k] for k in r2], list(r2))))
    for method, per in (mean_maps or {}).items():
        figs.append((f"Mean {method} map per latent over the explained points (which structures each latent "
                     "is read from)", plot_maps_per_latent(per, method=method)))
    return figs
