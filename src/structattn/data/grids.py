"""Spectroscopy grids (BEPS / SS-PFM loops on a rows x cols grid) from the files groups have.

One entry point, `read_grid(path)`:

================  =============================================================================
``.h5`` (NSID)    a pyNSID / sidpy (X, Y, spectral) dataset, e.g. the shared
                  ``pto_beps_50x50.h5`` (`structattn.loops.beps.read_beps_nsid`)
``.h5`` (USID)    pyUSID / BGlib layout: a main dataset (N_pos, N_spec) linked to
                  ``Position_Indices``/``Position_Values`` and ``Spectroscopic_Indices``/
                  ``Spectroscopic_Values``. Either an SHO fit (compound ``Amplitude [V]``,
                  ``Phase [rad]``, ..., BGlib's ``Raw_Data-SHO_Fit_000/Fit``): the loop is
                  amplitude * cos(phase); or real loops (e.g. BGlib's ``Projected_Loops``)
``.npz``          ``loops`` (rows, cols, V), ``voltage`` (V,), optional ``extent`` [width,
                  height] in metres
``.npy``          ``loops`` (rows, cols, V); the voltage is given separately (``voltage=``)
================  =============================================================================

USID spectroscopic dimensions: ``DC_Offset`` (or ``write_bias``) is the bias of the loop;
``Field`` picks in-field (BGlib value 0) or out-of-field (value 1, the default: the remanent
loop) points; ``Cycle`` picks one cycle (``cycle=0`` by default); FORC dimensions take their
first value. Any other dimension with more than one value is an error, never a silent reshape.

HDF5 files are opened with h5py in read-only mode (never SciFiReaders' ``NSIDReader``, which
opens ``r+``), so the file's bytes and modification time never change.

Grid geometry: row i of the grid runs along the file's Y axis, column j along X, and the
``extent`` is the distance from the first to the last point along X and Y (the axis spans,
pycroscopy's ``linspace(0, L, n)`` convention).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LoopGrid", "read_grid", "parse_voltage", "GRID_SUFFIXES", "FIELDS"]

GRID_SUFFIXES = (".h5", ".hdf5", ".npz", ".npy")
FIELDS = {"in-field": 0, "out-of-field": 1}  # BGlib's Field values: 0 in-field, 1 out-of-field
_BIAS_DIMS = ("DC_Offset", "write_bias")
_FIRST_VALUE_DIMS = ("FORC", "FORC_Cycle", "FORC_repeat")
AMPLITUDE, PHASE = "Amplitude [V]", "Phase [rad]"


@dataclass(frozen=True, eq=False)
class LoopGrid:
    """A rows x cols grid of hysteresis loops.

    Attributes:
        loops: (rows, cols, V) float64 loops (NaN kept: loop analysis flags such points).
        voltage: (V,) bias [V] in acquisition order.
        extent: (width, height) in metres from the first to the last point along X and Y, or
            None when the file states no physical size.
        meta: provenance: ``source``, ``reader``, ``dataset``, ``quantity``, choices made.

    Example:
        >>> g = read_grid("../shared/data/pto_beps_50x50.h5")  # doctest: +SKIP
        >>> g.loops.shape, g.extent  # doctest: +SKIP
        ((50, 50, 64), (2e-06, 2e-06))
    """

    loops: np.ndarray
    voltage: np.ndarray
    extent: tuple[float, float] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return int(self.loops.shape[0]), int(self.loops.shape[1])


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"loops {path.name!r}: {what}")


def _real(path: Path, name: str, arr, *, ndim: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf":
        raise _fail(path, f"field {name!r} has dtype {arr.dtype}, expected real numbers")
    if arr.ndim != ndim:
        want = "(rows, cols, V)" if ndim == 3 else "(V,)"
        raise _fail(path, f"field {name!r} must be {want}, got shape {arr.shape}")
    return arr.astype(np.float64)


def parse_voltage(spec) -> np.ndarray | None:
    """A voltage given by the user: an array, a ``.npy``/``.txt`` file, or comma-separated numbers."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return np.asarray(spec, dtype=float).reshape(-1)
    p = Path(spec)
    try:
        if p.suffix.lower() == ".npy" and p.is_file():
            return np.asarray(np.load(p, allow_pickle=False), dtype=float).reshape(-1)
        if p.is_file():
            return np.loadtxt(p, dtype=float, delimiter=None if "," not in p.read_text() else ",").reshape(-1)
        return np.array([float(v) for v in spec.split(",") if v.strip()])
    except (OSError, ValueError) as exc:
        raise ValueError(f"--voltage: expected a .npy/.txt file or comma-separated numbers, got {spec!r} "
                         f"({type(exc).__name__}: {exc})") from None


def _check_voltage(path: Path, voltage: np.ndarray, n: int) -> np.ndarray:
    if voltage.shape != (n,):
        raise _fail(path, f"field 'voltage' must have one value per loop step (V={n}), got shape {voltage.shape}")
    if not np.isfinite(voltage).all():
        raise _fail(path, "field 'voltage' contains non-finite values")
    return voltage


def _read_numpy(path: Path, voltage) -> LoopGrid:
    extent = None
    if path.suffix.lower() == ".npy":
        try:
            loops = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise _fail(path, f"not a readable .npy array ({type(exc).__name__}: {exc})") from None
        loops = _real(path, "loops", loops, ndim=3)
        if voltage is None:
            raise _fail(path, "a .npy grid holds no voltage; give the (V,) bias waveform (--voltage)")
        volt = np.asarray(voltage, dtype=float).reshape(-1)
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise _fail(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None
        for key in ("loops", "voltage"):
            if key not in data and not (key == "voltage" and voltage is not None):
                raise _fail(path, f"field {key!r} missing (present: {sorted(data)})")
        loops = _real(path, "loops", data["loops"], ndim=3)
        volt = _real(path, "voltage", data["voltage"], ndim=1) if "voltage" in data else \
            np.asarray(voltage, dtype=float).reshape(-1)
        if "extent" in data:
            e = np.asarray(data["extent"], dtype=float).reshape(-1)
            if e.size != 2 or not np.isfinite(e).all() or (e <= 0).any():
                raise _fail(path, f"field 'extent' must be [width, height] in metres > 0, got {e.tolist()}")
            extent = (float(e[0]), float(e[1]))
    if loops.shape[0] < 1 or loops.shape[1] < 1 or loops.shape[2] < 2:
        raise _fail(path, f"field 'loops' must be (rows, cols, V) with V >= 2, got shape {loops.shape}")
    volt = _check_voltage(path, volt, loops.shape[2])
    return LoopGrid(loops=loops, voltage=volt, extent=extent, meta={"source": str(path), "reader": "numpy"})


# ------------------------------------------------------------------------------------ HDF5


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _labels(ds) -> list[str]:
    lab = ds.attrs.get("labels")
    if lab is None:
        return []
    return [_text(x) for x in np.atleast_1d(lab)]


def _aux(ds, name: str):
    """A USID ancillary dataset of `ds`: the object reference in its attribute, else a sibling."""
    import h5py

    ref = ds.attrs.get(name)
    if isinstance(ref, h5py.Reference) and ref:
        try:
            return ds.file[ref]
        except (KeyError, ValueError, OSError):
            pass
    for grp in (ds.parent, ds.parent.parent):
        obj = grp.get(name)
        if isinstance(obj, h5py.Dataset):
            return obj
    return None


def _usid_candidates(f) -> list:
    """Datasets linked to spectroscopic and position ancillaries, best candidate first."""
    import h5py

    found = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset) or obj.ndim != 2:
            return
        if name.split("/")[-1] in ("Position_Indices", "Position_Values", "Spectroscopic_Indices",
                                   "Spectroscopic_Values"):
            return
        if "Spectroscopic_Values" in obj.attrs or "Position_Indices" in obj.attrs:
            found.append(obj)

    f.visititems(visit)

    def rank(ds):
        if ds.dtype.names:  # a compound fit result (SHO: Amplitude, Phase, ...): Fit before Guess
            return (0, 0 if ds.name.split("/")[-1].lower() == "fit" else 1)
        if ds.dtype.kind in "iuf":  # real loops
            return (1, 0 if "loop" in ds.name.lower() else 1)
        return (2, 0)

    return sorted(found, key=rank)


def _read_usid(path: Path, f, *, field_mode: str, cycle: int, dataset: str | None) -> LoopGrid:
    from ..loops.beps import axis_span_metres

    if dataset is not None:
        if dataset not in f:
            raise _fail(path, f"dataset {dataset!r} not found")
        candidates = [f[dataset]]
    else:
        candidates = _usid_candidates(f)
    if not candidates:
        raise _fail(path, "no loop grid found: expected an NSID (X, Y, spectral) dataset or a USID main dataset "
                          "(an SHO fit, or real loops with a DC_Offset dimension)")
    ds = candidates[0]
    names = ds.dtype.names or ()
    if names:
        missing = [k for k in (AMPLITUDE, PHASE) if k not in names]
        if missing:
            raise _fail(path, f"SHO fit {ds.name!r} has no field {missing[0]!r} (fields: {', '.join(names)})")
        kind = "sho_fit"
    elif ds.dtype.kind == "c":
        raise _fail(path, f"dataset {ds.name!r} holds raw band-excitation spectra (complex); fit them first "
                          "(BGlib's SHO fitter writes Raw_Data-SHO_Fit_000/Fit) and give that file")
    elif ds.dtype.kind in "iuf":
        kind = "real"
    else:
        raise _fail(path, f"dataset {ds.name!r} has dtype {ds.dtype}, expected real loops or an SHO fit")

    spec_inds, spec_vals = _aux(ds, "Spectroscopic_Indices"), _aux(ds, "Spectroscopic_Values")
    pos_inds, pos_vals = _aux(ds, "Position_Indices"), _aux(ds, "Position_Values")
    for nm, obj in (("Spectroscopic_Indices", spec_inds), ("Spectroscopic_Values", spec_vals),
                    ("Position_Indices", pos_inds)):
        if obj is None:
            raise _fail(path, f"dataset {ds.name!r} has no {nm}")
    s_ind, s_val = np.atleast_2d(spec_inds[()]), np.atleast_2d(spec_vals[()])
    s_lab = _labels(spec_inds) or _labels(spec_vals)
    if s_ind.shape[1] != ds.shape[1] or len(s_lab) != s_ind.shape[0]:
        raise _fail(path, f"Spectroscopic_Indices {s_ind.shape} with labels {s_lab} do not match {ds.name!r} "
                          f"{ds.shape}")
    bias = next((d for d in _BIAS_DIMS if d in s_lab), None)
    if bias is None:
        raise _fail(path, f"Spectroscopic_Indices of {ds.name!r} have no DC_Offset dimension (labels: {s_lab})")

    keep = np.ones(s_ind.shape[1], bool)
    choices = {}
    for k, lab in enumerate(s_lab):
        if lab == bias:
            continue
        values = np.unique(s_ind[k])
        if lab == "Field":
            want = FIELDS[field_mode]
            pick = want if want in values else (int(values[0]) if len(values) == 1 else None)
            if pick is None:
                raise _fail(path, f"Spectroscopic dimension 'Field' has values {values.tolist()}, none is "
                                  f"{field_mode} ({want})")
            choices["Field"] = {0: "in-field", 1: "out-of-field"}.get(int(pick), str(pick))
        elif lab == "Cycle":
            if not 0 <= cycle < len(values):
                raise _fail(path, f"--cycle {cycle}: the file has {len(values)} cycle(s)")
            pick = int(values[cycle])
            choices["Cycle"] = cycle
        elif lab in _FIRST_VALUE_DIMS or len(values) == 1:
            pick = int(values[0])
            if len(values) > 1:
                choices[lab] = 0
        else:
            raise _fail(path, f"Spectroscopic dimension {lab!r} has {len(values)} values; only {bias}, Field, "
                              "Cycle and FORC are understood")
        keep &= s_ind[k] == pick
    volt = s_val[s_lab.index(bias), keep].astype(float)
    if volt.size < 2:
        raise _fail(path, f"only {volt.size} {bias} step(s) left after choosing {choices}")

    if kind == "sho_fit":
        amp = ds.fields(AMPLITUDE)[()][:, keep].astype(float)
        phase = ds.fields(PHASE)[()][:, keep].astype(float)
        loops = amp * np.cos(phase)
        quantity = "amplitude * cos(phase)"
    else:
        loops = ds[()][:, keep].astype(float)
        quantity = _text(ds.attrs.get("quantity", "loops"))

    p_ind = np.atleast_2d(pos_inds[()])
    p_lab = _labels(pos_inds)
    if p_ind.shape[0] != ds.shape[0] or p_ind.shape[1] != 2:
        raise _fail(path, f"Position_Indices {p_ind.shape} must be (N_pos={ds.shape[0]}, 2) for an X-Y grid")
    ix = next((k for k, lab in enumerate(p_lab) if lab.upper().startswith("X")), 0)
    iy = 1 - ix
    col, row = p_ind[:, ix].astype(int), p_ind[:, iy].astype(int)
    rows, cols = int(row.max()) + 1, int(col.max()) + 1
    if row.min() < 0 or col.min() < 0 or rows * cols != ds.shape[0] or \
            len(np.unique(row * cols + col)) != ds.shape[0]:
        raise _fail(path, f"Position_Indices do not form a full {rows} x {cols} grid of {ds.shape[0]} positions")
    grid = np.full((rows, cols, volt.size), np.nan)
    grid[row, col] = loops
    extent = None
    if pos_vals is not None:
        pv = np.atleast_2d(pos_vals[()]).astype(float)
        units = [_text(u) for u in np.atleast_1d(pos_vals.attrs.get("units", pos_inds.attrs.get("units", ["", ""])))]
        if pv.shape == p_ind.shape and len(units) == 2:
            w, h = axis_span_metres(pv[:, ix], units[ix]), axis_span_metres(pv[:, iy], units[iy])
            extent = (w, h) if w and h else None
    return LoopGrid(loops=grid, voltage=volt, extent=extent,
                    meta={"source": str(path), "reader": "structattn.data.grids (USID, h5py read-only)",
                          "dataset": ds.name, "quantity": quantity, "choices": choices})


def _read_hdf5(path: Path, *, field_mode: str, cycle: int, dataset: str | None) -> LoopGrid:
    import h5py

    from ..loops.beps import _find_main, read_beps_nsid

    try:
        with h5py.File(path, "r") as f:
            try:
                nsid = dataset if (dataset and dataset in f and f[dataset].ndim == 3) else (
                    None if dataset else _find_main(f))
            except ValueError:
                nsid = None
            if nsid is None:
                return _read_usid(path, f, field_mode=field_mode, cycle=cycle, dataset=dataset)
    except OSError as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise _fail(path, f"not a readable HDF5 file ({type(exc).__name__}: {first})") from None
    try:
        g = read_beps_nsid(path, dataset=nsid)
    except ValueError as exc:
        raise _fail(path, str(exc)) from None
    rows, cols = g.shape
    return LoopGrid(loops=g.loops.reshape(rows, cols, -1), voltage=g.voltage, extent=g.extent,
                    meta=dict(g.meta, reader="structattn.loops.read_beps_nsid (NSID, h5py read-only)"))


def read_grid(path, *, voltage=None, field: str = "out-of-field", cycle: int = 0,
              dataset: str | None = None) -> LoopGrid:
    """Read a spectroscopy grid (see the module doc for formats and conventions).

    Args:
        path: the grid file.
        voltage: (V,) bias for a ``.npy`` grid (array, ``.npy``/``.txt`` file or "v0,v1,..."); ignored
            when the file has its own.
        field: USID files with a Field dimension: ``"out-of-field"`` (default) or ``"in-field"``.
        cycle: USID files with several cycles: which one (0-based).
        dataset: HDF5 path of the main dataset; found automatically if None.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsupported or unreadable file, missing or mistyped field; one line naming
            the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"loops: no such file {str(path)!r}")
    if field not in FIELDS:
        raise ValueError(f"--field: expected one of {list(FIELDS)}, got {field!r}")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        g = _read_numpy(path, parse_voltage(voltage))
    elif suffix in (".h5", ".hdf5"):
        g = _read_hdf5(path, field_mode=field, cycle=int(cycle), dataset=dataset)
    else:
        raise _fail(path, f"unsupported file type {suffix!r}; expected one of {list(GRID_SUFFIXES)}")
    return g  # NaN inside loops is kept: loop analysis flags such points
