"""The run folder contract (DESIGN.md) and atomic writing.

A run is built in a hidden staging folder beside its destination and renamed into place
only when every file is written, so a crash never leaves a folder that looks complete.
Files that later commands update (``explanations.h5``, ``metrics.json``, ``report.html``)
are replaced atomically (write a temp file, then ``os.replace``).

Layout:
  config.json       resolved run config, model config, versions, data source and checksum
  metrics.json      per target test R² / MAE, the split, training history, scores
  model.pt          weights, architecture, scalers (`TrainedModel.load`)
  predictions.npz   point_index, positions, y_true, y_pred (N, K), split (0/1/2, -1 unused)
  explanations.h5   /point_index (M,), /<method>/<target> float32 (M, w, w)
  report.html       self-contained report
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

REQUIRED_FILES = ("config.json", "metrics.json", "model.pt", "predictions.npz", "explanations.h5")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, tuple, set)):
        return str(o) if isinstance(o, Path) else list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def write_explanations(path: Path, *, point_index: np.ndarray, maps: dict, attrs: dict | None = None) -> None:
    """Write (or extend) explanations.h5 atomically.

    Args:
        path: the file; existing methods not in `maps` are kept when `point_index` matches.
        point_index: (M,) indices into the sample's points.
        maps: {method: {target: (M, w, w) array}}.
        attrs: file attributes (window, patch, ...).
    """
    path = Path(path)
    keep: dict = {}
    if path.exists():
        with h5py.File(path, "r") as f:
            if np.array_equal(f["point_index"][()], point_index):
                for m in f:
                    if m != "point_index" and m not in maps:
                        keep[m] = {t: f[m][t][()] for t in f[m]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("point_index", data=np.asarray(point_index, np.int64))
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
            for method, per_target in {**keep, **maps}.items():
                g = f.create_group(method)
                for target, arr in per_target.items():
                    g.create_dataset(target, data=np.asarray(arr, np.float32), compression="gzip")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def staged_run_folder(out: Path, *, overwrite: bool = False):
    """Yield a staging folder that becomes `out` only if the block finishes without error."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out: {out} exists and is not empty; choose another folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    os.chmod(stage, 0o755)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class RunFolder:
    """Read access to a finished run folder; raises a clear error if it is not one."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"RUN: no such run folder: {self.path}")
        missing = [f for f in REQUIRED_FILES if not (self.path / f).is_file()]
        if missing:
            raise ValueError(f"RUN: {self.path} is not a complete structattn run folder (missing {missing})")

    @cached_property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    @property
    def metrics(self) -> dict:
        return json.loads((self.path / "metrics.json").read_text())

    def update_metrics(self, **sections) -> dict:
        m = self.metrics
        m.update(sections)
        atomic_write_json(self.path / "metrics.json", m)
        return m

    @cached_property
    def predictions(self) -> dict:
        with np.load(self.path / "predictions.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def explanations(self) -> tuple[np.ndarray, dict]:
        """(point_index (M,), {method: {target: (M, w, w)}})."""
        with h5py.File(self.path / "explanations.h5", "r") as f:
            idx = f["point_index"][()]
            maps = {m: {t: f[m][t][()] for t in f[m]} for m in f if m != "point_index"}
        return idx, maps

    @cached_property
    def model(self):
        from .train.trainer import TrainedModel

        return TrainedModel.load(self.path / "model.pt")

    @cached_property
    def sample(self):
        from .data.io import load_sample, sample_checksum

        s = load_sample(self.config["data"]["source"])
        want = self.config["data"]["checksum"]
        if sample_checksum(s) != want:
            raise ValueError(f"RUN: the data at {self.config['data']['source']} changed since the run (checksum differs)")
        return s
