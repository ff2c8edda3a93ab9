"""Model-free loop geometry: branch curves on a common bias grid and the
switching descriptors read directly from them (no fit).

These serve three uses: the ``method="direct"`` descriptors, the starting guesses
of the 9-parameter fit, and the ``no_hysteresis`` flag.
"""

from __future__ import annotations

import numpy as np

from .waveform import Branches

__all__ = ["branch_curves", "direct_descriptors", "hysteresis_significance"]


def _with_end(run: np.ndarray, n: int) -> np.ndarray:
    """A branch run plus the turning point that ends it (shared with the next branch)."""
    return np.append(run, (run[-1] + 1) % n)


def branch_curves(loops: np.ndarray, voltage: np.ndarray, branches: Branches):
    """Falling and rising branches, cycle-averaged, on one increasing bias grid.

    Args:
        loops: (N, V) clean loops.
        voltage: (V,) bias.
        branches: from :func:`~structattn.loops.waveform.split_branches`.

    Returns:
        ``(grid, falling, rising)``: (M,) increasing bias covered by both branch
        kinds, and (N, M) each.
    """
    nv = voltage.size

    def curves(runs):
        out = []
        for run in runs:
            idx = _with_end(run, nv)
            order = np.argsort(voltage[idx], kind="stable")
            out.append((voltage[idx][order], loops[:, idx][:, order]))
        return out

    fall, rise = curves(branches.falling), curves(branches.rising)
    lo = max(c[0][0] for c in fall + rise)
    hi = min(c[0][-1] for c in fall + rise)
    grid = np.unique(voltage[(voltage >= lo) & (voltage <= hi)])

    def on_grid(cs):
        acc = np.zeros((loops.shape[0], grid.size))
        for vv, yy in cs:
            acc += _interp_rows(grid, vv, yy)
        return acc / len(cs)

    return grid, on_grid(fall), on_grid(rise)


def _interp_rows(grid: np.ndarray, vv: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Vectorised linear interpolation of many rows sharing one abscissa ``vv``."""
    j = np.clip(np.searchsorted(vv, grid, side="right") - 1, 0, vv.size - 2)
    dv = vv[j + 1] - vv[j]
    t = np.where(dv > 0, (grid - vv[j]) / np.where(dv > 0, dv, 1.0), 0.0)
    return yy[:, j] * (1.0 - t) + yy[:, j + 1] * t


def _crossing_at(grid: np.ndarray, phi: np.ndarray, level: float) -> np.ndarray:
    """Interpolated bias above which the switched fraction ``phi`` stays >= ``level``.

    Both branches, read with increasing bias, go from ``phi ~ 0`` to ``~1``, so the
    rule is the same for both: take the last grid point still below ``level`` and
    interpolate to the next one. Noise before switching cannot trigger it early.

    Args: grid (M,), phi (N, M). Returns: (N,).
    """
    n, m = phi.shape
    below = phi < level
    any_below = below.any(axis=1)
    j = np.where(any_below, m - 1 - np.argmax(below[:, ::-1], axis=1), 0)  # last index below
    j = np.minimum(j, m - 2)
    rows = np.arange(n)
    y0, y1 = phi[rows, j], phi[rows, j + 1]
    dy = y1 - y0
    t = np.clip(np.where(dy != 0, (level - y0) / np.where(dy != 0, dy, 1.0), 0.0), 0.0, 1.0)
    out = grid[j] + t * (grid[j + 1] - grid[j])
    out = np.where(any_below, out, grid[0])
    return np.where(below[:, -1], grid[-1], out)


def direct_descriptors(loops: np.ndarray, voltage: np.ndarray, branches: Branches, *, nucleation_threshold: float = 0.03):
    """Switching descriptors read off the loop without a model.

    Definitions (``lo``/``hi``: mean of both branches over the lowest / highest
    tenth of the bias range; switched fraction ``phi = (branch - lo) / (hi - lo)``):

    * ``V+ = vmax - integral(phi_rising dv)``, ``V- = vmax - integral(phi_falling dv)``:
      the centre of the switching step, exact for a symmetric step, averaging
      noise instead of chasing the first noisy crossing;
    * ``R+`` / ``R-``: falling / rising branch at 0 V (remanent);
    * ``switchable_polarization = R+ - R-``; ``work_of_switching = |integral(falling - rising) dv|``;
    * nucleation biases: where the rising branch has switched
      ``nucleation_threshold`` of the way and the falling branch the same
      fraction of its way down.

    Args:
        loops: (N, V) clean loops.
        voltage: (V,) bias.
        branches: branch structure of ``voltage``.
        nucleation_threshold: switched fraction that defines nucleation.

    Returns:
        ``(values, extras)``: descriptor name -> (N,), and ``lo``, ``hi`` (N,) levels.
    """
    grid, fall, rise = branch_curves(loops, voltage, branches)
    m = grid.size
    vmin, vmax = grid[0], grid[-1]
    k = max(1, int(round(0.1 * m)))
    lo = 0.5 * (fall[:, :k].mean(1) + rise[:, :k].mean(1))  # (N,)
    hi = 0.5 * (fall[:, -k:].mean(1) + rise[:, -k:].mean(1))
    height = hi - lo
    safe = np.where(np.abs(height) > 0, height, 1.0)
    phi_r = (rise - lo[:, None]) / safe[:, None]
    phi_f = (fall - lo[:, None]) / safe[:, None]
    vplus = np.clip(vmax - np.trapezoid(phi_r, grid, axis=1), vmin, vmax)
    vminus = np.clip(vmax - np.trapezoid(phi_f, grid, axis=1), vmin, vmax)
    v0 = 0.0 if vmin <= 0.0 <= vmax else 0.5 * (vmin + vmax)
    at0 = np.array([v0])
    rplus = _interp_rows(at0, grid, fall)[:, 0]
    rminus = _interp_rows(at0, grid, rise)[:, 0]
    area = np.trapezoid(fall - rise, grid, axis=1)
    t = nucleation_threshold
    values = {
        "V+": vplus,
        "V-": vminus,
        "imprint": 0.5 * (vplus + vminus),
        "R+": rplus,
        "R-": rminus,
        "switchable_polarization": rplus - rminus,
        "work_of_switching": np.abs(area),
        "nucleation_bias_+": _crossing_at(grid, phi_r, t),
        "nucleation_bias_-": _crossing_at(grid, phi_f, 1.0 - t),
    }
    return values, {"lo": lo, "hi": hi, "area": area, "grid": grid, "falling": fall, "rising": rise}


def hysteresis_significance(fall: np.ndarray, rise: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """|mean branch separation| in units of its noise standard error, (N,).

    For a loop with no hysteresis the falling - rising difference is noise of
    sigma ``noise*sqrt(2)`` at each of M grid points, so its mean has standard
    error ``noise*sqrt(2/M)``; a real loop opens by many of those.
    """
    m = fall.shape[1]
    sep = np.abs((fall - rise).mean(axis=1))
    se = noise * np.sqrt(2.0 / m)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, sep / se, np.where(sep > 0, np.inf, 0.0))
