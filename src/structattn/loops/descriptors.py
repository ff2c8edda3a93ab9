"""Switching descriptors of measured loops: the one call the pipeline makes.

``compute_descriptors(loops, voltage)`` validates, repairs spikes and NaNs, flags
flat / noise-only loops, fits the 9-parameter model to all loops at once (or reads
the descriptors model-free) and returns a :class:`LoopAnalysis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .direct import direct_descriptors, hysteresis_significance
from .fit import LoopFitter
from .model import switching_descriptors_from_params
from .preprocess import PreprocessConfig, check_loops_voltage, preprocess_loops
from .waveform import split_branches

__all__ = ["DESCRIPTORS", "STANDARD_DESCRIPTORS", "LoopAnalysis", "LoopAnalysisConfig", "compute_descriptors"]

# name -> (unit, meaning). Names follow BGlib's switching parameters; "a.u." is the
# unit of the loops themselves (piezoresponse, arbitrary units in BEPS files).
DESCRIPTORS: dict[str, tuple[str, str]] = {
    "V+": ("V", "positive coercive voltage: bias where the rising branch is half switched"),
    "V-": ("V", "negative coercive voltage: bias where the falling branch is half switched"),
    "imprint": ("V", "loop shift along the bias axis, (V+ + V-)/2"),
    "R+": ("a.u.", "remanent response of the + state (fit: a0 + a1; direct: falling branch at 0 V)"),
    "R-": ("a.u.", "remanent response of the - state (fit: a0; direct: rising branch at 0 V)"),
    "switchable_polarization": ("a.u.", "loop height R+ - R- (signed: its sign is the loop orientation)"),
    "work_of_switching": ("V*a.u.", "loop area, |V+ - V-| * |height| (direct: |integral of falling - rising|)"),
    "nucleation_bias_+": ("V", "bias where the rising branch has switched 3 % of the way (onset of + switching)"),
    "nucleation_bias_-": ("V", "bias where the falling branch has switched 3 % of the way (onset of - switching)"),
}


# What a run learns when the data have loops and no targets are named: the switching
# parameters a BEPS paper reports first (coercive biases, imprint, loop height).
STANDARD_DESCRIPTORS: tuple[str, ...] = ("V+", "V-", "imprint", "switchable_polarization")


@dataclass
class LoopAnalysisConfig:
    """Options of :func:`compute_descriptors`."""

    # Spike repair and flat-loop flags.
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # Fit starts per loop (best kept) and Levenberg-Marquardt iterations at most.
    n_starts: int = 12
    max_iter: int = 200
    # torch device and precision of the batched fit.
    device: str = "cpu"
    dtype: str = "float64"
    # torch CPU threads for the fit (None: torch's setting); see LoopFitter.
    num_threads: int | None = None
    # A fit with R^2 below this is ``poor_fit``.
    r2_min: float = 0.8
    # Mean branch separation in noise standard errors under which a loop has
    # ``no_hysteresis`` (a noise-only loop opens by ~1).
    hysteresis_min: float = 4.0
    # Switched fraction defining the nucleation biases (BGlib: 0.03).
    nucleation_threshold: float = 0.03
    # "crossing" (50 % switching point, robust) or "bglib" (a3/a2 as BGlib).
    coercive: str = "crossing"


@dataclass
class LoopAnalysis:
    """Descriptors, quality and fit of N loops.

    Attributes:
        values: descriptor name -> (N,) values (see :data:`DESCRIPTORS`).
        quality: (N,) bool, True where every flag is clear: use it to mask
            targets. Untrustworthy loops still carry numbers, never NaN-by-policy.
        flags: name -> (N,) bool: ``spike_repaired`` (informative, not a
            quality failure), ``too_spiky``, ``has_nan``, ``invalid``, ``flat``,
            ``no_hysteresis``, ``poor_fit``, ``inverted`` (V- > V+),
            ``out_of_range`` (coercive voltage outside the bias range or not finite).
        fit_r2: (N,) R^2 of the fit to the clean loop (NaN for ``method="direct"``).
        fit_rmse: (N,) RMSE of the fit, data units (NaN for ``"direct"``).
        params: (N, 9) fitted parameters in BGlib order, or None.
        fitted: (N, V) fitted loops, or None.
        clean_loops: (N, V) loops after NaN filling and spike repair.
        method: ``"fit"`` or ``"direct"``.
    """

    values: dict[str, np.ndarray]
    quality: np.ndarray
    flags: dict[str, np.ndarray]
    fit_r2: np.ndarray
    fit_rmse: np.ndarray
    params: np.ndarray | None
    fitted: np.ndarray | None
    clean_loops: np.ndarray
    method: str = "fit"

    def table(self, names) -> np.ndarray:
        """Stack the named descriptors as columns.

        Args:
            names: descriptor names, a sequence or one comma-separated string
                (``"V+,V-,imprint"``).

        Returns:
            (N, K) float array, columns in the order given.

        Raises:
            ValueError: if a name is unknown (the message lists the valid ones).
        """
        if isinstance(names, str):
            names = [s.strip() for s in names.split(",") if s.strip()]
        names = list(names)
        if not names:
            raise ValueError("names: expected at least one descriptor name, got none")
        unknown = [n for n in names if n not in self.values]
        if unknown:
            raise ValueError(f"names: unknown descriptor(s) {unknown}; valid: {list(self.values)}")
        return np.stack([np.asarray(self.values[n], dtype=float) for n in names], axis=1)


def compute_descriptors(
    loops,
    voltage,
    *,
    method: str = "fit",
    seed: int = 0,
    config: LoopAnalysisConfig | None = None,
) -> LoopAnalysis:
    """Switching descriptors of every loop, with quality flags.

    Args:
        loops: (N, V) response per spectroscopy point, acquisition order. NaNs
            are filled and flagged, spikes repaired and flagged.
        voltage: (V,) bias waveform, any triangle-like shape, start and number
            of cycles.
        method: ``"fit"`` (batched 9-parameter fit, BGlib descriptors) or
            ``"direct"`` (model-free, read off the branches).
        seed: seed of the random fit starts.
        config: options; defaults to :class:`LoopAnalysisConfig`.

    Returns:
        The :class:`LoopAnalysis`.

    Raises:
        ValueError: bad shapes, mismatched V, non-finite voltage, a waveform
            without rising and falling branches, or an unknown ``method``.

    Example:
        >>> from structattn.loops.model import loop_model_np
        >>> from structattn.loops.waveform import split_branches
        >>> v = np.concatenate([np.linspace(0, 8, 17), np.linspace(7.5, -8, 32), np.linspace(-7.5, -0.5, 15)])
        >>> p = np.array([[0.0, 1.0, -3.0, 2.0, 0.0, 0.5, 0.5, 0.5, 0.5]])
        >>> res = compute_descriptors(loop_model_np(v, p, rising=split_branches(v).rising_mask), v)
        >>> np.round(res.table("V+,V-"), 2).tolist(), bool(res.quality[0])
        ([[2.0, -3.0]], True)
    """
    if method not in ("fit", "direct"):
        raise ValueError(f"method: expected 'fit' or 'direct', got {method!r}")
    cfg = config or LoopAnalysisConfig()
    x, v = check_loops_voltage(loops, voltage)
    branches = split_branches(v)
    pp = preprocess_loops(x, v, config=cfg.preprocess)
    n = x.shape[0]

    direct, extra = direct_descriptors(pp.clean, v, branches, nucleation_threshold=cfg.nucleation_threshold)
    significance = hysteresis_significance(extra["falling"], extra["rising"], pp.noise)
    flags = dict(pp.flags)
    flags["no_hysteresis"] = significance < cfg.hysteresis_min

    nan = np.full(n, np.nan)
    if method == "fit":
        fitter = LoopFitter(
            voltage=v,
            n_starts=cfg.n_starts,
            max_iter=cfg.max_iter,
            device=cfg.device,
            dtype=cfg.dtype,
            seed=seed,
            nucleation_threshold=cfg.nucleation_threshold,
            num_threads=cfg.num_threads,
        ).fit(pp.clean)
        values = switching_descriptors_from_params(
            fitter.params_, nucleation_threshold=cfg.nucleation_threshold, coercive=cfg.coercive
        )
        r2, rmse, params, fitted = fitter.r2_, fitter.rmse_, fitter.params_, fitter.fitted_
        flags["poor_fit"] = ~(r2 >= cfg.r2_min)
    else:
        values = direct
        r2, rmse, params, fitted = nan, nan.copy(), None, None
        flags["poor_fit"] = np.zeros(n, dtype=bool)

    vmin, vmax = float(v.min()), float(v.max())
    vp, vm = values["V+"], values["V-"]
    finite = np.all(np.stack([np.isfinite(values[k]) for k in values]), axis=0)
    flags["out_of_range"] = ~finite | (vp < vmin) | (vp > vmax) | (vm < vmin) | (vm > vmax)
    flags["inverted"] = vm > vp
    bad = ("too_spiky", "invalid", "flat", "no_hysteresis", "poor_fit", "inverted", "out_of_range")
    quality = ~np.any(np.stack([flags[k] for k in bad]), axis=0)
    return LoopAnalysis(
        values=values,
        quality=quality,
        flags=flags,
        fit_r2=r2,
        fit_rmse=rmse,
        params=params,
        fitted=fitted,
        clean_loops=pp.clean,
        method=method,
    )
