"""One entry point from a data source string to a `Sample`.

Sources:
  ``synthetic`` or ``synthetic:seed=3``   the seeded synthetic default (`make_synthetic`)
  ``PATH.npz``                            the NPZ bundle (`load_bundle`)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .bundle import load_bundle
from .sample import Sample
from .synthetic import make_synthetic


def _parse_synthetic(source: str) -> dict:
    opts = {}
    _, _, rest = source.partition(":")
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or key not in ("seed", "size", "spacing"):
            raise ValueError(f"source: expected 'synthetic[:seed=N,size=N,spacing=N]', got {source!r}")
        try:
            opts[key] = int(val)
        except ValueError:
            raise ValueError(f"source: {key} must be an integer in {source!r}") from None
    return opts


def load_sample(source: str | Path) -> Sample:
    """Read `source` (see module doc) into a validated `Sample`."""
    text = str(source)
    if text == "synthetic" or text.startswith("synthetic:"):
        return make_synthetic(**_parse_synthetic(text))
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"bundle: no such file: {path}")
    if path.suffix.lower() == ".npz":
        return load_bundle(path)
    raise ValueError(f"bundle: unsupported file type {path.suffix!r} for {path}; expected .npz")


def sample_checksum(sample: Sample) -> str:
    """sha256 over the arrays that define the sample (for run provenance)."""
    h = hashlib.sha256()
    for arr in (sample.image, sample.positions, sample.loops, sample.voltage, sample.targets):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
