"""Turning a `--targets` spec into the (N, K) array the model learns.

A spec is a comma-separated list. Each item is one of:

* the name of a column of the sample's given ``targets`` (e.g. ``V+``);
* (loop analysis) a loop descriptor computed from the loops, see `structattn.loops`;
* (latents) ``latent`` or ``latent:0,2``, see `structattn.latent`.

``None`` or ``""`` means: all given targets if the sample has them, else (loops without
targets) the standard loop descriptors ``structattn.loops.STANDARD_DESCRIPTORS``
(V+, V-, imprint, switchable_polarization).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data.sample import Sample


@dataclass
class TargetSet:
    """The resolved targets: values (N, K), names (K,), units (K,) and extras for reports."""

    values: np.ndarray
    names: tuple[str, ...]
    units: tuple[str, ...]
    valid: np.ndarray | None = None  # (N,) bool: points whose targets can be trusted; None = all
    info: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)  # extra arrays for the run folder, e.g. {"latent": {...}} -> latent.npz


def parse_spec(spec: str | None) -> list[str]:
    if spec is None:
        return []
    items = [s.strip() for s in spec.split(",")]
    # "latent:0,2" splits into "latent:0", "2": glue bare indices back onto a latent item.
    out: list[str] = []
    for it in items:
        if not it:
            continue
        if it.isdigit() and out and out[-1].startswith("latent:"):
            out[-1] += "," + it
        else:
            out.append(it)
    return out


def resolve_targets(
    sample: Sample,
    spec: str | None,
    *,
    train_index: np.ndarray | None = None,
    latent_kind: str = "vae",
    latent_size: int = 3,
    beta: float = 1.0,
    seed: int = 0,
) -> TargetSet:
    """Resolve `spec` against `sample` (see module doc).

    Args:
        sample: the data.
        spec: the ``--targets`` string.
        train_index: training points, for targets that are themselves fitted (latents).
        latent_kind, latent_size, beta, seed: the latent model of ``latent`` items
            (see `structattn.latent.fit_latents`).
    """
    items = parse_spec(spec)
    given = list(sample.target_names)
    if not items:
        if sample.targets is None:  # loops only: the standard descriptors
            from .loops import STANDARD_DESCRIPTORS

            items = list(STANDARD_DESCRIPTORS)
        else:
            items = given
    cols, names, units = [], [], []
    info: dict = {}
    arrays: dict = {}
    loop_names = _loop_descriptor_names() if sample.loops is not None else ()
    analysis = None
    valid = None
    for it in items:
        if it == "latent" or it.startswith("latent:"):  # (latent issue) unsupervised loop latents
            vals, lat_names, lat_units, lat_info, lat_arrays = _latent_items(
                sample, it, train_index=train_index, kind=latent_kind, n_latent=latent_size, beta=beta, seed=seed)
            cols.extend(vals.T)
            names.extend(lat_names)
            units.extend(lat_units)
            info["latent"] = lat_info
            arrays["latent"] = lat_arrays
            continue
        if it in loop_names and it not in given:  # loops: computed descriptor
            if analysis is None:
                analysis = _loop_analysis(sample)
                valid = analysis.quality.copy()
                info["loops"] = _loop_info(analysis)
            cols.append(analysis.values[it])
            names.append(it)
            units.append(_loop_descriptor_unit(it))
            continue
        if it in given:
            cols.append(sample.targets[:, given.index(it)])
            names.append(it)
            units.append(_given_unit(sample, it))
            continue
        raise ValueError(
            f"--targets: {it!r} is not a given target of this sample {given or '(none given)'}"
            + ("" if sample.loops is None else f"; loop descriptors: {list(loop_names)}")
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--targets: a target is named twice in {spec!r}: {names}")
    return TargetSet(values=np.stack(cols, axis=1), names=tuple(names), units=tuple(units), valid=valid, info=info,
                     arrays=arrays)


# --- loops: descriptors computed from the sample's loops (structattn.loops) ---


def _loop_descriptor_names() -> tuple[str, ...]:
    from .loops import DESCRIPTORS

    return tuple(DESCRIPTORS)


def _loop_descriptor_unit(name: str) -> str:
    from .loops import DESCRIPTORS

    return DESCRIPTORS[name][0]


_LAST_ANALYSIS: list = []  # [(key, analysis)]: the last fit, so the report reuses the targets stage's


def _loop_analysis(sample: Sample):
    """Batched fit of every loop (1 thread: reproducible, and fastest on a busy CPU).

    The fit is deterministic, so the last result is kept and returned again for the same loops
    and voltages (checked by content, not identity): a run's targets stage and its report's
    loop sections fit once. Callers must not modify the returned arrays.
    """
    import hashlib

    from .loops import LoopAnalysisConfig, compute_descriptors

    loops, volt = np.ascontiguousarray(sample.loops), np.ascontiguousarray(sample.voltage)
    h = hashlib.sha256()
    for a in (loops, volt):
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    key = h.hexdigest()
    if _LAST_ANALYSIS and _LAST_ANALYSIS[0][0] == key:
        return _LAST_ANALYSIS[0][1]
    analysis = compute_descriptors(loops, volt, config=LoopAnalysisConfig(num_threads=1))
    _LAST_ANALYSIS[:] = [(key, analysis)]
    return analysis


def _loop_info(analysis) -> dict:
    """Summary of the loop analysis for config.json (points kept, fit quality, flags)."""
    return {
        "method": analysis.method,
        "trustworthy_share": float(analysis.quality.mean()),
        "median_fit_r2": float(np.nanmedian(analysis.fit_r2)),
        "flag_shares": {k: float(v.mean()) for k, v in analysis.flags.items()},
        "note": "only trustworthy loops (all quality flags clear) are used for training and testing",
    }


def _given_unit(sample: Sample, name: str) -> str:
    return str(sample.meta.get("target_units", {}).get(name, ""))


def _latent_items(sample: Sample, item: str, *, train_index, kind: str, n_latent: int, beta: float, seed: int):
    """Values (N, k), names, units, JSON info and arrays of one ``latent`` item (latent issue)."""
    from .latent import latent_summary, latent_targets

    if sample.loops is None:
        raise ValueError(f"--targets: {item!r} needs loops to fit latents on, but the data have no loops")
    # The loop module's preprocessing (spike/NaN repair) first: latents should encode loop shape, not glitches.
    from .loops.preprocess import preprocess_loops

    loops = preprocess_loops(sample.loops, sample.voltage).clean
    vals, names, res = latent_targets(loops, sample.voltage, item, kind=kind, n_latent=n_latent,
                                      beta=beta, seed=seed, train_index=train_index)
    info = {"kind": kind, "n_latent": n_latent, "beta": beta, "fitted_on": "training split only",
            "recon_error": res.recon_error, "recon_error_rel": res.recon_error_rel,
            "recon_error_heldout": res.recon_error_heldout}
    arrays = latent_summary(res, loops, train_index=train_index)
    if "baseline_recon_error" in arrays:
        info["baseline"] = {"kind": str(arrays["baseline_kind"]), "recon_error": float(arrays["baseline_recon_error"]),
                            "recon_error_heldout": float(arrays["baseline_recon_error_heldout"])}
    return vals, names, ("",) * len(names), info, arrays
