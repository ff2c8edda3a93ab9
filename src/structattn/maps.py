"""Dense property maps: every target, and its uncertainty, on a grid over a structure image.

`structattn predict RUN --step N --out maps.h5` applies a run's model (its whole deep ensemble
when it has one) to a patch centred on every N-th pixel of the run's structure image, or of
another scan of the same kind (``--image``). Patches are cut lazily, `batch` at a time, from
one padded copy of the image, and each batch's predictions go straight into chunked,
compressed HDF5 datasets, so memory is bounded by the batch, not by the number of positions.
The file is written under a temporary name and renamed when complete. With several processes
(``parallel``: ``--devices``, ``--num-nodes``, ...) a Lightning predict loop gives each DDP rank
a contiguous share of the positions, written into a shard (`structattn.scale.dense`); global
rank 0 merges the shards into the same file (`GridWriter`).

maps.h5 layout (all float32 maps are (R, Cc) on the grid ``rows`` x ``cols``):

    /rows (R,) int, /cols (Cc,) int      pixel coordinates of the grid (row, col as in `positions`)
    /mean/<target>                       ensemble mean (the model's prediction without an ensemble)
    /std/<target>                        calibrated predictive std (only with an ensemble)
    /structure (C, H, W) float32         the structure image the patches came from
    attrs: run, image, step, window, members, calibration, pixel_size_m (NaN if unknown),
           channels, target_names, units, positions_excluded (pad_mode exclude: NaN there)

Another image is standardised with its *own* per-channel statistics, as the run standardised
its training image with that image's whole-image statistics (instrument gains differ between
scans; the texture is what the model learned).
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .scale.predict import predict_batches

MAX_BATCH = 1 << 16


def grid_axes(shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a grid every `step` px over an (H, W) image, starting at pixel 0."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"--step: expected a whole number of pixels >= 1, got {step!r}")
    return np.arange(0, shape[0], step), np.arange(0, shape[1], step)


class GridWriter:
    """Write flat, row-major grid positions into the (R, Cc) ``mean/<t>`` / ``std/<t>`` datasets.

    ``write(start, {"mean": {t: (b,)}, "std": {t: (b,)}})`` fills the grid-row segments that
    positions ``start .. start + b`` cover. Used by the one-process loop and, as the target of
    `structattn.scale.h5stream.merge_shards`, to merge the shards of several processes.
    """

    def __init__(self, datasets: dict, *, n_cols: int, targets) -> None:
        self.ds = datasets  # {(group, target): h5py dataset (R, Cc)}
        self.n_c = int(n_cols)
        self.targets = list(targets)
        self.methods = sorted({g for g, _ in datasets}, key=["mean", "std"].index)  # merge_shards' "groups"
        self.m = next(iter(datasets.values())).shape[0] * self.n_c

    def write(self, start: int, values: dict) -> None:
        for group, per in values.items():
            for t, a in per.items():
                a = np.asarray(a, np.float32)
                if start < 0 or start + len(a) > self.m:
                    raise ValueError(f"{group}/{t}: positions {start}..{start + len(a)} are not in 0..{self.m}")
                flat = np.arange(start, start + len(a))
                r_idx, c_idx = flat // self.n_c, flat % self.n_c
                for r in np.unique(r_idx):  # the grid-row segments this batch covers
                    sel = r_idx == r
                    c0, c1 = int(c_idx[sel][0]), int(c_idx[sel][-1]) + 1
                    self.ds[group, t][r, c0:c1] = a[sel]


@dataclass
class DenseResult:
    path: Path
    shape: tuple[int, int]  # (R, Cc) grid
    n_positions: int
    members: int
    seconds: float
    peak_rss_mb: float  # the process's peak resident memory so far (ru_maxrss)
    figure: Path | None = None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_image(run, image_path: str | os.PathLike | None):
    """(image (C, H, W) in the run's standardisation, channels, pixel size m, source label).

    None: the run's own structure image. Otherwise a file of the same kind (`read_image`),
    channels matched by name, standardised with its own statistics and mapped onto the run's.
    """
    channels = tuple(run.config["data"].get("channels") or ())
    if image_path is None:
        s = run.sample
        return s.image, s.channels, s.pixel_size, "run"
    from .data.readers import read_image

    try:
        img = read_image(image_path, channels=list(channels) if channels else None)
    except ValueError as exc:
        if "not found" in str(exc):
            raise ValueError(f"--image: the run was trained on channels {', '.join(channels)}; "
                             f"{str(exc).split(': ', 1)[-1]}") from None
        raise
    tm = run.model
    if img.image.shape[0] != len(tm.channel_mean):
        raise ValueError(f"--image: {Path(image_path).name} has {img.image.shape[0]} channel(s) "
                         f"({', '.join(img.channels)}); the run was trained on {len(tm.channel_mean)} "
                         f"({', '.join(channels)})")
    x = img.image.astype(np.float64)
    own_mean = x.mean(axis=(1, 2), keepdims=True)
    own_std = np.maximum(x.std(axis=(1, 2), keepdims=True), 1e-12)
    mapped = (x - own_mean) / own_std * tm.channel_std[:, None, None] + tm.channel_mean[:, None, None]
    return mapped.astype(np.float32), img.channels, img.pixel_size, str(image_path)


def check_maps_out(out: str | os.PathLike, *, overwrite: bool) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise ValueError(f"--out: expected an .h5 file path, got {str(out)!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out: {str(out)!r} exists; choose another path or pass --overwrite")
    if out.is_dir():
        raise FileExistsError(f"--out: {str(out)!r} is a folder")
    return out


def predict_dense(
    run_dir: str | os.PathLike,
    *,
    step: int,
    out: str | os.PathLike,
    image: str | os.PathLike | None = None,
    batch: int = 256,
    overwrite: bool = False,
    figure: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
    parallel=None,
) -> DenseResult | None:
    """Predict every target (and its uncertainty) every `step` px and write `out` (see module doc).

    Args:
        run_dir: a run folder.
        step: grid pitch in pixels (1 = every pixel).
        out: the .h5 file to write (atomically); a PNG of the maps goes beside it
            (same name, ``.png``) unless ``figure=False``.
        image: another structure image of the same kind (same channels) instead of the run's.
        batch: positions per batch (bounds memory: batch x members x C x w x w floats).
        overwrite: replace an existing `out`.
        on_batch: called with (positions done, positions in all).
        parallel: a `structattn.scale.Parallel` (``--accelerator/--devices/--num-nodes/--strategy``).
            One CPU process (the default) predicts batch by batch here; several processes, or a
            GPU, run a Lightning predict loop in which each rank predicts a contiguous share of the
            grid positions into a shard, and global rank 0 merges the shards into `out`.

    Returns:
        The result on global rank 0; None on the other ranks of several processes.
    """
    from .runfolder import RunFolder, atomic_write_bytes

    t0 = time.perf_counter()
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"--batch: expected a number of positions in 1..{MAX_BATCH}, got {batch!r}")
    out = check_maps_out(out, overwrite=overwrite)
    run = RunFolder(run_dir)
    if out.resolve().parent == run.path.resolve() and out.name in ("metrics.json", "config.json", "model.pt",
                                                                    "predictions.npz", "explanations.h5"):
        raise ValueError(f"--out: {out.name} is a file of the run folder; name a new file")
    members, cal = run.members, run.calibration
    cfg = run.config["run"]
    window, pad_mode = int(cfg["window"]), cfg["pad_mode"]
    img, channels, pixel_size, source = run_image(run, image)
    rows, cols = grid_axes(img.shape[1:], step)
    names = list(members[0].target_names)
    units = list(members[0].extra.get("units", [""] * len(names)))
    n_r, n_c = len(rows), len(cols)
    n = n_r * n_c
    chunk = (max(1, min(n_r, -(-4096 // n_c))), n_c)  # about 4096 values a chunk, whole grid rows
    # (n, 2) grid positions, row-major: 16 bytes a position, never a patch array
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    positions = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(float)
    del rr, cc
    par = parallel
    loop = par is not None and (par.world_size > 1 or par.accelerator != "cpu" or par.precision != "32")
    out.parent.mkdir(parents=True, exist_ok=True)
    shard_dir = out.parent / f".{out.name}.shards"
    if loop:
        from .scale.dense import predict_shards

        try:
            shards = predict_shards(members, cal, img, positions, shard_dir, window=window, pad_mode=pad_mode,
                                    batch=int(batch), parallel=par)
        except BaseException:
            import shutil

            shutil.rmtree(shard_dir, ignore_errors=True)
            raise
        if shards is None:  # not global rank 0: rank 0 merges and writes `out`
            return None
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("rows", data=rows.astype(np.int64))
            f.create_dataset("cols", data=cols.astype(np.int64))
            f.create_dataset("structure", data=img.astype(np.float32), compression="gzip")
            opts = dict(shape=(n_r, n_c), dtype="f4", chunks=chunk, compression="gzip", fillvalue=np.nan)
            groups = ["mean"] + (["std"] if len(members) > 1 else [])
            grid = GridWriter({(g, t): f.create_dataset(f"{g}/{t}", **opts) for g in groups for t in names},
                              n_cols=n_c, targets=names)
            f.attrs.update({
                "run": str(run.path.resolve()), "image": source, "step": int(step), "window": window,
                "pad_mode": pad_mode, "members": len(members),
                "calibration": "" if cal is None else json.dumps(cal.to_dict(names)),
                "pixel_size_m": float("nan") if pixel_size is None else float(pixel_size),
                "channels": json.dumps(list(channels)), "target_names": json.dumps(names),
                "units": json.dumps(units), "structattn": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "processes": 1 if par is None else int(par.world_size),
            })
            if loop:
                from .scale.h5stream import merge_shards

                merge_shards(shards, grid)  # checks that every position came from exactly one shard
                if on_batch is not None:
                    on_batch(n, n)
            else:
                for start, m, s in predict_batches(members, cal, img, positions, window=window, pad_mode=pad_mode,
                                                   batch=batch):
                    grid.write(start, {"mean": {t: m[:, j] for j, t in enumerate(names)}}
                               | ({"std": {t: s[:, j] for j, t in enumerate(names)}} if s is not None else {}))
                    if on_batch is not None:
                        on_batch(start + len(m), n)
            seconds = time.perf_counter() - t0
            peak = peak_rss_mb()
            f.attrs.update({"seconds": seconds, "peak_rss_mb": peak, "batch": int(batch)})
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if loop:
            import shutil

            shutil.rmtree(shard_dir, ignore_errors=True)
    fig_path = None
    if figure:
        from .report.map_figures import maps_figure_png

        fig_path = out.with_suffix(".png")
        atomic_write_bytes(fig_path, maps_figure_png(read_maps(out)))
    return DenseResult(path=out, shape=(n_r, n_c), n_positions=n, members=len(members), seconds=seconds,
                       peak_rss_mb=peak, figure=fig_path)


def read_maps(path: str | os.PathLike) -> dict:
    """A maps.h5 file as a dict: rows, cols, mean {target: (R, Cc)}, std (or {}), structure, attrs."""
    with h5py.File(path, "r") as f:
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        for k in ("channels", "target_names", "units"):
            attrs[k] = json.loads(attrs[k])
        names = attrs["target_names"]  # in the run's order (HDF5 lists groups alphabetically)
        return {"rows": f["rows"][()], "cols": f["cols"][()],
                "mean": {t: f["mean"][t][()] for t in names},
                "std": {t: f["std"][t][()] for t in names} if "std" in f else {},
                "structure": f["structure"][()], "attrs": attrs}
