"""Predictive uncertainty: deep-ensemble spread, its calibration, and calibration scores.

A deep ensemble (Lakshminarayanan et al. 2017: the same model trained from several seeds)
gives a mean and a spread per prediction. The spread of networks trained with a squared loss
measures only *epistemic* uncertainty (where the members disagree) and, with a handful of
small members, is too narrow: it is over-confident. So the spread is calibrated on the
validation blocks, per target, before any interval is reported:

    sigma^2 = (a * spread)^2 + b^2

``a`` rescales the spread and ``b`` adds a noise floor (the aleatoric part the members cannot
see: measurement noise, structure outside the patch).

``method="conformal"`` (the default) assumes no distribution: it is split-conformal
prediction with the spread as the normaliser (Papadopoulos et al. 2008; Lei et al. 2018).
The score of a validation point is ``|y - mean| / spread``; the interval at level p is
``mean ± q_p * spread`` with q_p the finite-sample ((n+1)p/n) quantile of the validation
scores, stored per target on a grid of levels. Its "std" (maps, `suggest`) is the half-width
of the 68.27 % interval, ``q_0.6827 * spread``. The Gaussian methods failed on real runs:
``"scale"`` (``b = 0``, ``a`` = RMS of the validation z-scores, σ-scaling, Laves et al. 2020)
is pulled up by one validation point the members agree on wrongly (the test suite's small
run: a = 34, every test point inside the 68 % interval); ``"scale+floor"`` (Gaussian
maximum likelihood of a and b) can drive ``a`` to 0, which flattens the uncertainty map and
ties every candidate of `structattn suggest`. Coverage is then measured on the *test*
blocks, which took no part in training, early stopping or calibration.

Nothing here knows about runs or files: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CALIBRATIONS = ("conformal", "scale", "scale+floor")  # fit_calibration's methods
# a run's --calibration: "conformal" takes per-block quantiles, the larger kept (block-conservative);
# "conformal-pooled" pools the validation points (the default before 2026-11-27)
RUN_CALIBRATIONS = ("conformal", "conformal-pooled", "scale", "scale+floor")
MIN_GROUP_POINTS = 20  # a validation block with fewer points makes the run pool them instead
QLEVELS = tuple(np.round(np.arange(0.01, 1.0, 0.01), 2))  # levels at which conformal quantiles are kept
ONE_SIGMA = float(stats.norm.cdf(1) - stats.norm.cdf(-1))  # 0.6827: the level whose half-width is the "std"
LEVELS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))  # central-interval levels of the reliability curve


def z_of(level: float) -> float:
    """Half-width, in standard deviations, of the central Gaussian interval holding `level`."""
    if not 0 < level < 1:
        raise ValueError(f"level: expected a probability in (0, 1), got {level!r}")
    return float(stats.norm.ppf(0.5 + level / 2))


def ensemble_stats(preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread (sample standard deviation, ddof 1) over members.

    Args:
        preds: (M, N, K) predictions of M >= 2 members.

    Returns:
        (N, K) mean and (N, K) standard deviation.
    """
    preds = np.asarray(preds, np.float64)
    if preds.ndim != 3 or preds.shape[0] < 2:
        raise ValueError(f"preds: expected (M, N, K) with M >= 2 members, got shape {preds.shape}")
    return preds.mean(0), preds.std(0, ddof=1)


@dataclass
class Calibration:
    """Per-target map from ensemble spread to predictive standard deviation (target units).

    Attributes:
        scale: (K,) factor ``a`` on the spread (``conformal``: q_0.6827, the 1-sigma-like half-width).
        floor: (K,) standard deviation ``b`` added in quadrature (0 unless ``method="scale+floor"``).
        method: "conformal", "scale" or "scale+floor".
        quantiles: (K, len(QLEVELS)) conformal score quantiles (``conformal`` only).
        constant: (K,) bool or None: targets whose spread is taken as 1 everywhere, so their
            intervals have one width, the validation residuals' (a target predicted by ridge,
            `structattn run --prefer-ridge`: every member gives the same value, spread 0).
        offset: (K,) or None: β added to the spread before it scales the interval, so the
            normaliser is ``spread + β`` (``fit_calibration(..., normaliser="spread+median")``);
            not applied to `constant` targets.

    Example:
        >>> cal = Calibration(scale=np.array([2.0]), floor=np.array([0.0]), method="scale")
        >>> cal.apply(np.array([[0.5]]))
        array([[1.]])
    """

    scale: np.ndarray
    floor: np.ndarray
    method: str = "scale"
    quantiles: np.ndarray | None = None
    constant: np.ndarray | None = None
    offset: np.ndarray | None = None

    def _spread(self, spread: np.ndarray) -> np.ndarray:
        s = np.asarray(spread, np.float64)
        if self.offset is not None:
            s = s + self.offset
        return s if self.constant is None else np.where(self.constant, 1.0, s)

    def apply(self, spread: np.ndarray) -> np.ndarray:
        """(N, K) spread -> (N, K) calibrated standard deviation."""
        return np.sqrt((self.scale * self._spread(spread)) ** 2 + self.floor ** 2)

    def half_width(self, spread: np.ndarray, level: float) -> np.ndarray:
        """(N, K) half-width of the central interval holding `level` of the points."""
        if self.quantiles is None:
            return z_of(level) * self.apply(spread)
        if not QLEVELS[0] <= level <= QLEVELS[-1]:
            raise ValueError(f"level: conformal intervals are kept for levels {QLEVELS[0]}..{QLEVELS[-1]}, got {level!r}")
        q = np.array([np.interp(level, QLEVELS, qk) for qk in self.quantiles])
        return q * self._spread(spread)

    def to_dict(self, names) -> dict:
        per = {}
        for k, (n, a, b) in enumerate(zip(names, self.scale, self.floor)):
            per[str(n)] = {"scale": float(a), "floor": float(b)}
            if self.quantiles is not None:
                per[str(n)]["quantiles"] = [float(v) for v in self.quantiles[k]]
            if self.constant is not None and self.constant[k]:
                per[str(n)]["constant_spread"] = True
            if self.offset is not None:
                per[str(n)]["offset"] = float(self.offset[k])
        out = {"method": self.method, "per_target": per}
        if self.quantiles is not None:
            out["levels"] = list(QLEVELS)
        return out

    @classmethod
    def from_dict(cls, d: dict, names) -> "Calibration":
        per = d["per_target"]
        missing = [n for n in names if str(n) not in per]
        if missing:
            raise ValueError(f"calibration: no entry for target(s) {missing}")
        q = None
        if d.get("method") == "conformal":
            if list(np.round(d.get("levels", []), 2)) != list(QLEVELS) or any("quantiles" not in per[str(n)] for n in names):
                raise ValueError("calibration: a conformal calibration needs 'levels' and per-target 'quantiles'")
            q = np.array([per[str(n)]["quantiles"] for n in names], float)
        return cls(scale=np.array([per[str(n)]["scale"] for n in names], float),
                   floor=np.array([per[str(n)]["floor"] for n in names], float), method=d.get("method", "scale"),
                   quantiles=q, constant=np.array([bool(per[str(n)].get("constant_spread")) for n in names]),
                   offset=(np.array([float(per[str(n)].get("offset", 0.0)) for n in names])
                           if any("offset" in per[str(n)] for n in names) else None))


def calibration_groups(group_of_val: np.ndarray, kind: str, choice: str) -> tuple[np.ndarray | None, str]:
    """The validation points' groups for a run's `--calibration`, and how they were used.

    Args:
        group_of_val: (n_val,) block (or sample) id of each validation point.
        kind: what a group is, for the record ("block" or "sample").
        choice: a `RUN_CALIBRATIONS` entry; only "conformal" uses groups.

    Returns:
        (groups or None for pooled quantiles, a sentence for metrics.json).
    """
    if choice not in RUN_CALIBRATIONS:
        raise ValueError(f"--calibration: expected one of {RUN_CALIBRATIONS}, got {choice!r}")
    if choice != "conformal":
        return None, "validation points pooled"
    ids, counts = np.unique(np.asarray(group_of_val), return_counts=True)
    if len(ids) < 2:
        return None, f"one validation {kind}: its points pooled"
    if counts.min() < MIN_GROUP_POINTS:
        return None, (f"a validation {kind} holds {counts.min()} points (< {MIN_GROUP_POINTS}): quantiles per {kind} "
                      "would be noise, the validation points were pooled")
    return np.asarray(group_of_val), (f"quantiles per validation {kind} ({len(ids)} {kind}s, {counts.min()}-"
                                      f"{counts.max()} points), the larger kept at each level")


def _nll(params: np.ndarray, r2: np.ndarray, s2: np.ndarray) -> float:
    a2, b2 = np.exp(2 * params)
    var = a2 * s2 + b2
    return float(0.5 * np.mean(np.log(var) + r2 / var))


def conformal_quantiles(scores: np.ndarray, levels=QLEVELS) -> np.ndarray:
    """Finite-sample split-conformal quantiles of nonconformity `scores` (n,) at each level.

    The quantile at level p is the ceil((n+1)p)-th smallest score (the largest when that
    exceeds n): an interval built from it holds at least p of exchangeable new points.
    """
    s = np.sort(np.asarray(scores, np.float64))
    n = len(s)
    rank = np.minimum(np.ceil((n + 1) * np.asarray(levels)).astype(int), n)
    return s[rank - 1]


NORMALISERS = ("spread", "spread+median")
COMBINES = ("max", "mean")  # fit_calibration's ways to join per-block quantiles


def fit_calibration(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, *, method: str = "conformal",
                    constant=None, normaliser: str = "spread", groups=None, combine: str = "max") -> Calibration:
    """Fit the calibration on held-out points (the validation blocks).

    Args:
        y: (N, K) measured values.
        mean: (N, K) ensemble means.
        spread: (N, K) ensemble spreads.
        method: "conformal" (normalised split-conformal quantiles, see the module text),
            "scale" (b = 0, a = RMS of the z-scores, which is also its maximum-likelihood
            value) or "scale+floor" (Gaussian maximum likelihood of a and b).
        constant: (K,) bool, targets whose spread is taken as 1 (`Calibration.constant`).
        normaliser: "spread" (score |y - mean| / spread) or "spread+median" (score
            |y - mean| / (spread + β), β the target's median validation spread: the sensitivity
            parameter of Papadopoulos et al. 2008, so points the members happen to agree on do
            not get near-zero intervals). Conformal only.
        groups: (N,) block id of each point, or None. Given, the conformal quantile at each
            level is the largest of the per-block quantiles (block-conservative), so one
            validation block with larger errors sets the width. Conformal only.
        combine: how per-block quantiles become one, with `groups`: "max" (the larger kept, the
            default) or "mean" (averaged at each level; docs/uncertainty.md, the second rule).
    """
    if method not in CALIBRATIONS:
        raise ValueError(f"calibration: expected one of {CALIBRATIONS}, got {method!r}")
    if normaliser not in NORMALISERS:
        raise ValueError(f"normaliser: expected one of {NORMALISERS}, got {normaliser!r}")
    if combine not in COMBINES:
        raise ValueError(f"combine: expected one of {COMBINES}, got {combine!r}")
    if method != "conformal" and (normaliser != "spread" or groups is not None):
        raise ValueError(f"normaliser, groups: apply to the conformal calibration only, not to {method!r}")
    y, mean, spread = (np.asarray(a, np.float64) for a in (y, mean, spread))
    if y.ndim != 2 or y.shape != mean.shape or y.shape != spread.shape:
        raise ValueError(f"y, mean, spread: expected equal (N, K) shapes, got {y.shape}, {mean.shape}, {spread.shape}")
    if len(y) < 2:
        raise ValueError(f"y: calibration needs at least 2 held-out points, got {len(y)}")
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if len(groups) != len(y):
            raise ValueError(f"groups: expected one block id per point ({len(y)}), got {len(groups)}")
        if min(np.unique(groups, return_counts=True)[1]) < 2:
            raise ValueError("groups: every block needs at least 2 held-out points")
    k = y.shape[1]
    offset = None
    if normaliser == "spread+median":
        offset = np.median(spread, axis=0)
        spread = spread + offset
    if constant is not None:
        constant = np.asarray(constant, bool).reshape(-1)
        if len(constant) != k:
            raise ValueError(f"constant: expected {k} flags, one per target, got {len(constant)}")
        spread = np.where(constant, 1.0, spread)
        if offset is not None:
            offset = np.where(constant, 0.0, offset)
    scale, floor = np.zeros(k), np.zeros(k)
    quantiles = np.zeros((k, len(QLEVELS))) if method == "conformal" else None
    for j in range(k):
        r2 = (y[:, j] - mean[:, j]) ** 2
        resid = float(np.sqrt(r2.mean())) or 1e-12
        s = np.maximum(spread[:, j], 1e-9 * resid)  # members that agree exactly would give z = inf
        a0 = float(np.sqrt(np.mean(r2 / s**2)))
        if method == "conformal":
            score = np.sqrt(r2) / s
            if groups is None:
                quantiles[j] = conformal_quantiles(score)
            else:
                per = [conformal_quantiles(score[groups == g]) for g in np.unique(groups)]
                quantiles[j] = np.max(per, axis=0) if combine == "max" else np.mean(per, axis=0)
            scale[j] = float(np.interp(ONE_SIGMA, QLEVELS, quantiles[j]))
            continue
        if method == "scale":
            scale[j] = a0
            continue
        s2 = s**2
        # log-parameters; b bounded below so a floor of exactly 0 stays reachable numerically
        x0 = np.log([a0 / np.sqrt(2), resid / 2])
        bounds = [(np.log(1e-6 * a0 + 1e-30), np.log(1e6 * a0 + 1e-30)), (np.log(1e-6 * resid), np.log(10 * resid))]
        best = optimize.minimize(_nll, x0, args=(r2, s2), method="L-BFGS-B", bounds=bounds)
        scale_only = _nll(np.array([np.log(a0), bounds[1][0]]), r2, s2)
        if best.fun <= scale_only:
            scale[j], floor[j] = np.exp(best.x)
        else:  # the optimiser stalled above the scale-only solution (a degenerate spread): keep that
            scale[j] = a0
    return Calibration(scale=scale, floor=floor, method=method, quantiles=quantiles, constant=constant, offset=offset)


def coverage(y: np.ndarray, mean: np.ndarray, std: np.ndarray, level: float) -> np.ndarray:
    """(K,) share of points whose value lies in the central `level` Gaussian interval."""
    z = z_of(level)
    inside = np.abs(np.asarray(y, np.float64) - mean) <= z * np.asarray(std, np.float64)
    return inside.mean(0)


def interval_coverage(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, cal: Calibration,
                      level: float) -> np.ndarray:
    """(K,) share of points inside the calibrated central interval at `level` (any method)."""
    return (np.abs(np.asarray(y, np.float64) - mean) <= cal.half_width(spread, level)).mean(0)


def reliability(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, cal: Calibration, levels=LEVELS) -> np.ndarray:
    """(L, K) observed coverage of the calibrated interval at each expected level (the reliability curve)."""
    return np.stack([interval_coverage(y, mean, spread, cal, lv) for lv in levels])


def error_spread_rank(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(K,) Spearman correlation of |error| with the predicted std: does the std rank the errors?

    NaN where either is constant. Calibration cannot change it (it is monotone per target).
    """
    out = []
    for j in range(np.shape(y)[1]):
        err = np.abs(np.asarray(y)[:, j] - np.asarray(mean)[:, j])
        s = np.asarray(std)[:, j]
        out.append(float(stats.spearmanr(err, s)[0]) if np.ptp(err) > 0 and np.ptp(s) > 0 else float("nan"))
    return np.array(out)


COVERAGE_95_RANGE = (0.85, 0.99)  # outside it a run says its 95 % intervals are off on the test blocks


def coverage_warnings(test: dict, n_test: int) -> dict[str, str]:
    """A sentence for each target whose 95 % test coverage lies outside `COVERAGE_95_RANGE`.

    Args:
        test: `uncertainty_scores` output (per target, ``coverage_95``).
        n_test: number of test points scored.

    Returns:
        {target: sentence}, empty when every target is inside.
    """
    lo, hi = COVERAGE_95_RANGE
    out = {}
    for name, s in test.items():
        c = s["coverage_95"]
        held = f"its 95 % interval held {c:.3f} of the {n_test} test values"
        if c < lo:
            out[name] = (f"{name}: {held} (below {lo}): the intervals are too narrow on the test blocks; read them "
                         "as lower bounds on the error")
        elif c > hi:
            out[name] = (f"{name}: {held} (above {hi}): the intervals are wider than the test blocks needed; "
                         "its uncertainty is conservative")
    return out


def uncertainty_scores(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, cal: Calibration, names) -> dict:
    """Per target: coverage of the 68 % and 95 % intervals, mean std, error-std rank correlation.

    Args:
        y, mean, spread: (N, K) on the points to score (the test blocks); spread is the raw
            ensemble spread, `cal` turns it into intervals.
        names: (K,) target names.
    """
    std = cal.apply(spread)
    c68, c95 = interval_coverage(y, mean, spread, cal, 0.68), interval_coverage(y, mean, spread, cal, 0.95)
    rho = error_spread_rank(y, mean, std)
    return {str(n): {"coverage_68": float(c68[k]), "coverage_95": float(c95[k]), "mean_std": float(np.mean(std[:, k])),
                     "spearman_error_std": None if not np.isfinite(rho[k]) else float(rho[k])}
            for k, n in enumerate(names)}
