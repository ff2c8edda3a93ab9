"""Read a BEPS / SS-PFM loop grid from a pyNSID (sidpy) HDF5 file, and derive a
structure image from the spectroscopy itself.

A band-excitation switching-spectroscopy file holds a (X, Y, Voltage) grid of
loops and no separate structure image. The practice of the field (im2spec) is to
derive one from the spectroscopy: the response at 0 V before the first switching
(the as-grown domain state) or a map of a loop descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["BepsGrid", "read_beps_nsid", "structure_from_loops", "STRUCTURE_SOURCES"]

# Built-in structure sources; any descriptor name of structattn.loops.DESCRIPTORS works too.
STRUCTURE_SOURCES = ("response@0V",)

# Length units found on position axes -> metres.
LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "microns": 1e-6,
                "nm": 1e-9, "pm": 1e-12}


def axis_span_metres(values, unit) -> float | None:
    """Span (last - first) of a position axis in metres, or None if the unit is not a length."""
    factor = LENGTH_UNITS.get(str(unit).strip())
    x = None if values is None else np.asarray(values, dtype=float).reshape(-1)
    if factor is None or x is None or x.size < 2 or not np.isfinite(x).all():
        return None
    span = float(abs(x.max() - x.min())) * factor
    return span if span > 0 else None


@dataclass
class BepsGrid:
    """A rectangular grid of loops.

    Attributes:
        loops: (N, V) loops, N = rows * cols, row-major (point k at row k // cols,
            column k % cols).
        voltage: (V,) bias [V], acquisition order.
        shape: (rows, cols) of the grid; rows follow the file's Y axis, columns X.
        positions: (N, 2) float (row, col) of each point, in grid pixels.
        pixel_size: metres per grid step (from the X axis), or None.
        meta: provenance (file, dataset, quantity, units).
        extent: (width, height) in metres from the first to the last point along X and Y
            (the axis spans), or None when the axes carry no length unit.
    """

    loops: np.ndarray
    voltage: np.ndarray
    shape: tuple[int, int]
    positions: np.ndarray
    pixel_size: float | None = None
    meta: dict = field(default_factory=dict)
    extent: tuple[float, float] | None = None


def _find_main(f) -> str:
    """Path of the first 3-D dataset that has a spectral dimension scale."""
    found: list[str] = []

    def visit(name, obj):
        if found or not hasattr(obj, "shape") or len(obj.shape) != 3:
            return
        kinds = []
        for dim in obj.dims:
            scales = list(dim.values())
            kinds.append(str(scales[0].attrs.get("dimension_type", "")) if scales else "")
        if "SPECTRAL" in [k.upper() for k in kinds] or str(obj.attrs.get("data_type", "")) == "SPECTRAL_IMAGE":
            found.append(name)

    f.visititems(visit)
    if not found:
        raise ValueError("path: expected an NSID file with a 3-D (X, Y, spectral) dataset, found none")
    return found[0]


def read_beps_nsid(path, *, dataset: str | None = None) -> BepsGrid:
    """Read a (X, Y, Voltage) pyNSID loop grid.

    Args:
        path: the ``.h5`` file (e.g. ``../shared/data/pto_beps_50x50.h5``).
        dataset: HDF5 path of the main dataset; found automatically if None.

    Returns:
        The :class:`BepsGrid`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no 3-D spectral dataset, or no voltage axis.
    """
    import h5py  # optional at import time of the package

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path: no such file {p}")
    with h5py.File(p, "r") as f:
        name = dataset or _find_main(f)
        if name not in f:
            raise ValueError(f"dataset: {name!r} not in {p}")
        ds = f[name]
        if len(ds.shape) != 3:
            raise ValueError(f"dataset: expected a 3-D (X, Y, Voltage) array, got shape {ds.shape}")
        if ds.dtype.kind not in "iuf":
            raise ValueError(f"dataset: {name!r} has dtype {ds.dtype}, expected real numbers")
        data = ds[()].astype(float)
        kinds, scales, units = [], [], []
        for dim in ds.dims:
            sc = list(dim.values())
            kinds.append(str(sc[0].attrs.get("dimension_type", "")).upper() if sc else "")
            scales.append(sc[0][()] if sc else None)
            u = sc[0].attrs.get("units", "") if sc else ""
            units.append(u.decode() if isinstance(u, bytes) else str(u))
        labels = [str(x) for x in ds.attrs.get("DIMENSION_LABELS", ["", "", ""])]
        meta = {
            "source": str(p),
            "dataset": name,
            "quantity": str(ds.attrs.get("quantity", "")),
            "units": str(ds.attrs.get("units", "")),
            "reader": "structattn.loops.read_beps_nsid",
        }
    spec = [i for i, k in enumerate(kinds) if k == "SPECTRAL"]
    spec_axis = spec[0] if spec else 2  # sidpy's convention: spectral last
    if scales[spec_axis] is None:
        raise ValueError(f"dataset: no voltage axis (dimension scale) on {meta['dataset']!r}")
    space = [i for i in range(3) if i != spec_axis]
    # File order (X, Y): the image has rows = Y, columns = X.
    ax_x, ax_y = space
    if labels[space[0]].upper().startswith("Y"):
        ax_x, ax_y = space[1], space[0]
    grid = np.transpose(data, (ax_y, ax_x, spec_axis))  # (rows, cols, V)
    rows, cols, nv = grid.shape
    rr, cc = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
    xs = scales[ax_x]
    pixel = float(abs(xs[1] - xs[0])) if xs is not None and len(xs) > 1 else None
    meta["dimension_labels"] = labels
    w, h = axis_span_metres(scales[ax_x], units[ax_x]), axis_span_metres(scales[ax_y], units[ax_y])
    return BepsGrid(
        extent=(w, h) if w and h else None,
        loops=grid.reshape(rows * cols, nv),
        voltage=np.asarray(scales[spec_axis], dtype=float),
        shape=(rows, cols),
        positions=np.column_stack([rr.ravel(), cc.ravel()]),
        pixel_size=pixel,
        meta=meta,
    )


def response_at_zero_before_switching(loops: np.ndarray, voltage: np.ndarray) -> np.ndarray:
    """(N,) response at the first near-0 V bias point, before any switching.

    The first point (acquisition order) whose |bias| is within half a step of the
    waveform's smallest |bias| and that comes before the first turning point: the
    as-grown polarization state, untouched by the sweep.
    """
    v = np.asarray(voltage, dtype=float)
    step = float(np.median(np.abs(np.diff(v)))) if v.size > 1 else 0.0
    near = np.abs(v) <= np.abs(v).min() + 0.5 * step
    d = np.sign(np.diff(v))
    turns = np.flatnonzero(d[1:] * d[:-1] < 0) + 1
    first_turn = int(turns[0]) if turns.size else v.size
    cand = np.flatnonzero(near[: first_turn + 1])
    k = int(cand[0]) if cand.size else int(np.argmin(np.abs(v)))
    return np.asarray(loops, dtype=float)[:, k]


def structure_from_loops(
    loops: np.ndarray,
    voltage: np.ndarray,
    shape: tuple[int, int],
    *,
    source: str = "response@0V",
    analysis=None,
) -> np.ndarray:
    """A (rows, cols) structure image derived from the loop grid.

    Args:
        loops: (N, V) loops, row-major over ``shape``. Spikes should be repaired
            first (e.g. ``LoopAnalysis.clean_loops``) for ``"response@0V"``.
        voltage: (V,) bias.
        shape: (rows, cols), rows * cols == N.
        source: ``"response@0V"`` (the response at 0 V before the first
            switching, im2spec's usual choice) or a descriptor name (a map of
            that descriptor; untrustworthy points take the median of the
            trustworthy ones so the image has no holes).
        analysis: a :class:`~structattn.loops.LoopAnalysis` of ``loops``, needed
            for a descriptor source.

    Returns:
        (rows, cols) float image.

    Raises:
        ValueError: unknown source, or shape that does not match N.
    """
    from .descriptors import DESCRIPTORS

    x = np.asarray(loops, dtype=float)
    rows, cols = shape
    if rows * cols != x.shape[0]:
        raise ValueError(f"shape: expected rows * cols == {x.shape[0]} loops, got {shape}")
    if source == "response@0V":
        return response_at_zero_before_switching(x, voltage).reshape(rows, cols)
    if source in DESCRIPTORS or (analysis is not None and source in analysis.values):
        if analysis is None:
            raise ValueError(f"analysis: expected a LoopAnalysis to map descriptor {source!r}, got None")
        val = np.asarray(analysis.values[source], dtype=float).copy()
        ok = analysis.quality & np.isfinite(val)
        fill = float(np.median(val[ok])) if ok.any() else 0.0
        val[~ok] = fill
        return val.reshape(rows, cols)
    raise ValueError(f"source: expected one of {list(STRUCTURE_SOURCES) + list(DESCRIPTORS)}, got {source!r}")


def sample_from_beps(path, *, structure_from: str = "response@0V", dataset: str | None = None, seed: int = 0):
    """A :class:`~structattn.data.sample.Sample` straight from a pyNSID BEPS file.

    The structure image (1, rows, cols) is derived from the spectroscopy (see
    :func:`structure_from_loops`); points sit on its pixels; loops and voltage are
    the file's, unrepaired (targets repair them when they compute descriptors).

    Args:
        path: the ``.h5`` file.
        structure_from: ``"response@0V"`` or a descriptor name.
        dataset: HDF5 path of the loop grid; found automatically if None.
        seed: seed of the fit when the structure is a descriptor map.
    """
    from ..data.sample import Sample
    from .descriptors import LoopAnalysisConfig, compute_descriptors

    grid = read_beps_nsid(path, dataset=dataset)
    if structure_from == "response@0V":
        from .preprocess import preprocess_loops

        clean = preprocess_loops(grid.loops, grid.voltage).clean
        image = structure_from_loops(clean, grid.voltage, grid.shape, source=structure_from)
    else:
        from .descriptors import DESCRIPTORS

        if structure_from not in DESCRIPTORS:
            raise ValueError(
                f"--structure-from: expected one of {list(STRUCTURE_SOURCES) + list(DESCRIPTORS)}, got {structure_from!r}"
            )
        # 1 thread: the image must come out bit-identical when the run folder re-reads it.
        res = compute_descriptors(grid.loops, grid.voltage, seed=seed, config=LoopAnalysisConfig(num_threads=1))
        image = structure_from_loops(res.clean_loops, grid.voltage, grid.shape, source=structure_from, analysis=res)
    meta = dict(grid.meta, structure_from=structure_from)
    return Sample(
        image=image[None, :, :],
        positions=grid.positions,
        channels=(structure_from,),
        loops=grid.loops,
        voltage=grid.voltage,
        pixel_size=grid.pixel_size,
        meta=meta,
    )
