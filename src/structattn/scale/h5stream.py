"""explanations.h5 written batch by batch: chunked, compressed datasets, atomic rename.

The layout is the run-folder contract (DESIGN.md): ``/point_index`` (M,) int64 and
``/<method>/<target>`` float32 (M, w, w). `ExplanationsWriter` creates every dataset at
full size up front (chunks of `chunk` maps, gzip) and fills ``[start:start + b]`` as each
batch is explained, so only one batch of maps is ever in memory. The file is written under a
temporary name beside `path` and renamed into place by `close`; `abort` (or an exception in
the ``with`` block) removes it and leaves any earlier file untouched.

Methods already in an existing file with the same ``point_index`` are kept (copied
dataset by dataset inside HDF5, not through memory), as `runfolder.write_explanations` does.

Several processes (DDP ranks) each write a *shard* (`ShardWriter`: the maps of a contiguous
range of the M points, with ``/start``) and `merge_shards` copies them, chunk by chunk, into
one writer.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)


def _chunk_rows(m: int, chunk: int) -> int:
    return max(1, min(int(chunk), int(m)))


class ExplanationsWriter:
    """Stream (M, w, w) maps of every method and target into explanations.h5.

    Args:
        path: the destination file.
        point_index: (M,) indices into the sample's points.
        methods: method names (groups).
        targets: target names (datasets in each group).
        window: map side w.
        attrs: file attributes (window, patch, pad_mode, ...).
        chunk: maps per HDF5 chunk (the batch size is a good choice).
        keep_existing: keep the other methods of an existing file with the same point_index.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "e.h5"
        >>> with ExplanationsWriter(p, point_index=np.arange(3), methods=["a"], targets=["t"], window=4) as w:
        ...     w.write(0, {"a": {"t": np.ones((3, 4, 4))}})
        >>> h5py.File(p)["a/t"].shape
        (3, 4, 4)
    """

    def __init__(self, path, *, point_index, methods, targets, window: int, attrs: dict | None = None,
                 chunk: int = 64, keep_existing: bool = True) -> None:
        self.path = Path(path)
        self.point_index = np.asarray(point_index, np.int64)
        self.m = len(self.point_index)
        self.methods, self.targets, self.window = list(methods), list(targets), int(window)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.rows_written = 0
        try:
            self.f = h5py.File(self.tmp, "w")
            self.f.create_dataset("point_index", data=self.point_index)
            for k, v in (attrs or {}).items():
                self.f.attrs[k] = v
            if keep_existing and self.path.exists():
                self._copy_existing()
            rows = _chunk_rows(self.m, chunk)
            self.ds = {}
            for method in self.methods:
                g = self.f.require_group(method)
                for t in self.targets:
                    if t in g:
                        del g[t]
                    self.ds[method, t] = g.create_dataset(
                        t, shape=(self.m, self.window, self.window), dtype="f4",
                        chunks=(rows, self.window, self.window), fillvalue=np.nan, **COMPRESSION)
        except BaseException:
            self.abort()
            raise

    def _copy_existing(self) -> None:
        with h5py.File(self.path, "r") as old:
            if "point_index" not in old or not np.array_equal(old["point_index"][()], self.point_index):
                return
            for name in old:
                if name != "point_index" and name not in self.methods:
                    old.copy(old[name], self.f, name=name)  # inside HDF5: never the whole array in memory

    def write(self, start: int, maps: dict) -> None:
        """Write ``maps[method][target]`` (b, w, w) at rows ``start:start + b``."""
        for method, per in maps.items():
            for t, arr in per.items():
                a = np.asarray(arr, np.float32)
                if a.ndim != 3 or a.shape[1:] != (self.window, self.window) or start < 0 or start + len(a) > self.m:
                    raise ValueError(f"maps[{method!r}][{t!r}]: expected (b, {self.window}, {self.window}) rows "
                                     f"within 0..{self.m}, got {a.shape} at {start}")
                self.ds[method, t][start:start + len(a)] = a
                self.rows_written = max(self.rows_written, start + len(a))

    def close(self) -> Path:
        """Finish the file and rename it into place."""
        self.f.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            if getattr(self, "f", None) is not None and self.f.id.valid:
                self.f.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)

    def __enter__(self) -> "ExplanationsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ShardWriter:
    """One process's share: items ``start .. start + n`` of the M, in one HDF5 file.

    Datasets ``<method>/<target>`` of (n, *item_shape) float32; item_shape defaults to
    (window, window) (explanation maps); dense prediction uses () (one value an item).
    """

    def __init__(self, path, *, start: int, n: int, methods, targets, window: int | None = None,
                 item_shape: tuple[int, ...] | None = None, chunk: int = 64) -> None:
        self.path = Path(path)
        self.start, self.n = int(start), int(n)
        self.f = h5py.File(self.path, "w")
        self.f.attrs["start"] = self.start
        self.f.attrs["n"] = self.n
        self.f.attrs["done"] = 0
        rows = _chunk_rows(max(self.n, 1), chunk)
        item = tuple(item_shape) if item_shape is not None else (int(window), int(window))
        self.ds = {(m, t): self.f.create_dataset(f"{m}/{t}", shape=(self.n, *item), dtype="f4",
                                                 chunks=(rows, *item), fillvalue=np.nan, **COMPRESSION)
                   for m in methods for t in targets}
        self.done = 0

    def write(self, global_start: int, maps: dict) -> None:
        """Maps of points ``global_start ..`` (must lie inside this shard)."""
        lo = int(global_start) - self.start
        for (m, t), ds in self.ds.items():
            a = np.asarray(maps[m][t], np.float32)
            if lo < 0 or lo + len(a) > self.n:
                raise ValueError(f"shard {self.path.name}: rows {global_start}..{global_start + len(a)} are not in "
                                 f"{self.start}..{self.start + self.n}")
            ds[lo:lo + len(a)] = a
            self.done = max(self.done, lo + len(a))

    def close(self) -> None:
        self.f.attrs["done"] = self.done
        self.f.close()


def merge_shards(shards, writer, *, rows: int = 256) -> None:
    """Copy every shard's maps into `writer`, `rows` maps at a time; checks full coverage.

    `writer` is an `ExplanationsWriter` or anything with its ``m``, ``methods``, ``targets``
    and ``write(start, {method: {target: rows}})`` (e.g. `structattn.maps.GridWriter`).
    """
    covered = np.zeros(writer.m, bool)
    for p in sorted(shards):
        with h5py.File(p, "r") as f:
            start, n, done = int(f.attrs["start"]), int(f.attrs["n"]), int(f.attrs["done"])
            if done != n:
                raise RuntimeError(f"shard {Path(p).name}: {done} of its {n} points were written")
            if start < 0 or start + n > writer.m or covered[start:start + n].any():
                raise RuntimeError(f"shard {Path(p).name}: points {start}..{start + n} overlap another shard or lie "
                                   f"outside 0..{writer.m}")
            for m in writer.methods:  # one dataset's `rows` maps in memory at a time
                for t in writer.targets:
                    for a in range(0, n, rows):
                        writer.write(start + a, {m: {t: f[m][t][a:min(n, a + rows)]}})
            covered[start:start + n] = True
    if not covered.all():
        raise RuntimeError(f"shards: {int((~covered).sum())} of {writer.m} points were explained by no process")
