"""Preprocessing of measured switching-spectroscopy loops: validation, spike
repair, NaN filling and flat / noise-only flags.

Real BEPS loops carry single-point spikes (a failed SHO fit at one bias step can
be 100x the loop height), NaNs and loops with no switching signal at all. None of
these raise here: they are repaired where that is safe and flagged otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import median_filter

__all__ = ["PreprocessConfig", "Preprocessed", "check_loops_voltage", "preprocess_loops", "noise_sigma"]


@dataclass
class PreprocessConfig:
    """Options of :func:`preprocess_loops`."""

    # Running-median window [points]; 7 keeps up to 3 spikes in a window harmless
    # (real data has spikes two steps apart) and leaves monotonic steps untouched.
    spike_window: int = 7
    # A point is a spike when it departs from the running median by more than this
    # many robust noise sigmas (and by more than ``spike_span_floor`` of the span).
    spike_threshold: float = 8.0
    # Floor of the spike scale as a fraction of the loop span, so a noise-free loop
    # (sigma ~ 0) does not see its own rounding as spikes.
    spike_span_floor: float = 0.02
    # Repair passes: a repaired point can unmask a neighbour hidden in the median.
    spike_passes: int = 3
    # More spikes than this fraction of points: the loop is flagged ``too_spiky``.
    max_spike_fraction: float = 0.2
    # A loop whose span is under ``snr_min`` noise sigmas is ``flat`` (noise only).
    snr_min: float = 5.0
    # Absolute span under which a loop is ``flat`` whatever its noise (data units).
    flat_atol: float = 0.0
    # More non-finite points than this fraction: the loop is ``invalid``.
    max_nan_fraction: float = 0.25


@dataclass
class Preprocessed:
    """Result of :func:`preprocess_loops`.

    Attributes:
        clean: (N, V) loops with NaNs filled and spikes repaired.
        spike_mask: (N, V) True where a point was repaired as a spike.
        nan_mask: (N, V) True where the input was NaN or inf.
        noise: (N,) robust noise sigma (from second differences), data units.
        span: (N,) robust span of the clean loop (1st to 99th percentile of the
            running median), data units.
        flags: name -> (N,) bool: ``spike_repaired``, ``too_spiky``, ``has_nan``,
            ``invalid``, ``flat``.
    """

    clean: np.ndarray
    spike_mask: np.ndarray
    nan_mask: np.ndarray
    noise: np.ndarray
    span: np.ndarray
    flags: dict[str, np.ndarray] = field(default_factory=dict)


def check_loops_voltage(loops, voltage) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``loops`` (N, V) and ``voltage`` (V,) at the API boundary.

    Returns:
        ``(loops, voltage)`` as float64 arrays.

    Raises:
        ValueError: wrong dimensions, mismatched ``V``, empty input, or
            non-finite voltage. NaN inside ``loops`` is allowed (it is flagged).
    """
    try:
        x = np.asarray(loops, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"loops: expected a numeric array (N, V), got {type(loops).__name__}") from exc
    try:
        v = np.asarray(voltage, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"voltage: expected a numeric array (V,), got {type(voltage).__name__}") from exc
    if x.ndim != 2:
        raise ValueError(f"loops: expected a 2-D array (N, V), got shape {x.shape}")
    if v.ndim != 1:
        raise ValueError(f"voltage: expected a 1-D array (V,), got shape {v.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"loops: expected at least one loop, got shape {x.shape}")
    if x.shape[1] != v.shape[0]:
        raise ValueError(
            f"voltage: expected {x.shape[1]} values to match loops (N, V) = {x.shape}, got {v.shape[0]}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError(f"voltage: expected finite values, got {int((~np.isfinite(v)).sum())} NaN/inf")
    return x, v


def noise_sigma(loops: np.ndarray) -> np.ndarray:
    """Robust per-loop noise sigma from second differences.

    For white noise of sigma s, ``x[i-1] - 2 x[i] + x[i+1]`` has sigma ``s*sqrt(6)``;
    the median absolute value ignores spikes and the few switching steps, and a
    smooth loop contributes ~0. Args: loops (N, V). Returns: (N,).
    """
    d2 = loops[:, :-2] - 2.0 * loops[:, 1:-1] + loops[:, 2:]
    return 1.4826 * np.median(np.abs(d2), axis=1) / np.sqrt(6.0)


def _fill_nan(x: np.ndarray, bad: np.ndarray, *, periodic: bool = False) -> np.ndarray:
    """Linear interpolation over ``bad`` points along each loop (N, V).

    ``periodic``: the loop wraps (last point next to the first), so gaps at the
    ends are bridged from the other end.
    """
    out = x.copy()
    nv = x.shape[1]
    idx = np.arange(nv)
    for i in np.flatnonzero(bad.any(axis=1)):
        good = ~bad[i]
        if not good.any():
            out[i] = 0.0
        elif periodic:
            out[i] = np.interp(idx, idx[good], x[i, good], period=nv)
        else:
            out[i] = np.interp(idx, idx[good], x[i, good])
    return out


def preprocess_loops(loops, voltage, *, config: PreprocessConfig | None = None) -> Preprocessed:
    """Repair spikes and NaNs and flag unusable loops.

    Args:
        loops: (N, V) response per point, acquisition order.
        voltage: (V,) bias, acquisition order.
        config: options; defaults to :class:`PreprocessConfig`.

    Returns:
        The :class:`Preprocessed` loops and flags.

    Example:
        >>> v = np.concatenate([np.linspace(0, 8, 9), np.linspace(7, -8, 16), np.linspace(-7, -1, 7)])
        >>> x = np.tanh(v)[None, :].repeat(2, 0); x[0, 5] = 50.0
        >>> pp = preprocess_loops(x, v)
        >>> bool(pp.flags["spike_repaired"][0]), bool(pp.flags["spike_repaired"][1])
        (True, False)
    """
    cfg = config or PreprocessConfig()
    x, v = check_loops_voltage(loops, voltage)
    n, nv = x.shape
    nan_mask = ~np.isfinite(x)
    has_nan = nan_mask.any(axis=1)
    invalid = nan_mask.mean(axis=1) > cfg.max_nan_fraction
    x = _fill_nan(x, nan_mask)

    # A waveform that returns next to where it began (0 -> +V -> -V -> ~0) is
    # periodic: the running median may wrap around instead of clamping the ends.
    step = np.median(np.abs(np.diff(v))) if nv > 1 else 0.0
    mode = "wrap" if abs(v[0] - v[-1]) <= 1.5 * step else "nearest"
    w = int(min(cfg.spike_window, nv if nv % 2 else nv - 1))

    spike_mask = np.zeros_like(nan_mask)
    clean = x
    for _ in range(max(1, cfg.spike_passes)):  # x: NaN-filled input, never overwritten
        med = median_filter(clean, size=(1, w), mode=mode)  # (N, V) running median
        resid = clean - med
        span = np.percentile(med, 99, axis=1) - np.percentile(med, 1, axis=1)  # (N,)
        sigma = noise_sigma(clean)
        tiny = 1e-12 * np.max(np.abs(med), axis=1) + 1e-300
        scale = np.maximum(np.maximum(sigma, cfg.spike_span_floor * span), tiny)  # (N,)
        # Next to a spike the running median shifts by one rank, so on a steep
        # switching step an honest point can sit a step away from it: tolerate
        # twice the local step of the median curve, and demand that a spike be a
        # local extremum (a point on a monotonic step never is).
        prev = np.roll(clean, 1, axis=1)
        nxt = np.roll(clean, -1, axis=1)
        if mode == "nearest":
            prev[:, 0], nxt[:, -1] = clean[:, 1], clean[:, -2]
        extremum = ((clean > prev) & (clean > nxt)) | ((clean < prev) & (clean < nxt))
        dmed = np.abs(np.diff(med, axis=1))
        local = np.maximum(np.pad(dmed, ((0, 0), (1, 0)), mode="edge"), np.pad(dmed, ((0, 0), (0, 1)), mode="edge"))
        spikes = extremum & (np.abs(resid) > cfg.spike_threshold * scale[:, None] + 2.0 * local)
        if not spikes.any():
            break
        spike_mask |= spikes
        # Repair from the good neighbours (linear, across the wrap for a periodic
        # waveform): on a switching step that beats the running median, which can
        # sit a whole step away.
        clean = _fill_nan(np.where(spike_mask, np.nan, x), spike_mask, periodic=mode == "wrap")

    med = median_filter(clean, size=(1, w), mode=mode)
    span = np.percentile(med, 99, axis=1) - np.percentile(med, 1, axis=1)
    noise = noise_sigma(clean)
    flat = (span <= cfg.snr_min * noise) | (span <= cfg.flat_atol) | (span == 0)
    flags = {
        "spike_repaired": spike_mask.any(axis=1),
        "too_spiky": spike_mask.mean(axis=1) > cfg.max_spike_fraction,
        "has_nan": has_nan,
        "invalid": invalid,
        "flat": flat | invalid,
    }
    return Preprocessed(clean=clean, spike_mask=spike_mask, nan_mask=nan_mask, noise=noise, span=span, flags=flags)
