"""The entry points the pipeline calls: `fit_latents`, `parse_latent_spec`, `traverse`,
plus `clip_spikes`, a simple robust pre-clean for measured loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import LatentEstimator, check_index, check_loops
from .linear import NMFLatent, PCALatent
from .vae import LoopVAE

KINDS = ("vae", "pca", "nmf")


@dataclass(frozen=True, eq=False)
class LatentResult:
    """Latents of a loop set, ready to be used as regression targets.

    Attributes:
        model: the fitted estimator (`LoopVAE`, `PCALatent` or `NMFLatent`).
        latents: (N, n_latent) latents of all loops (fitted on the training split only).
        names: ("latent0", ...) target names.
        recon_error: mean squared reconstruction error over all loops, loop units².
        recon_error_rel: the same divided by the mean square of the centred loops
            (fraction of loop-shape variance not explained).
        recon_error_heldout: mean squared error over loops outside `train_index`
            (None when all loops were used for fitting).
        kind: "vae", "pca" or "nmf".
        voltage: (V,) waveform of the loops (for traversal plots).
    """

    model: LatentEstimator
    latents: np.ndarray
    names: tuple[str, ...]
    recon_error: float
    recon_error_rel: float
    recon_error_heldout: float | None
    kind: str
    voltage: np.ndarray


def make_estimator(*, kind: str = "vae", n_latent: int = 3, beta: float = 1.0, seed: int = 0) -> LatentEstimator:
    """An unfitted estimator of `kind` ("vae", "pca", "nmf"); `beta` is used by the VAE only."""
    if kind == "vae":
        return LoopVAE(n_latent=n_latent, beta=beta, seed=seed)
    if kind == "pca":
        return PCALatent(n_latent=n_latent, seed=seed)
    if kind == "nmf":
        return NMFLatent(n_latent=n_latent, seed=seed)
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


def fit_latents(
    loops,
    voltage,
    *,
    kind: str = "vae",
    n_latent: int = 3,
    beta: float = 1.0,
    seed: int = 0,
    train_index=None,
) -> LatentResult:
    """Fit an unsupervised loop model on the training loops and encode all loops.

    Args:
        loops: (N, V) hysteresis loops (finite; pre-clean spikes first, see `clip_spikes`).
        voltage: (V,) waveform.
        kind: "vae" (`LoopVAE`), "pca" or "nmf" baselines of the same size.
        n_latent: number of latents.
        beta: KL weight of the VAE.
        seed: random seed.
        train_index: indices (or boolean mask) of the training points; the model never
            sees the others, so the surrogate's test split stays unseen.

    Returns:
        A `LatentResult`.

    Example:
        >>> from structattn.data.synthetic import make_synthetic
        >>> s = make_synthetic(seed=0)
        >>> r = fit_latents(s.loops, s.voltage, kind="pca", n_latent=2)
        >>> r.latents.shape, r.names
        ((1089, 2), ('latent0', 'latent1'))
    """
    x = check_loops(loops)
    try:
        v = np.asarray(voltage, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"voltage: expected a numeric (V,) array ({exc})") from None
    if v.ndim != 1 or v.shape[0] != x.shape[1]:
        raise ValueError(f"voltage: expected shape (V={x.shape[1]},) matching loops {x.shape}, got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("voltage: contains NaN/inf")
    idx = check_index(train_index, x.shape[0])
    model = make_estimator(kind=kind, n_latent=n_latent, beta=beta, seed=seed)
    model.fit(x, train_index=idx)
    held = np.setdiff1d(np.arange(x.shape[0]), idx)
    return LatentResult(
        model=model,
        latents=model.transform(x),
        names=tuple(f"latent{i}" for i in range(n_latent)),
        recon_error=model.reconstruction_error(x),
        recon_error_rel=model.reconstruction_error(x, relative=True),
        recon_error_heldout=model.reconstruction_error(x[held]) if held.size else None,
        kind=kind,
        voltage=v,
    )


def parse_latent_spec(spec: str, n_latent: int) -> list[int]:
    """Latent indices selected by a ``--targets`` spec: ``latent`` (all) or ``latent:0,2``.

    Example:
        >>> parse_latent_spec("latent", 3), parse_latent_spec("latent:0,2", 3)
        ([0, 1, 2], [0, 2])
    """
    if not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
        raise ValueError(f"n_latent: expected a positive int, got {n_latent!r}")
    if not isinstance(spec, str):
        raise TypeError(f"--targets: expected a string like 'latent' or 'latent:0,2', got {type(spec).__name__}")
    s = spec.strip()
    if s == "latent":
        return list(range(n_latent))
    head, sep, tail = s.partition(":")
    if head != "latent" or not sep:
        raise ValueError(f"--targets: expected 'latent' or 'latent:i,j,...', got {spec!r}")
    out: list[int] = []
    for part in tail.split(","):
        part = part.strip()
        try:
            i = int(part)
        except ValueError:
            raise ValueError(f"--targets: latent index {part!r} in {spec!r} is not an integer") from None
        if not 0 <= i < n_latent:
            raise ValueError(
                f"--targets: latent index {i} in {spec!r} is out of range; the latent model has "
                f"{n_latent} latents (0..{n_latent - 1}); use --latent-size to fit more"
            )
        if i in out:
            raise ValueError(f"--targets: latent index {i} repeated in {spec!r}")
        out.append(i)
    return out


def traverse(
    model: LatentEstimator,
    *,
    latent: int,
    n_steps: int = 7,
    span: float = 2.0,
    return_values: bool = False,
):
    """Decoded loops while latent `latent` moves across its range, the others held at their mean.

    The range is ``mean ± span * std`` of that latent over the training loops, clipped to the
    training minimum/maximum so a traversal never leaves the data's support (and NMF
    loadings stay non-negative).

    Args:
        model: a fitted estimator.
        latent: index of the latent to move.
        n_steps: number of decoded loops.
        span: half-width of the range in training standard deviations.
        return_values: also return the (n_steps,) latent values.

    Returns:
        (n_steps, V) decoded loops (offset 0, loop units), and the values if asked.
    """
    if not hasattr(model, "latent_mean_"):
        raise ValueError(f"model: expected a fitted latent estimator, got {type(model).__name__} (call fit first)")
    if not isinstance(latent, (int, np.integer)) or not 0 <= latent < model.n_latent:
        raise ValueError(f"latent: expected an int in [0, {model.n_latent}), got {latent!r}")
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 2:
        raise ValueError(f"n_steps: expected an int >= 2, got {n_steps!r}")
    if not (np.isfinite(span) and span > 0):
        raise ValueError(f"span: expected a positive number of standard deviations, got {span!r}")
    mu, sd = model.latent_mean_[latent], model.latent_std_[latent]
    lo = max(mu - span * sd, model.latent_min_[latent])
    hi = min(mu + span * sd, model.latent_max_[latent])
    values = np.linspace(lo, hi, n_steps)
    z = np.tile(model.latent_mean_, (n_steps, 1))  # (n_steps, L)
    z[:, latent] = values
    loops = model.inverse_transform(z)
    return (loops, values) if return_values else loops


def clip_spikes(loops, *, k: float = 10.0, window: int = 5) -> np.ndarray:
    """(N, V) loops with isolated spikes replaced by a running median (a robust pre-clean).

    Each loop is compared with its running median over `window` samples along the waveform;
    a sample whose residual exceeds k times the loop's noise scale is replaced by the running
    median. The noise scale is the MAD of the loop's first differences (×1.4826/√2, a Gaussian
    std), not of the residuals: on smooth stretches the running median equals the data and
    the residual MAD collapses towards 0, which would flag ordinary samples. Switching edges survive because they
    are followed by the running median, unlike a spike of one or two samples. A stop-gap:
    `structattn.loops` does a fuller job. Loops whose noise scale is 0 are left unchanged.
    """
    from scipy.ndimage import median_filter

    x = check_loops(loops)
    if not (np.isfinite(k) and k > 0):
        raise ValueError(f"k: expected a positive number of MADs, got {k!r}")
    if not isinstance(window, (int, np.integer)) or window < 3 or window % 2 == 0:
        raise ValueError(f"window: expected an odd int >= 3, got {window!r}")
    med = median_filter(x, size=(1, window), mode="nearest")  # (N, V) running median per loop
    resid = x - med
    mad = 1.4826 / np.sqrt(2) * np.median(np.abs(np.diff(x, axis=1)), axis=1, keepdims=True)  # (N, 1)
    spike = (np.abs(resid) > k * mad) & (mad > 0)
    return np.where(spike, med, x)


def _crossing(v: np.ndarray, y: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(N,) voltage where each branch y (N, M), ordered by ascending v (M,), first crosses
    `level` (N,) upwards, linearly interpolated; NaN if it never does."""
    above = y >= level[:, None]
    out = np.full(y.shape[0], np.nan)
    for i in range(y.shape[0]):
        j = np.flatnonzero(above[i])
        if j.size == 0:
            continue
        j = int(j[0])
        if j == 0:
            out[i] = v[0]
            continue
        y0, y1 = y[i, j - 1], y[i, j]
        out[i] = v[j - 1] + (level[i] - y0) * (v[j] - v[j - 1]) / (y1 - y0) if y1 != y0 else v[j]
    return out


def loop_descriptors(voltage, loops) -> dict[str, np.ndarray]:
    """Simple shape descriptors to read traversals by (each (N,)).

    * ``v_rise``: voltage where the rising branch crosses the loop's mid-level (≈ V+);
    * ``v_fall``: voltage where the falling branch crosses it (≈ V-);
    * ``amplitude``: max - min (≈ 2 × switchable response);
    * ``area``: falling-branch mean minus rising-branch mean (how open the loop is).

    Crossings assume a loop that rises with voltage on the rising branch (the usual sign);
    a branch that never crosses gives NaN. `structattn.loops` computes the field's full
    descriptor set; these few only need to be robust on smooth decoded loops.
    """
    v = np.asarray(voltage, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"voltage: expected a (V,) array, got shape {v.shape}")
    x = check_loops(loops, n_voltage=v.shape[0])
    rising = np.gradient(v) > 0  # (V,)
    mid = 0.5 * (x.max(axis=1) + x.min(axis=1))  # (N,)
    r = np.flatnonzero(rising)[np.argsort(v[rising], kind="stable")]
    f = np.flatnonzero(~rising)[np.argsort(v[~rising], kind="stable")]
    # falling branch: read from high to low voltage, crossing downwards == -y crossing -mid upwards
    v_fall = _crossing(-v[f][::-1], -x[:, f][:, ::-1], -mid)
    return {
        "v_rise": _crossing(v[r], x[:, r], mid),
        "v_fall": -v_fall,
        "amplitude": x.max(axis=1) - x.min(axis=1),
        "area": x[:, ~rising].mean(axis=1) - x[:, rising].mean(axis=1),
    }


def latent_targets(
    loops,
    voltage,
    spec: str,
    *,
    kind: str = "vae",
    n_latent: int = 3,
    beta: float = 1.0,
    seed: int = 0,
    train_index=None,
) -> tuple[np.ndarray, tuple[str, ...], LatentResult]:
    """Targets for one ``--targets`` latent item: (N, k) values, k names, the full result.

    The latent model is fitted on ``loops[train_index]`` only (the surrogate's validation
    and test points stay unseen) and all points are encoded.

    Example:
        >>> from structattn.data.synthetic import make_synthetic
        >>> s = make_synthetic(seed=0)
        >>> y, names, _ = latent_targets(s.loops, s.voltage, "latent:1", kind="pca", n_latent=2)
        >>> y.shape, names
        ((1089, 1), ('latent1',))
    """
    if not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
        raise ValueError(f"--latent-size: expected a positive int, got {n_latent!r}")
    if kind not in KINDS:
        raise ValueError(f"--latent-kind: expected one of {KINDS}, got {kind!r}")
    cols = parse_latent_spec(spec, n_latent)  # validate before the (slower) fit
    res = fit_latents(loops, voltage, kind=kind, n_latent=n_latent, beta=beta, seed=seed, train_index=train_index)
    return res.latents[:, cols], tuple(res.names[j] for j in cols), res


def latent_summary(
    result: LatentResult,
    loops,
    *,
    train_index=None,
    n_steps: int = 7,
    span: float = 2.0,
    baseline: str | None = "pca",
) -> dict[str, np.ndarray]:
    """Arrays for a run folder's ``latent.npz`` (what the report's latent section draws).

    Keys: ``latents`` (N, L), ``names`` (L,), ``voltage`` (V,), ``traversals`` (L, S, V),
    ``traversal_values`` (L, S), ``kind``, ``recon_error``, ``recon_error_rel``,
    ``recon_error_heldout`` (NaN if none), and, when `baseline` is given, the same errors of
    that baseline (``baseline_kind``, ``baseline_recon_error``, ...) fitted on the same
    training loops at the same size, so the report can state which reconstructs better.
    For a VAE also ``kl_per_latent`` (L,).
    """
    n_lat = result.latents.shape[1]
    trav, vals = zip(*(traverse(result.model, latent=j, n_steps=n_steps, span=span, return_values=True)
                       for j in range(n_lat)))
    out: dict[str, np.ndarray] = {
        "latents": result.latents.astype(np.float32),
        "names": np.array(result.names),
        "voltage": result.voltage,
        "traversals": np.stack(trav).astype(np.float32),
        "traversal_values": np.stack(vals),
        "kind": np.array(result.kind),
        "recon_error": np.array(result.recon_error),
        "recon_error_rel": np.array(result.recon_error_rel),
        "recon_error_heldout": np.array(np.nan if result.recon_error_heldout is None else result.recon_error_heldout),
    }
    if hasattr(result.model, "kl_per_latent_"):
        out["kl_per_latent"] = result.model.kl_per_latent_
    if baseline is not None and baseline != result.kind:
        base = fit_latents(loops, result.voltage, kind=baseline, n_latent=n_lat, seed=0, train_index=train_index)
        out["baseline_kind"] = np.array(baseline)
        out["baseline_recon_error"] = np.array(base.recon_error)
        out["baseline_recon_error_rel"] = np.array(base.recon_error_rel)
        out["baseline_recon_error_heldout"] = np.array(
            np.nan if base.recon_error_heldout is None else base.recon_error_heldout
        )
    return out
