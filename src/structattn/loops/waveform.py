"""Branch splitting of a switching-spectroscopy bias waveform.

A BEPS / SS-PFM bias waveform is a triangle (or sine) that may start anywhere:
at 0 V going up (``0 -> +Vmax -> -Vmax -> 0``), at ``-Vmax``, and may repeat for
several cycles. Loop analysis needs, for every point, which branch it lies on:

* **rising** (forward, voltage increasing): switches at the positive coercive
  voltage ``V+``;
* **falling** (reverse, voltage decreasing): switches at ``V-``.

Nothing here assumes the first point is the most negative voltage. A branch that
the waveform cuts in two (it starts mid-branch and ends on the same branch) is
re-assembled across the wrap, so each cycle yields one whole falling and one whole
rising branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Branches", "split_branches"]


@dataclass(frozen=True)
class Branches:
    """Branch structure of a bias waveform.

    Attributes:
        direction: (V,) int8, +1 where the point lies on a rising branch, -1 on a
            falling one. Every point belongs to exactly one branch; a turning point
            belongs to the branch that starts there.
        rising: one index array per rising branch, in acquisition order (across the
            wrap for a branch the waveform cut in two).
        falling: one index array per falling branch, same convention.
        cycles: ``(falling_idx, rising_idx)`` pairs, one per cycle.
    """

    direction: np.ndarray
    rising: list[np.ndarray]
    falling: list[np.ndarray]
    cycles: list[tuple[np.ndarray, np.ndarray]]

    @property
    def n_cycles(self) -> int:
        """Number of complete falling + rising branch pairs."""
        return len(self.cycles)

    @property
    def rising_mask(self) -> np.ndarray:
        """(V,) bool, True on rising branches."""
        return self.direction > 0


def _runs(direction: np.ndarray) -> list[np.ndarray]:
    """Split indices 0..V-1 into maximal runs of constant direction."""
    edges = np.flatnonzero(np.diff(direction) != 0) + 1
    return np.split(np.arange(direction.size), edges)


def split_branches(voltage: np.ndarray, *, min_points: int = 3) -> Branches:
    """Find the rising and falling branches of any triangle-like bias waveform.

    Args:
        voltage: (V,) finite bias values in acquisition order.
        min_points: the fewest points a branch may have.

    Returns:
        The :class:`Branches` of the waveform.

    Raises:
        ValueError: if ``voltage`` is not 1-D and finite, or has no rising or no
            falling branch of at least ``min_points`` points.

    Example:
        >>> v = np.concatenate([np.arange(0, 9), np.arange(7, -9, -1), np.arange(-7, 0)])
        >>> b = split_branches(v.astype(float))
        >>> b.n_cycles, int(b.falling[0][0]), int(b.rising[0][0])
        (1, 8, 24)
    """
    v = np.asarray(voltage, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"voltage: expected a 1-D array (V,), got shape {v.shape}")
    if v.size < 2 * min_points:
        raise ValueError(f"voltage: expected at least {2 * min_points} points, got {v.size}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"voltage: expected finite values, got {int((~np.isfinite(v)).sum())} NaN/inf")

    # Sign of the step to the next point; the last point continues the previous
    # step. Zero steps (a repeated bias value) inherit the preceding direction
    # (or the following one at the very start) so plateaus do not make branches.
    step = np.sign(np.diff(v))
    if not np.any(step):
        raise ValueError("voltage: expected a sweeping waveform, got a constant bias")
    nz = np.flatnonzero(step)
    filled = step.copy()
    filled[: nz[0]] = step[nz[0]]
    for i in range(nz[0] + 1, filled.size):
        if filled[i] == 0:
            filled[i] = filled[i - 1]
    direction = np.append(filled, filled[-1]).astype(np.int8)  # (V,)

    runs = _runs(direction)
    # Re-assemble a branch cut by the wrap: the waveform ends and starts on the
    # same branch (e.g. 0 -> +V -> -V -> -0.5 V), so the last run continues into
    # the first one when the jump from the last to the first point keeps going the
    # same way.
    if len(runs) > 2 and direction[0] == direction[-1]:
        wrap = np.sign(v[0] - v[-1])
        if wrap == 0 or wrap == direction[0]:
            runs = [np.concatenate([runs[-1], runs[0]])] + runs[1:-1]

    runs = [r for r in runs if r.size >= min_points]
    rising = [r for r in runs if direction[r[0]] > 0]
    falling = [r for r in runs if direction[r[0]] < 0]
    if not rising or not falling:
        raise ValueError(
            f"voltage: expected a waveform with rising and falling branches of at least "
            f"{min_points} points, got {len(rising)} rising and {len(falling)} falling"
        )
    # A cycle is a falling branch and the rising branch that follows it (modulo
    # the wrap), so pairs stay in acquisition order whatever the start point.
    starts = {int(r[0]): r for r in rising}
    cycles = [(f, starts[(int(f[-1]) + 1) % v.size]) for f in falling if (int(f[-1]) + 1) % v.size in starts]
    if not cycles:  # e.g. rising branch first and no wrap: pair in list order
        cycles = list(zip(falling, rising))
    return Branches(direction=direction, rising=rising, falling=falling, cycles=cycles)
