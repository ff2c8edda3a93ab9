"""Batched fit of the 9-parameter loop model to many loops at once.

All loops and all starts form one batch of ``B = N * n_starts`` small least-squares
problems that share the bias vector. A hand-written batched Levenberg–Marquardt
step (9x9 normal equations per problem, solved together with
``torch.linalg.solve``) replaces thousands of Python-level ``least_squares``
calls; the analytic Jacobian comes from :mod:`structattn.loops.model`.

Bounds are kept by an active set with projected steps, and the damping has a floor
so that flat directions cannot leap to a bound (see ``_lm_batched``; both changes
took the median RMSE from 1% above a per-loop ``scipy`` fit to level with it, see
``bench/bench_loopfit.py``). Each loop is fitted in normalised units (centred on its
mid-range, divided by its span), so one set of bounds serves every loop whatever
its scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .direct import direct_descriptors
from .model import loop_model_jacobian_torch, loop_model_torch, loop_model_np, switching_descriptors_from_params
from .preprocess import check_loops_voltage
from .waveform import Branches, split_branches

__all__ = ["LoopFitter", "FitProblem", "make_problem", "DESCRIPTOR_ORDER"]

# Order of the columns of LoopFitter.transform.
DESCRIPTOR_ORDER: tuple[str, ...] = (
    "V+",
    "V-",
    "imprint",
    "R+",
    "R-",
    "switchable_polarization",
    "work_of_switching",
    "nucleation_bias_+",
    "nucleation_bias_-",
)


@dataclass
class FitProblem:
    """Everything both the batched and the per-loop reference fit need.

    Attributes:
        y: (N, V) normalised loops, ``(loop - center) / scale``.
        center: (N,) and ``scale`` (N,): the normalisation, data units.
        voltage: (V,) bias; ``rising`` (V,) bool branch mask.
        lower: (9,) and ``upper`` (9,): bounds in normalised units (shared).
        starts: (N, S, 9) starting parameters inside the bounds.
    """

    y: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    voltage: np.ndarray
    rising: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    starts: np.ndarray

    def denormalise(self, params: np.ndarray) -> np.ndarray:
        """(N, 9) normalised parameters -> data units (a0, a1, a4 scale; a2, a3, b do not)."""
        p = np.array(params, dtype=float, copy=True)
        p[:, 0] = self.center + self.scale * p[:, 0]
        p[:, 1] = self.scale * p[:, 1]
        p[:, 4] = self.scale * p[:, 4]
        return p


def make_problem(loops: np.ndarray, voltage: np.ndarray, *, branches: Branches | None = None, n_starts: int = 12, seed: int = 0) -> FitProblem:
    """Normalise the loops, set the bounds and draw the starts.

    Start 0 is the model-free guess (levels, direct V+/V-, narrow widths), start 1
    the same with wide widths; the rest perturb it at random (seeded): the
    switching voltages anywhere in the bias range, widths log-uniform, levels
    jittered, and every other random start with the loop orientation flipped.

    Args:
        loops: (N, V) clean loops (no NaN).
        voltage: (V,) bias.
        branches: branch structure; computed from ``voltage`` if None.
        n_starts: starts per loop (>= 1).
        seed: seed of the random starts.

    Returns:
        The :class:`FitProblem`.
    """
    x, v = check_loops_voltage(loops, voltage)
    if n_starts < 1:
        raise ValueError(f"n_starts: expected an integer >= 1, got {n_starts}")
    br = branches or split_branches(v)
    n = x.shape[0]
    hi_q, lo_q = np.percentile(x, 99, axis=1), np.percentile(x, 1, axis=1)
    center = 0.5 * (hi_q + lo_q)
    scale = hi_q - lo_q
    tiny = 1e-12 * np.max(np.abs(x), axis=1) + 1e-300
    scale = np.where(scale > tiny, scale, np.maximum(np.abs(center), 1.0) * 1e-6 + tiny)
    y = (x - center[:, None]) / scale[:, None]

    vmin, vmax = float(v.min()), float(v.max())
    vr = vmax - vmin
    step = float(np.median(np.abs(np.diff(v)))) or vr / max(v.size, 2)
    wmin, wmax = 0.1 * step, 0.5 * vr
    # a0 a1 a2 a3 a4 b0..b3 (normalised units: the loop spans ~[-0.5, 0.5])
    lower = np.array([-2.0, -3.0, vmin, vmin, -4.0 / vr, wmin, wmin, wmin, wmin])
    upper = np.array([2.0, 3.0, vmax, vmax, 4.0 / vr, wmax, wmax, wmax, wmax])

    d, ex = direct_descriptors(y, v, br)
    guess = np.zeros((n, 9))
    guess[:, 0] = ex["lo"]
    guess[:, 1] = ex["hi"] - ex["lo"]
    guess[:, 2] = d["V-"]
    guess[:, 3] = d["V+"]
    guess[:, 5:] = max(step, 0.03 * vr)

    rng = np.random.default_rng(seed)
    starts = np.repeat(guess[:, None, :], n_starts, axis=1)  # (N, S, 9)
    if n_starts > 1:
        starts[:, 1, 5:] = 0.15 * vr
    if n_starts > 2:
        k = n_starts - 2
        r = starts[:, 2:, :]
        r[..., 2:4] = rng.uniform(vmin + 0.1 * vr, vmax - 0.1 * vr, size=(n, k, 2))
        r[..., 2:4].sort(axis=-1)  # V- below V+: the usual loop, both orders stay reachable
        r[..., 5:] = np.exp(rng.uniform(np.log(max(wmin, 0.02 * vr)), np.log(0.3 * vr), size=(n, k, 4)))
        r[..., 0] += rng.normal(0.0, 0.1, size=(n, k))
        r[..., 1] *= rng.uniform(0.7, 1.3, size=(n, k))
        flip = np.zeros(k, dtype=bool)
        flip[1::2] = True  # orientation flipped: a0 <- top level, a1 <- -a1
        r[:, flip, 0] = r[:, flip, 0] + r[:, flip, 1]
        r[:, flip, 1] = -r[:, flip, 1]
        r[:, flip, 2:4] = r[:, flip, 2:4][..., ::-1]
    margin = 1e-3 * (upper - lower)
    starts = np.clip(starts, lower + margin, upper - margin)
    return FitProblem(y=y, center=center, scale=scale, voltage=v, rising=br.rising_mask, lower=lower, upper=upper, starts=starts)


def _lm_batched(
    problem: FitProblem,
    *,
    max_iter: int,
    tol: float,
    device: str,
    dtype: torch.dtype,
    prune_at: int = 15,
    keep_starts: int = 2,
    damping_floor: float = 0.3,
):
    """Batched bounded Levenberg–Marquardt over all loops x starts.

    Works on ``q = (p - lower) / (upper - lower)`` in the unit box. Bounds are kept
    by an active set: a parameter on a bound whose descent direction points out of
    the box is held there for that step (its row and column of the normal equations
    become the identity), and every step is projected onto the box. The damping is
    Marquardt's ``diag(J^T J)`` floored at ``damping_floor`` times its largest entry:
    a flat direction (a switching voltage on a saturated branch, a width near 0)
    otherwise gets almost no damping and LM leaps along it to a bound and stays
    there. After ``prune_at`` iterations only each loop's ``keep_starts`` best starts
    keep iterating (the others are frozen where they are).

    Returns:
        ``(params, cost, n_iter)``: best-start normalised params (N, 9), their
        sum of squared residuals (N,), iterations run.
    """
    n, s, _ = problem.starts.shape
    dev = torch.device(device)
    kw = dict(device=dev, dtype=dtype)
    v = torch.as_tensor(problem.voltage, **kw)
    rising = torch.as_tensor(problem.rising, device=dev)
    lo = torch.as_tensor(problem.lower, **kw)
    width = torch.as_tensor(problem.upper - problem.lower, **kw)
    y = torch.as_tensor(problem.y, **kw).repeat_interleave(s, dim=0)  # (B, V), B = N*S
    p0 = torch.as_tensor(problem.starts.reshape(n * s, 9), **kw)
    z = ((p0 - lo) / width).clamp(0.0, 1.0)  # (B, 9) in the unit box

    def cost_at(zz, yy):
        """Sum of squared residuals at zz, no Jacobian: (A,)."""
        rr = loop_model_torch(v, lo + width * zz, rising=rising) - yy
        return (rr * rr).sum(dim=1)

    def normal_eqs(zz, yy):
        """J^T J (A, 9, 9), J^T r (A, 9), cost (A,) at zz (J w.r.t. z)."""
        f, jac = loop_model_jacobian_torch(v, lo + width * zz, rising=rising)
        jz = jac * width  # chain rule: (A, V, 9)
        rr = f - yy
        jt = jz.transpose(1, 2)
        return jt @ jz, (jt @ rr[..., None])[..., 0], (rr * rr).sum(dim=1)

    # Work on the still-active problems only: most converge in a few dozen
    # iterations, a few need hundreds. Finished ones are written to z_out/cost_out.
    # The Jacobian (the costly part) is recomputed only where a step was accepted.
    z_out = z.clone()
    cost_out = torch.full((n * s,), float("inf"), **kw)
    act = torch.arange(n * s, device=dev)  # (A,) indices of active problems
    y_all = y
    a, g, cost = normal_eqs(z, y)
    lam = torch.full((n * s,), 1e-2, **kw)
    eye = torch.eye(9, **kw)
    it = 0
    for it in range(1, max_iter + 1):
        diag = torch.diagonal(a, dim1=1, dim2=2).clamp_min(1e-12)
        diag = torch.maximum(diag, damping_floor * diag.amax(dim=1, keepdim=True))
        m = a + lam[:, None, None] * torch.diag_embed(diag) + 1e-12 * eye
        rhs = -g
        held = ((z <= 0.0) & (g > 0)) | ((z >= 1.0) & (g < 0))  # on a bound, pushed outward
        if bool(held.any()):
            free = (~held).to(dtype)
            m = m * free[:, :, None] * free[:, None, :] + torch.diag_embed(held.to(dtype))
            rhs = rhs * free
        step, info = torch.linalg.solve_ex(m, rhs)
        step = torch.where((info == 0)[:, None], step, torch.zeros_like(step))
        z_new = (z + step).clamp(0.0, 1.0)  # projection onto the box
        cost_new = cost_at(z_new, y)
        ok = torch.isfinite(cost_new) & (cost_new < cost)
        rel = (cost - cost_new) / cost.clamp_min(1e-30)
        lam = torch.where(ok, lam * 0.3, lam * 4.0).clamp(1e-9, 1e9)
        idx = torch.nonzero(ok).squeeze(1)
        if idx.numel():
            z = z.index_copy(0, idx, z_new[idx])
            a_i, g_i, c_i = normal_eqs(z[idx], y[idx])
            a = a.index_copy(0, idx, a_i)
            g = g.index_copy(0, idx, g_i)
            cost = cost.index_copy(0, idx, c_i)
        # Converged: an accepted step that barely helps, or a damping so large
        # that no step helps any more.
        done = (ok & (rel < tol)) | (lam >= 1e7) | (cost <= 1e-30)
        if it == prune_at and s > keep_starts:
            # Successive halving of the starts: after a few iterations the basin
            # of each start is clear; only each loop's best ``keep_starts`` go on.
            full = cost_out.clone()
            full[act] = cost
            full = torch.nan_to_num(full, nan=float("inf")).reshape(n, s)
            rank = torch.argsort(torch.argsort(full, dim=1), dim=1).reshape(-1)  # (N*S,) rank within loop
            done = done | (rank[act] >= keep_starts)
        if it == max_iter:
            done = torch.ones_like(done)
        if bool(done.any()):
            z_out[act[done]] = z[done]
            cost_out[act[done]] = cost[done]
            keep = ~done
            if not bool(keep.any()):
                break
            act, z, a, g, cost, lam = act[keep], z[keep], a[keep], g[keep], cost[keep], lam[keep]
            y = y_all[act]
    p = (lo + width * z_out).reshape(n, s, 9)
    cost = cost_out.reshape(n, s)
    best = torch.argmin(torch.nan_to_num(cost, nan=float("inf")), dim=1)
    rows = torch.arange(n, device=dev)
    return p[rows, best].cpu().double().numpy(), cost[rows, best].cpu().double().numpy(), it


class LoopFitter:
    """Batched 9-parameter loop fit (Jesse, Lee & Kalinin 2006, as in BGlib).

    sklearn-style: ``__init__`` stores options, :meth:`fit` returns ``self`` and
    sets the fitted state (names ending in ``_``), :meth:`transform` gives the
    BGlib switching descriptors (columns :data:`DESCRIPTOR_ORDER`).

    Args:
        voltage: (V,) bias of every loop, acquisition order.
        n_starts: starts per loop; the best (lowest cost) is kept.
        max_iter: Levenberg–Marquardt iterations at most.
        tol: relative cost decrease under which a problem counts as converged.
        device: torch device (``"cpu"``, ``"cuda"``).
        dtype: ``"float64"`` (default, exact enough for tiny loop heights) or ``"float32"``.
        seed: seed of the random starts; same seed, same result.
        nucleation_threshold: switched fraction that defines the nucleation biases.
        num_threads: torch CPU threads during the fit (restored afterwards); None
            leaves torch's setting. On a small, busy machine 1 is often fastest:
            the batch is memory-bound and idle-waiting threads cost more than they give.

    Example:
        >>> from structattn.loops.model import loop_model_np
        >>> from structattn.loops.waveform import split_branches
        >>> v = np.concatenate([np.linspace(0, 8, 17), np.linspace(7.5, -8, 32), np.linspace(-7.5, -0.5, 15)])
        >>> p = np.array([[0.0, 1.0, -3.0, 2.0, 0.0, 0.5, 0.5, 0.5, 0.5]])
        >>> loops = loop_model_np(v, p, rising=split_branches(v).rising_mask)
        >>> fitter = LoopFitter(voltage=v, n_starts=4).fit(loops)
        >>> np.round(fitter.params_[0, 2:4], 2).tolist(), bool(fitter.r2_[0] > 0.999)
        ([-3.0, 2.0], True)
    """

    def __init__(
        self,
        *,
        voltage: np.ndarray,
        n_starts: int = 12,
        max_iter: int = 200,
        tol: float = 1e-7,
        device: str = "cpu",
        dtype: str = "float64",
        seed: int = 0,
        nucleation_threshold: float = 0.03,
        num_threads: int | None = None,
    ) -> None:
        self.voltage = voltage
        self.n_starts = n_starts
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.nucleation_threshold = nucleation_threshold
        self.num_threads = num_threads

    def _torch_dtype(self) -> torch.dtype:
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype: expected 'float64' or 'float32', got {self.dtype!r}")
        return torch.float64 if self.dtype == "float64" else torch.float32

    def fit(self, loops: np.ndarray, y=None) -> "LoopFitter":
        """Fit every loop.

        Args:
            loops: (N, V) loops without NaN (see :func:`~structattn.loops.preprocess.preprocess_loops`).
            y: ignored (sklearn signature).

        Returns:
            self, with ``params_`` (N, 9) in data units, ``fitted_`` (N, V),
            ``r2_`` (N,), ``rmse_`` (N,), ``n_iter_``, ``branches_``.
        """
        x, v = check_loops_voltage(loops, self.voltage)
        if not np.all(np.isfinite(x)):
            raise ValueError("loops: expected finite values; repair NaN first with preprocess_loops")
        if self.max_iter < 1:
            raise ValueError(f"max_iter: expected an integer >= 1, got {self.max_iter}")
        dtype = self._torch_dtype()
        self.branches_ = split_branches(v)
        problem = make_problem(x, v, branches=self.branches_, n_starts=self.n_starts, seed=self.seed)
        before = torch.get_num_threads()
        if self.num_threads is not None:
            if self.num_threads < 1:
                raise ValueError(f"num_threads: expected None or an integer >= 1, got {self.num_threads}")
            torch.set_num_threads(self.num_threads)
        try:
            p_norm, _, self.n_iter_ = _lm_batched(
                problem, max_iter=self.max_iter, tol=self.tol, device=self.device, dtype=dtype
            )
        finally:
            torch.set_num_threads(before)
        self.params_ = problem.denormalise(p_norm)
        self.fitted_ = loop_model_np(v, self.params_, rising=self.branches_.rising_mask)
        resid = x - self.fitted_
        ss_res = (resid**2).sum(axis=1)
        ss_tot = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        self.rmse_ = np.sqrt(ss_res / x.shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            self.r2_ = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 0.0)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError("LoopFitter: call fit(loops) before transform()")

    def descriptors(self) -> dict[str, np.ndarray]:
        """BGlib switching descriptors of the fitted loops, name -> (N,)."""
        self._check_fitted()
        return switching_descriptors_from_params(self.params_, nucleation_threshold=self.nucleation_threshold)

    def transform(self, loops: np.ndarray | None = None) -> np.ndarray:
        """Switching descriptors, (N, 9), columns :data:`DESCRIPTOR_ORDER`.

        Args:
            loops: None for the fitted loops; other loops are fitted first with the
                same options (the fitted state is left as it was).
        """
        if loops is not None:
            other = LoopFitter(**self.get_params()).fit(loops)
            d = other.descriptors()
        else:
            d = self.descriptors()
        return np.stack([d[k] for k in DESCRIPTOR_ORDER], axis=1)

    def fit_transform(self, loops: np.ndarray, y=None) -> np.ndarray:
        """``fit(loops).transform()``."""
        return self.fit(loops).transform()

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the :meth:`transform` columns."""
        return np.array(DESCRIPTOR_ORDER, dtype=object)

    def get_params(self, deep: bool = True) -> dict:
        """Constructor options (sklearn ``get_params``)."""
        return {k: getattr(self, k) for k in (
                "voltage",
                "n_starts",
                "max_iter",
                "tol",
                "device",
                "dtype",
                "seed",
                "nucleation_threshold",
                "num_threads",
            )}

    def set_params(self, **params) -> "LoopFitter":
        """Set constructor options (sklearn ``set_params``)."""
        valid = self.get_params()
        for k, val in params.items():
            if k not in valid:
                raise ValueError(f"set_params: unknown option {k!r}; valid: {sorted(valid)}")
            setattr(self, k, val)
        return self


