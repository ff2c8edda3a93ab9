"""Turning a `--targets` spec into the (N, K) array the model learns.

A spec is a comma-separated list. Each item is one of:

* the name of a column of the sample's given ``targets`` (e.g. ``V+``);
* (loop analysis) a loop descriptor computed from the loops, see `structattn.loops`;
* (latents) ``latent`` or ``latent:0,2``, see `structattn.latent`.

``None`` or ``""`` means: all given targets if the sample has them.
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


def resolve_targets(sample: Sample, spec: str | None, *, train_index: np.ndarray | None = None) -> TargetSet:
    """Resolve `spec` against `sample` (see module doc).

    Args:
        sample: the data.
        spec: the ``--targets`` string.
        train_index: training points, for targets that are themselves fitted (latents).
    """
    items = parse_spec(spec)
    given = list(sample.target_names)
    if not items:
        if sample.targets is None:
            raise ValueError(
                "--targets: the data have loops but no given targets; name loop descriptors to compute, "
                "e.g. --targets V+,V-,imprint"
            )
        items = given
    cols, names, units = [], [], []
    info: dict = {}
    for it in items:
        if it in given:
            cols.append(sample.targets[:, given.index(it)])
            names.append(it)
            units.append(_given_unit(sample, it))
            continue
        raise ValueError(
            f"--targets: {it!r} is not a given target of this sample {given or '(none given)'}"
            + ("" if sample.loops is None else "; loop descriptors are not available in this build")
        )
    return TargetSet(values=np.stack(cols, axis=1), names=tuple(names), units=tuple(units), info=info)


def _given_unit(sample: Sample, name: str) -> str:
    return str(sample.meta.get("target_units", {}).get(name, ""))
