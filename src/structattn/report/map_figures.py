"""Figures of uncertainty: reliability curve, dense property/uncertainty maps, where to measure next.

Each plotting function takes arrays and an optional ``ax`` and returns the axes; the
``*_png`` helpers build a whole figure and return PNG bytes (callers write them atomically).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _ax(ax, size=(4, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def reliability_plot(levels, observed: dict, *, ax=None, title: str = "test blocks"):
    """Observed against expected coverage of central intervals, one line per target.

    Args:
        levels: (L,) expected coverage levels in (0, 1).
        observed: {target: (L,) observed coverage}.
    """
    ax = _ax(ax)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for name, obs in observed.items():
        ax.plot(levels, obs, "o-", ms=3, lw=1.2, label=str(name))
    for lv in (0.68, 0.95):
        ax.axvline(lv, color="#999", lw=0.6, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("expected coverage of the central interval")
    ax.set_ylabel("observed coverage")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    return ax


def _extent(rows: np.ndarray, cols: np.ndarray) -> list[float]:
    """imshow extent putting grid value (i, j) on pixel (rows[i], cols[j])."""
    dr = float(rows[1] - rows[0]) if len(rows) > 1 else 1.0
    dc = float(cols[1] - cols[0]) if len(cols) > 1 else 1.0
    return [cols[0] - dc / 2, cols[-1] + dc / 2, rows[-1] + dr / 2, rows[0] - dr / 2]


def map_panel(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, title: str = "", unit: str = "",
              cmap: str = "viridis", ax=None):
    """One (R, Cc) grid map on the image's pixel coordinates, with a colour bar."""
    ax = _ax(ax)
    im = ax.imshow(values, cmap=cmap, extent=_extent(rows, cols), interpolation="nearest")
    cb = plt.colorbar(im, ax=ax, fraction=0.046, label=unit)
    cb.formatter.set_useOffset(False)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def property_maps(structure: np.ndarray, rows: np.ndarray, cols: np.ndarray, mean: dict, std: dict, *,
                  units: dict | None = None, channel: str = "structure", axes=None):
    """Per target, a row: structure | predicted property | its uncertainty (std).

    Args:
        structure: (H, W) one structure channel.
        rows, cols: the grid (pixel coordinates).
        mean: {target: (R, Cc)}; std: {target: (R, Cc)} or {} (no ensemble: no third column).
        units: {target: unit}.
    """
    names = list(mean)
    ncol = 3 if std else 2
    if axes is None:
        _, axes = plt.subplots(len(names), ncol, figsize=(4.2 * ncol, 3.8 * len(names)), squeeze=False)
    units = units or {}
    for k, t in enumerate(names):
        ax = axes[k][0]
        ax.imshow(structure, cmap="gray")
        ax.set_title(f"{channel}", fontsize=9)
        ax.set_axis_off()
        map_panel(mean[t], rows, cols, title=f"{t}: predicted", unit=units.get(t, ""), ax=axes[k][1])
        if std:
            map_panel(std[t], rows, cols, title=f"{t}: uncertainty (std)", unit=units.get(t, ""), cmap="magma",
                      ax=axes[k][2])
    return axes


def maps_figure_png(m: dict) -> bytes:
    """The figure of a maps.h5 file as `structattn.maps.read_maps` returns it: structure | property |
    uncertainty per target."""
    a = m["attrs"]
    units = dict(zip(a["target_names"], a["units"]))
    names = a["target_names"]
    fig, axes = plt.subplots(len(names), 3 if m["std"] else 2,
                             figsize=(4.2 * (3 if m["std"] else 2), 3.8 * len(names)), squeeze=False)
    property_maps(m["structure"][0], m["rows"], m["cols"], m["mean"], m["std"], units=units,
                  channel=a["channels"][0] if a["channels"] else "structure", axes=axes)
    fig.suptitle(f"every {a['step']} px, {a['members']} model(s); image: {a['image']}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the title above the first row
    return _png(fig)


def suggestion_overlay(structure: np.ndarray, measured: np.ndarray, picks: np.ndarray, *, score=None,
                       rows=None, cols=None, title: str = "", ax=None):
    """Structure with the measured points (white dots) and the suggested ones (numbered, red).

    Args:
        structure: (H, W) one structure channel.
        measured: (N, 2) measured (row, col).
        picks: (K, 2) suggested (row, col), best first.
        score: optional (R, Cc) acquisition map on the grid `rows` x `cols`, drawn translucent.
    """
    ax = _ax(ax, (6, 6))
    ax.imshow(structure, cmap="gray")
    if score is not None:
        im = ax.imshow(score, cmap="inferno", alpha=0.45, extent=_extent(rows, cols), interpolation="nearest")
        plt.colorbar(im, ax=ax, fraction=0.046, label="acquisition score")
    if len(measured):
        ax.scatter(measured[:, 1], measured[:, 0], s=4, c="white", edgecolors="none", alpha=0.7,
                   label=f"measured ({len(measured)})")
    ax.scatter(picks[:, 1], picks[:, 0], s=40, facecolors="none", edgecolors="red", linewidths=1.5,
               label=f"next ({len(picks)})")
    for k, (r, c) in enumerate(picks[: min(len(picks), 50)], start=1):
        ax.annotate(str(k), (c, r), color="red", fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(-0.5, structure.shape[1] - 0.5)
    ax.set_ylim(structure.shape[0] - 0.5, -0.5)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def suggestion_png(structure, measured, picks, *, score=None, rows=None, cols=None, title: str = "") -> bytes:
    fig, ax = plt.subplots(figsize=(6.5, 6))
    suggestion_overlay(structure, measured, picks, score=score, rows=rows, cols=cols, title=title, ax=ax)
    return _png(fig)
