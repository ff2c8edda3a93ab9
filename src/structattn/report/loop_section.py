"""Report section of the loop analysis: descriptor maps, fit-quality map, example fits.

Shown when the sample has loops. The analysis is recomputed from the sample (it
is deterministic: same seed, one thread), so the run folder stores nothing extra.
"""

from __future__ import annotations

import numpy as np

from .base import fig_to_html, register_section, table_html
from .loop_figures import descriptor_maps_figure, example_fits_figure, fit_quality_figure, pick_example_fits


def _grid_shape(positions: np.ndarray) -> tuple[int, int] | None:
    """(rows, cols) when the points fill a full row-major grid, else None."""
    rows = np.unique(positions[:, 0])
    cols = np.unique(positions[:, 1])
    if rows.size * cols.size != len(positions):
        return None
    want = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    return (rows.size, cols.size) if np.array_equal(want, positions) else None


@register_section(25, "Loop analysis")
def loop_analysis(ctx) -> str | None:
    s = ctx.sample
    if s.loops is None:
        return None
    from ..loops import DESCRIPTORS
    from ..targets import _loop_analysis

    # the report's context computes the fit once for every section; a bare context (tests) here
    res = ctx.loop_analysis if hasattr(ctx, "loop_analysis") else _loop_analysis(s)
    shape = _grid_shape(np.asarray(s.positions))
    flags = [[k, int(v.sum()), float(v.mean())] for k, v in res.flags.items()]
    out = (
        f"<p>{len(res.quality)} loops; batched 9-parameter fit (Jesse, Lee &amp; Kalinin 2006, as in BGlib): "
        f"median R² {np.nanmedian(res.fit_r2):.3f}; {100 * res.quality.mean():.1f} % trustworthy "
        "(every flag clear; only these are trained and tested on).</p>"
    )
    out += table_html(["flag", "loops", "share"], flags)
    if shape is None:
        out += "<p class='note'>points are not on a full grid: maps skipped.</p>"
    else:
        try:
            names = [n for n in ctx.run.config["targets"]["names"] if n in DESCRIPTORS] or list(DESCRIPTORS)
        except (KeyError, FileNotFoundError):
            names = list(DESCRIPTORS)
        units = {k: u for k, (u, _) in DESCRIPTORS.items()}
        out += "<p class='note'>Descriptor maps; grey: untrustworthy loops.</p>"
        out += fig_to_html(descriptor_maps_figure(res.values, shape, names=names, units=units, quality=res.quality),
                           alt="descriptor maps")
        out += fig_to_html(fit_quality_figure(res.fit_r2, shape, quality=res.quality), alt="fit quality map")
    idx = pick_example_fits(res.fit_r2, quality=res.quality, count=6)
    out += "<p class='note'>Example fits over the R² range of the trustworthy loops; x: repaired spikes.</p>"
    out += fig_to_html(example_fits_figure(s.voltage, res.clean_loops, res.fitted, indices=idx, r2=res.fit_r2,
                                           raw=np.asarray(s.loops)), alt="example loop fits")
    return out
