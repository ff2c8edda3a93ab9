"""One entry point from a data source string to a `Sample`.

Sources:
  ``synthetic`` or ``synthetic:seed=3``   the seeded synthetic default (`make_synthetic`);
                                          keys seed, size, spacing, radius (causal radius, px)
  ``semisynthetic:image=PATH,...``        real PFM texture with known rules (`make_semisynthetic`)
  ``PATH.npz``                            the NPZ bundle (`load_bundle`)
  ``PATH.h5``                             a pyNSID BEPS loop grid (`structattn.loops.sample_from_beps`);
                                          its structure image comes from ``structure_from``
  ``{"image": PATH, "loops": PATH, ...}``   a structure image and a spectroscopy grid placed on it by
                                          physical coordinates (JSON; `structattn.data.coregister`)
  ``{"samples": [SOURCE, ...], ...}``       several samples in one run (JSON; `structattn.data.multi`)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .bundle import load_bundle
from .sample import Sample
from .synthetic import make_synthetic


# key in the source string -> (make_synthetic parameter, type, what the error calls it)
_SYNTHETIC_KEYS = {
    "seed": ("seed", int, "an integer"),
    "size": ("size", int, "an integer"),
    "spacing": ("spacing", int, "an integer"),
    "radius": ("causal_radius", float, "a number"),
}


def _parse_synthetic(source: str) -> dict:
    opts = {}
    _, _, rest = source.partition(":")
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or key not in _SYNTHETIC_KEYS:
            raise ValueError(f"source: expected 'synthetic[:seed=N,size=N,spacing=N,radius=R]', got {source!r}")
        name, kind, what = _SYNTHETIC_KEYS[key]
        try:
            opts[name] = kind(val)
        except ValueError:
            raise ValueError(f"source: {key} must be {what} in {source!r}") from None
    if not opts.get("causal_radius", 1.0) >= 1:  # named as the user wrote it; make_synthetic checks too
        raise ValueError(f"source: radius must be >= 1 (pixels) in {source!r}")
    if opts.get("spacing", 1) < 1:
        raise ValueError(f"source: spacing must be >= 1 (pixels) in {source!r}")
    if opts.get("size", 64) < 33:
        raise ValueError(f"source: size must be >= 33 (pixels; points keep 16 px from the edge) in {source!r}")
    return opts


def load_sample(source: str | Path, *, structure_from: str = "response@0V") -> Sample:
    """Read `source` (see module doc) into a validated `Sample`.

    ``structure_from`` only matters for BEPS ``.h5`` files, which hold no structure
    image: ``"response@0V"`` or a loop descriptor name (see docs/loops.md).
    """
    text = str(source)
    if text.lstrip().startswith("{"):  # JSON: image + loops files, or several samples
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"source: not valid JSON ({exc}): {text[:80]!r}") from None
        if not isinstance(spec, dict):
            raise ValueError(f"source: expected a JSON object, got {text[:80]!r}")
        if "samples" in spec:
            from .multi import sample_from_multi_spec

            return sample_from_multi_spec(spec, load=load_sample, structure_from=structure_from)
        from .coregister import sample_from_spec

        return sample_from_spec(spec)
    if text == "synthetic" or text.startswith("synthetic:"):
        return make_synthetic(**_parse_synthetic(text))
    if text.startswith("semisynthetic:"):
        from .semisynthetic import make_semisynthetic, parse_semisynthetic

        return make_semisynthetic(**parse_semisynthetic(text))
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"bundle: no such file: {path}")
    if path.suffix.lower() == ".npz":
        return load_bundle(path)
    if path.suffix.lower() in (".h5", ".hdf5"):  # loops: pyNSID BEPS grid
        from ..loops.beps import sample_from_beps

        try:
            return sample_from_beps(path, structure_from=structure_from)
        except (OSError, KeyError, ValueError, TypeError) as exc:  # h5py's own messages name neither file nor field
            first = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            if isinstance(exc, OSError):
                first = f"not a readable HDF5 file ({first})"
            raise ValueError(f"bundle {path.name}: {first}") from None
    raise ValueError(f"bundle: unsupported file type {path.suffix!r} for {path}; expected .npz or a BEPS .h5")


def source_files(source: str | Path) -> list[Path]:
    """The existing input files a source string names (a bundle, an image + grid pair, several
    samples, a semi-synthetic texture): a run may never write over or beside-replace them."""
    text = str(source)
    found: list[str] = []
    if text.lstrip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError:
            return []
        for key in ("image", "loops", "voltage"):
            if isinstance(spec.get(key), str):
                found.append(spec[key])
        for sub in spec.get("samples", []) if isinstance(spec, dict) else []:
            found += [str(p) for p in source_files(sub)]
    elif text.startswith("semisynthetic:"):
        found += [item.partition("=")[2] for item in text.partition(":")[2].split(",") if item.startswith("image=")]
    else:
        found.append(text)
    return [Path(f) for f in found if Path(f).exists()]


def sample_checksum(sample: Sample) -> str:
    """sha256 over the arrays that define the sample (for run provenance)."""
    h = hashlib.sha256()
    for arr in (sample.image, sample.positions, sample.loops, sample.voltage, sample.targets):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
