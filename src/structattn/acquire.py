"""Where to measure next: acquisition functions and spread-out selection (numpy only).

Two acquisition functions over candidate positions, each given the predictive mean and the
calibrated std there (`structattn.train.uncertainty`):

* ``uncertainty`` (exploration): the std, in units of each target's spread over the measured
  points, root-mean-square over targets (or one target's);
* ``ei`` (expected improvement toward a goal a user names, `parse_goal`): the expected amount
  by which a measurement there would beat the best measured point so far, under the Gaussian
  predictive distribution N(mean, std²) (Jones et al. 1998 for ``min``/``max``; for a target
  value, the closed form of E[(best - |Y - value|)+] derived in `expected_improvement`).

`select_spread` then picks K candidates greedily, best score first, skipping any candidate
closer than a minimum distance to one already picked, so the K points are not neighbours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import stats

ACQUISITIONS = ("uncertainty", "ei")
GOAL_HELP = "NAME=VALUE (closest to VALUE, e.g. imprint=0 for the lowest |imprint|), NAME=min or NAME=max"


@dataclass(frozen=True)
class Goal:
    """A named target and what is wanted of it: its minimum, its maximum or a value.

    Example:
        >>> g = parse_goal("imprint=0", ["V+", "imprint"])
        >>> g.kind, g.value, g.distance(np.array([-0.5, 0.2]))
        ('value', 0.0, array([0.5, 0.2]))
    """

    target: str
    kind: str  # "min", "max" or "value"
    value: float | None = None

    def distance(self, y: np.ndarray) -> np.ndarray:
        """How far values are from the goal; lower is better (the quantity EI improves)."""
        y = np.asarray(y, np.float64)
        if self.kind == "min":
            return y
        if self.kind == "max":
            return -y
        return np.abs(y - self.value)

    def describe(self) -> str:
        return {"min": f"lowest {self.target}", "max": f"highest {self.target}"}.get(
            self.kind, f"{self.target} closest to {self.value:g}")


def parse_goal(text: str, names) -> Goal:
    """``NAME=VALUE``, ``NAME=min`` or ``NAME=max`` -> `Goal`; one-line ValueError naming --goal."""
    names = [str(n) for n in names]
    m = re.fullmatch(r"\s*(.+?)\s*=\s*(\S+)\s*", str(text))
    if m is None:
        raise ValueError(f"--goal: expected {GOAL_HELP}; got {text!r}")
    name, what = m.group(1), m.group(2)
    if name not in names:
        raise ValueError(f"--goal: unknown target {name!r}; this run's targets are {', '.join(names)}")
    if what.lower() in ("min", "max"):
        return Goal(name, what.lower())
    try:
        value = float(what)
    except ValueError:
        raise ValueError(f"--goal: expected a number, min or max after '{name}=', got {what!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"--goal: expected a finite number after '{name}=', got {what!r}")
    return Goal(name, "value", value)


def _partial(m: np.ndarray, s: np.ndarray, a, c) -> tuple[np.ndarray, np.ndarray]:
    """For D ~ N(m, s²): P(a < D < c) and E[D 1{a < D < c}]."""
    al, be = (a - m) / s, (c - m) / s
    p = stats.norm.cdf(be) - stats.norm.cdf(al)
    return p, m * p + s * (stats.norm.pdf(al) - stats.norm.pdf(be))


def expected_improvement(mean: np.ndarray, std: np.ndarray, *, goal: Goal, best: float) -> np.ndarray:
    """(N,) expected improvement over `best` (the best measured `goal.distance`) at each candidate.

    For ``min`` (``max`` mirrors it): EI = (best - mu) Φ(z) + σ φ(z), z = (best - mu) / σ.
    For a value v: with D = Y - v ~ N(m = mu - v, σ²) and b = best >= 0,
    EI = E[(b - |D|)+] = b P(-b < D < b) - E[D 1{0 < D < b}] + E[D 1{-b < D < 0}].
    """
    mu = np.asarray(mean, np.float64)
    s = np.maximum(np.asarray(std, np.float64), 1e-12)
    if goal.kind in ("min", "max"):
        sign = 1.0 if goal.kind == "min" else -1.0
        imp = best - sign * mu  # best is already a distance (sign applied)
        z = imp / s
        return imp * stats.norm.cdf(z) + s * stats.norm.pdf(z)
    b = max(float(best), 0.0)
    m = mu - goal.value
    p, _ = _partial(m, s, -b, b)
    _, pos = _partial(m, s, 0.0, b)
    _, neg = _partial(m, s, -b, 0.0)
    return np.maximum(b * p - pos + neg, 0.0)


def uncertainty_score(std: np.ndarray, scale: np.ndarray, *, target: int | None = None) -> np.ndarray:
    """(N,) exploration score: std / scale, one target's or the RMS over targets.

    Args:
        std: (N, K) calibrated predictive std.
        scale: (K,) each target's spread (e.g. its std over the measured points), so that
            targets in different units weigh alike.
        target: index of one target, or None for all.
    """
    z = np.asarray(std, np.float64) / np.maximum(np.asarray(scale, np.float64), 1e-12)
    return z[:, target] if target is not None else np.sqrt(np.mean(z**2, axis=1))


def information_density(features: np.ndarray, reference: np.ndarray, *, batch: int = 4096) -> np.ndarray:
    """(N,) each row of `features` (N, D): its mean RBF similarity to the rows of `reference` (M, D).

    The "information density" of Settles & Craven (2008): multiplying an uncertainty score by it
    weighs down outlying inputs, where an ensemble disagrees most but which say least about the
    rest. Length scale: l² = the median squared distance over all pairs of reference rows (the
    median heuristic). Memory: (batch, M) at a time.

    Example:
        >>> f = np.array([[0.0], [0.1], [-0.1], [5.0]])
        >>> d = information_density(f, f)
        >>> int(d.argmin()), bool(d.min() > 0)
        (3, True)
    """
    f = np.asarray(features, np.float64)
    r = np.asarray(reference, np.float64)
    if f.ndim != 2 or r.ndim != 2 or f.shape[1] != r.shape[1] or len(r) < 2:
        raise ValueError(f"features, reference: expected (N, D) and (M >= 2, D) arrays, got {f.shape} and {r.shape}")
    sq_r = (r**2).sum(1)

    def d2(a: np.ndarray) -> np.ndarray:
        return np.maximum((a**2).sum(1)[:, None] + sq_r[None] - 2 * a @ r.T, 0.0)

    ell2 = float(np.median(d2(r))) or 1.0  # every reference row alike: any scale ranks alike
    return np.concatenate([np.exp(-d2(f[i:i + batch]) / (2 * ell2)).mean(1) for i in range(0, len(f), batch)])


DENSITY_COMPONENTS = 20  # PCA components of the patches (as the campaign benchmark's GP baseline)
DENSITY_REFERENCE = 2000  # at most this many reference patches (memory and time bounded)


def patch_density(source, candidates: np.ndarray, reference: np.ndarray, *, batch: int = 256,
                  seed: int = 0) -> np.ndarray:
    """(len(candidates),) `information_density` of the candidates' patches among the reference ones.

    Features: the first `DENSITY_COMPONENTS` principal components (scikit-learn PCA, fitted on at
    most `DENSITY_REFERENCE` reference patches) of the standardised, flattened patches, each
    component scaled to unit std over the reference, as `bench/bench_campaign.py` does.

    Args:
        source: a `structattn.scale.PatchSource` (standardised patches, cut on demand).
        candidates, reference: indices into `source`.
    """
    from sklearn.decomposition import PCA

    candidates = np.asarray(candidates, np.int64)
    reference = np.asarray(reference, np.int64)
    if len(reference) > DENSITY_REFERENCE:
        reference = np.sort(np.random.default_rng(seed).choice(reference, DENSITY_REFERENCE, replace=False))
    ref = source.take(reference).reshape(len(reference), -1)
    pca = PCA(n_components=min(DENSITY_COMPONENTS, *ref.shape), random_state=seed).fit(ref)
    fr = pca.transform(ref)
    sd = np.maximum(fr.std(0), 1e-12)
    fc = np.concatenate([pca.transform(source.take(candidates[i:i + batch]).reshape(len(candidates[i:i + batch]), -1))
                         for i in range(0, len(candidates), batch)]) / sd
    return information_density(fc, fr / sd)


def far_from(candidates: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: candidates (N, 2) at least `radius` px from every one of `points` (M, 2)."""
    if len(points) == 0 or radius <= 0:
        return np.ones(len(candidates), bool)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(np.asarray(points, float)).query(np.asarray(candidates, float), k=1)
    return d >= radius


def select_spread(positions: np.ndarray, scores: np.ndarray, *, n: int, min_distance: float) -> np.ndarray:
    """Indices of `n` candidates, best score first, each >= `min_distance` px from those before it.

    Greedy: take the best remaining candidate, drop every candidate within `min_distance`
    of it, repeat. Raises ValueError (naming --n) when fewer than `n` fit.
    """
    positions = np.asarray(positions, np.float64)
    scores = np.asarray(scores, np.float64)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"--n: expected a number of positions >= 1, got {n!r}")
    if n > len(positions):
        raise ValueError(f"--n: asked for {n} positions, there are only {len(positions)} unmeasured candidates")
    alive = np.isfinite(scores)
    picked: list[int] = []
    order_score = np.where(alive, scores, -np.inf)
    for _ in range(n):
        if not alive.any():
            raise ValueError(f"--n: only {len(picked)} positions fit at least {min_distance:g} px apart among the "
                             f"{len(positions)} candidates; ask for fewer or lower --min-distance")
        i = int(np.argmax(np.where(alive, order_score, -np.inf)))
        picked.append(i)
        d2 = ((positions - positions[i]) ** 2).sum(1)
        alive &= d2 >= min_distance**2
        alive[i] = False
    return np.array(picked, int)


MAXDET_NOISE = 0.01  # sigma = 0.1 on a kernel scaled to mean diagonal 1 (Holzmüller et al. 2023)


def select_maxdet(measured: np.ndarray, candidates: np.ndarray, *, n: int, noise: float = MAXDET_NOISE) -> np.ndarray:
    """Indices of `n` candidates chosen jointly by greedy MaxDet on a feature kernel (batch active learning).

    The batch method of Holzmüller et al. (2023, "A framework and benchmark for deep batch
    active learning for regression", JMLR 24, 164), in its ``P`` mode with a last-layer kernel:

    * kernel k(a, b) = <f(a), f(b)> on the network's last hidden features (an ensemble
      concatenates its members' features, i.e. sums their kernels), scaled so its mean
      diagonal over the measured points is 1;
    * the Gaussian-process posterior given the measured points with noise variance `noise`
      (a Bayesian linear model on the features, prior N(0, I) on the weights);
    * greedily the candidate of largest posterior variance, then condition on it as if it
      were measured (a rank-one update), and repeat: this maximises the determinant of the
      batch's posterior covariance one point at a time.

    Unlike ranking by the ensemble's spread, a candidate whose features resemble one already
    picked loses its variance, so the batch is diverse in what the model sees, not only in
    position, and the spread needs no distance.

    Args:
        measured: (M, D) features of the measured points (M may be 0).
        candidates: (N, D) features of the candidates.
        n: how many to pick (1 <= n <= N).
        noise: observation-noise variance on the scaled kernel.
    """
    fc = np.asarray(candidates, np.float64)
    if fc.ndim != 2 or not len(fc):
        raise ValueError(f"candidates: expected (N, D) features with N >= 1, got shape {fc.shape}")
    fm = np.asarray(measured, np.float64)
    if fm.size == 0:
        fm = fm.reshape(0, fc.shape[1])
    if fm.ndim != 2 or fm.shape[1] != fc.shape[1]:
        raise ValueError(f"measured: expected (M, {fc.shape[1]}) features like the candidates', got shape {fm.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(fc):
        raise ValueError(f"--n: expected 1 to {len(fc)} positions (the candidates), got {n!r}")
    if not (np.isfinite(fm).all() and np.isfinite(fc).all()):
        raise ValueError("features: expected finite values, got NaN or inf")
    if not noise > 0:
        raise ValueError(f"noise: expected a variance > 0, got {noise!r}")
    ref = fm if len(fm) else fc
    scale = np.sqrt(max(float(np.mean(np.sum(ref**2, axis=1))), 1e-300))
    fm, fc = fm / scale, fc / scale
    d = fc.shape[1]
    # Posterior weight covariance S = (Fm^T Fm / noise + I)^-1 (D x D: D is small), kept symmetric.
    s = np.linalg.inv(fm.T @ fm / noise + np.eye(d))
    s = (s + s.T) / 2
    var = np.einsum("nd,de,ne->n", fc, s, fc)
    alive = np.ones(len(fc), bool)
    picked: list[int] = []
    for _ in range(n):
        i = int(np.argmax(np.where(alive, var, -np.inf)))
        picked.append(i)
        alive[i] = False
        g = s @ fc[i]  # S f_i
        denom = noise + float(fc[i] @ g)
        s -= np.outer(g, g) / denom
        var -= (fc @ g) ** 2 / denom
    return np.array(picked, int)
