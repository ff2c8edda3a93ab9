"""`explanations.h5` reading and writing (DESIGN.md run-folder contract).

Layout: ``/point_index`` (M,) int64 — indices of the explained points into the sample's
points — and ``/<method>/<target>`` float32 (M, w, w), pixel-aligned with each point's
patch. Writes are atomic (a new file next to the old one, then `os.replace`), so a crash
never leaves a half-written file, and other methods already in the file are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np


def read_explanations(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(point_index (M,), {method: {target: (M, w, w)}}) from an `explanations.h5`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: no explanations file at {path}")
    maps: dict = {}
    with h5py.File(path, "r") as f:
        if "point_index" not in f:
            raise ValueError(f"path: {path} has no /point_index dataset; not an explanations file")
        idx = f["point_index"][()]
        for method, grp in f.items():
            if isinstance(grp, h5py.Group):
                maps[method] = {t: grp[t][()] for t in grp}
    return idx, maps


def write_explanations(path: str | os.PathLike, *, point_index, maps: dict, replace: bool = False) -> Path:
    """Add ``maps[method][target]`` (M, w, w) to `path`, keeping the other methods there.

    Args:
        path: the run's ``explanations.h5`` (created if missing).
        point_index: (M,) int indices of the explained points.
        maps: method -> target -> (M, w, w) array.
        replace: start a fresh file even if the existing one explains other points.

    Raises:
        ValueError: a map's first dimension is not M, a name contains "/", or the existing
            file explains different points (pass ``replace=True`` to drop it).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "explanations.h5"
        >>> _ = write_explanations(p, point_index=[3, 7], maps={"attention": {"V+": np.zeros((2, 8, 8))}})
        >>> read_explanations(p)[1]["attention"]["V+"].shape
        (2, 8, 8)
    """
    path = Path(path)
    idx = np.asarray(point_index, dtype=np.int64).reshape(-1)
    for method, per_target in maps.items():
        for target, a in per_target.items():
            for kind, name in (("method", method), ("target", target)):
                if "/" in str(name) or not str(name):
                    raise ValueError(f"maps: {kind} name {name!r} is not a valid HDF5 name (empty or contains '/')")
            if np.ndim(a) != 3 or np.shape(a)[0] != len(idx):
                raise ValueError(
                    f"maps[{method!r}][{target!r}]: expected ({len(idx)}, w, w) for {len(idx)} points, got {np.shape(a)}"
                )
    old: dict = {}
    if path.exists() and not replace:
        old_idx, old = read_explanations(path)
        if not np.array_equal(old_idx, idx):
            raise ValueError(
                f"point_index: {path} already explains {len(old_idx)} other points; "
                "explain the same points or pass replace=True"
            )
    merged = {m: dict(t) for m, t in old.items()}
    for method, per_target in maps.items():
        merged.setdefault(method, {}).update(per_target)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("point_index", data=idx)
        for method, per_target in merged.items():
            grp = f.create_group(method)
            for target, a in per_target.items():
                grp.create_dataset(target, data=np.asarray(a, dtype=np.float32), compression="gzip")
    os.replace(tmp, path)
    return path
