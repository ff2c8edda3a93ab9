"""Where the spectroscopy points sit on the structure image: a figure, a report section and
``registration.png`` in the run folder, so a user sees the co-registration at a glance."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from .base import fig_to_html, register_section


def _um(v) -> str:
    return f"{1e6 * float(v):.3g} µm"


def registration_figure(image: np.ndarray, positions: np.ndarray, *, channel: str = "", registration: dict | None = None,
                        pixel_size: float | None = None, samples: dict | None = None, ax=None):
    """The points over one image channel (H, W).

    Args:
        image: (H, W) channel to draw.
        positions: (N, 2) (row, col) of the points, image pixels.
        channel: its name, for the title.
        registration: `structattn.data.coregister.Registration` as a dict, if the points were placed
            by co-registration (draws physical axes and the grid's outline).
        pixel_size: metres per pixel, for physical axes when `registration` states no scan size.
        samples: the multi-sample layout (``meta["samples"]``): points coloured and labelled by sample.
        ax: axes to draw into.

    Returns:
        The axes.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    h, w = image.shape
    dx = dy = None
    if registration and registration.get("scan_size"):
        sw, sh = registration["scan_size"]
        dx, dy = sw / max(w - 1, 1), sh / max(h - 1, 1)
    elif pixel_size and not samples:
        dx = dy = float(pixel_size)
    if dx is not None:  # physical axes in µm; pixel centres at c * dx
        to_x, to_y, unit = (lambda c: 1e6 * dx * np.asarray(c)), (lambda r: 1e6 * dy * np.asarray(r)), "µm"
        extent = (to_x(-0.5), to_x(w - 0.5), to_y(h - 0.5), to_y(-0.5))
    else:
        to_x, to_y, unit = (lambda c: np.asarray(c, float)), (lambda r: np.asarray(r, float)), "px"
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    ax.imshow(image, cmap="gray", extent=extent)
    if samples:
        sop = np.asarray(samples["sample_of_point"], int)
        colours = plt.get_cmap("tab10")
        for k, name in enumerate(samples["names"]):
            sel = sop == k
            ax.scatter(to_x(positions[sel, 1]), to_y(positions[sel, 0]), s=3, color=colours(k % 10), alpha=0.7,
                       label=f"{name} ({int(sel.sum())})")
            r0, c0, bh, bw = samples["boxes"][k]
            ax.add_patch(Rectangle((to_x(c0 - 0.5), to_y(r0 - 0.5)), bw, bh, fill=False, ec=colours(k % 10), lw=1.2))
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    else:
        ax.scatter(to_x(positions[:, 1]), to_y(positions[:, 0]), s=3, c="#e8403b", alpha=0.7,
                   label=f"{len(positions)} points")
        if registration:
            r0, c0, r1, c1 = registration["pixel_box"]
            ax.add_patch(Rectangle((to_x(c0), to_y(r0)), float(to_x(c1) - to_x(c0)), float(to_y(r1) - to_y(r0)),
                                   fill=False, ec="#ffd400", lw=1.2, label="grid: first to last point"))
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    ax.set_title(f"points on {channel}" if channel else "points on the image")
    return ax


def registration_text(sample) -> str:
    """One paragraph (plain text) saying how the points were placed."""
    reg = sample.meta.get("registration")
    samples = sample.meta.get("samples")
    if samples:
        return (f"{len(samples['names'])} samples laid out side by side ({', '.join(samples['names'])}); each image "
                f"standardised per channel with its own statistics and padded by {samples['margin']} px "
                f"({samples['pad']}), so no patch mixes two samples. Channels matched by name: "
                f"{', '.join(samples['channels'])}.")
    if not reg:
        return (f"{sample.n_points} points at the (row, col) pixel positions given with the data "
                "(no co-registration was done by structattn).")
    rows, cols = reg["grid_shape"]
    h, w = reg["image_shape"]
    r0, c0, r1, c1 = reg["pixel_box"]
    where = (f"first point at pixel (row, col) = ({r0:.1f}, {c0:.1f}), last at ({r1:.1f}, {c1:.1f}) of the "
             f"{h} x {w} image")
    if reg["mode"] == "same scan area":
        size = "" if not reg.get("scan_size") else f" ({_um(reg['scan_size'][0])} x {_um(reg['scan_size'][1])})"
        return f"The {rows} x {cols} grid covers the same scan area as the image{size}: {where}."
    ex, ey = reg["extent"]
    ox, oy = reg["offset"]
    sw, sh = reg["scan_size"]
    return (f"The {rows} x {cols} grid spans {_um(ex)} x {_um(ey)} (first to last point) with its first point at "
            f"x = {_um(ox)}, y = {_um(oy)} from the corner of the {_um(sw)} x {_um(sh)} scan: {where}.")


def _figure(sample):
    fig, ax = plt.subplots(figsize=(6, 6))
    registration_figure(sample.image[0], sample.positions, channel=sample.channels[0],
                        registration=sample.meta.get("registration"), pixel_size=sample.pixel_size,
                        samples=sample.meta.get("samples"), ax=ax)
    return fig


def write_registration_png(path, sample) -> None:
    """Save the figure as a PNG (the run folder's ``registration.png``)."""
    fig = _figure(sample)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


@register_section(5, "Points on the image (co-registration)")
def registration_section(ctx) -> str:
    s = ctx.sample
    note = ("<p class='note'>x runs along image columns, y along rows, from the corner pixel (0, 0); the grid's "
            "axes are the image's axes (no rotation or drift correction). Also saved as registration.png.</p>")
    return f"<p>{html.escape(registration_text(s))}</p>" + note + fig_to_html(_figure(s), alt="points on the image")
