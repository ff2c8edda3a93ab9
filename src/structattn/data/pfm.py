"""Reader for single-frequency PFM images stored as pyNSID / sidpy HDF5 (NSID).

Made for the Asylum Cypher scans in ``../shared/data/pto_pfm_images/`` (DTMicroscope's
``PTO_Funakubo000{1..7}.h5``), whose layout is ``Measurement_000/Channel_k/Channel_k/
Channel_k`` (H, W) with ``x``/``y`` axes in metres and a ``quantity`` attribute such as
``HeightRetrace``, ``AmplitudeRetrace``, ``DeflectionRetrace``, ``PhaseRetrace``.

SciFiReaders' NSID functions are tried first (the field's reader, keeps sidpy metadata);
plain h5py is the fallback when SciFiReaders is missing or fails on a file. The file is
always opened read-only: ``SciFiReaders.NSIDReader(path)`` opens it ``r+``, which changes
its modification time (and could change its bytes), so we hand SciFiReaders' own NSID
functions an h5py handle opened with ``"r"`` instead.

Physical sizes follow the pycroscopy / SciFiReaders convention: an axis of n samples over
a scan of size L holds ``linspace(0, L, n)``, so the scan size is the axis span and the
pixel pitch is ``L / (n - 1)``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Instrument quantity (lower case, trace direction stripped) -> structattn channel name.
_QUANTITY_NAMES = {
    "height": "height",
    "amplitude": "amplitude",
    "deflection": "deflection",
    "phase": "phase",
}
CHANNEL_ORDER = ("height", "amplitude", "deflection", "phase")


@dataclass(frozen=True, eq=False)
class PFMImage:
    """A PFM scan: the structure-image parts of a `Sample`.

    Attributes:
        image: (C, H, W) float32, channels in `channels` order.
        channels: (C,) names: ``height``, ``amplitude``, ``deflection``, ``phase`` (those found).
        units: per channel, the unit stored in the file (``m``, ``deg``, ...).
        pixel_size: metres per pixel (from the ``x`` axis), or None if not readable.
        scan_size: (width, height) of the scan in metres (axis spans), or None.
        meta: provenance (``source`` file, ``reader``, original quantity names).

    Example:
        >>> pfm = read_pfm("../shared/data/pto_pfm_images/PTO_Funakubo0001.h5")  # doctest: +SKIP
        >>> pfm.image.shape, pfm.channels  # doctest: +SKIP
        ((4, 256, 256), ('height', 'amplitude', 'deflection', 'phase'))
    """

    image: np.ndarray
    channels: tuple[str, ...]
    units: dict = field(default_factory=dict)
    pixel_size: float | None = None
    meta: dict = field(default_factory=dict)
    scan_size: tuple[float, float] | None = None


def _channel_name(quantity: str) -> str | None:
    q = quantity.lower().replace("retrace", "").replace("trace", "").strip(" _")
    return _QUANTITY_NAMES.get(q)


def _pixel_size(axis_values) -> float | None:
    x = np.asarray(axis_values, dtype=float)
    if x.size < 2 or not np.isfinite(x).all():
        return None
    step = float(np.median(np.abs(np.diff(x))))
    return step if step > 0 else None


def _span(axis_values) -> float | None:
    """Physical size of a scan axis: the span of its values (pycroscopy's linspace(0, L, n))."""
    x = np.asarray(axis_values, dtype=float)
    if x.size < 2 or not np.isfinite(x).all():
        return None
    span = float(abs(x[-1] - x[0]))
    return span if span > 0 else None


# one channel as the readers return it: (quantity, (H, W) array, units, pixel size, (width, height) or None)
_Raw = tuple[str, np.ndarray, str, "float | None", "tuple[float, float] | None"]


def _scan_size(ds) -> tuple[float, float] | None:
    """(width, height) in metres of a 2-D sidpy dataset: rows run along dim_0, columns along dim_1."""
    try:
        h, w = _span(ds.dim_0.values), _span(ds.dim_1.values)
    except (AttributeError, IndexError):
        return None
    return (w, h) if w and h else None


def _read_scifireaders(path: Path) -> list[_Raw]:
    """SciFiReaders' NSID reading on a read-only h5py handle (NSIDReader itself opens ``r+``)."""
    import h5py
    from SciFiReaders.readers.SID.hdf_utils import get_all_main, read_h5py_dataset  # heavy; optional

    out = []
    with h5py.File(path, "r") as f:
        for dset in get_all_main(f, verbose=False):
            ds = read_h5py_dataset(dset)  # lazy (dask) over the open file: read it now
            arr = np.asarray(ds, dtype=np.float32)
            out.append((str(ds.quantity), arr, str(ds.units), _pixel_size(ds.dim_0.values), _scan_size(ds)))
    return out


def _read_h5py(path: Path) -> list[_Raw]:
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        meas = f["Measurement_000"]
        for key in sorted(meas.keys()):
            grp = meas[key][key]
            dset = grp[key]
            quantity = dset.attrs.get("quantity", key)
            units = dset.attrs.get("units", "")
            quantity = quantity.decode() if isinstance(quantity, bytes) else str(quantity)
            units = units.decode() if isinstance(units, bytes) else str(units)
            px = _pixel_size(grp["x"][()]) if "x" in grp else None
            w = _span(grp["x"][()]) if "x" in grp else None
            h = _span(grp["y"][()]) if "y" in grp else None
            out.append((quantity, dset[()].astype(np.float32), units, px, (w, h) if w and h else None))
    return out


def read_pfm(path, *, reader: str = "auto") -> PFMImage:
    """Read a PFM NSID HDF5 file into a (C, H, W) image with named channels.

    Args:
        path: the ``.h5`` file.
        reader: ``"auto"`` (SciFiReaders, then h5py), ``"scifireaders"`` or ``"h5py"``.

    Returns:
        A `PFMImage`; channels appear in the order height, amplitude, deflection, phase.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read as an NSID PFM image (the message names it),
            or `reader` is unknown.
    """
    path = Path(path)
    if reader not in ("auto", "scifireaders", "h5py"):
        raise ValueError(f"reader: expected 'auto', 'scifireaders' or 'h5py', got {reader!r}")
    if not path.exists():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    errors = []
    raw, used = None, None
    order = {"auto": ("scifireaders", "h5py"), "scifireaders": ("scifireaders",), "h5py": ("h5py",)}[reader]
    for name in order:
        try:
            raw = _read_scifireaders(path) if name == "scifireaders" else _read_h5py(path)
            used = name
            break
        except Exception as exc:  # noqa: BLE001 - any reader failure: try the next, report all
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    if raw is None:
        raise ValueError(f"path: cannot read {path.name!r} as an NSID PFM image ({'; '.join(errors)})")

    by_name: dict[str, tuple[np.ndarray, str, float | None, str, tuple | None]] = {}
    for quantity, arr, units, px, size in raw:
        cname = _channel_name(quantity)
        if cname is None or cname in by_name or arr.ndim != 2:
            continue  # unknown quantity, a duplicate (trace vs retrace) or not an image
        by_name[cname] = (arr, units, px, quantity, size)
    if not by_name:
        found = [q for q, *_ in raw]
        raise ValueError(f"path: {path.name!r} holds no 2-D PFM channel (quantities found: {found})")
    channels = tuple(c for c in CHANNEL_ORDER if c in by_name)
    shapes = {by_name[c][0].shape for c in channels}
    if len(shapes) != 1:
        raise ValueError(f"path: {path.name!r} has channels of different shapes {sorted(shapes)}")
    image = np.stack([by_name[c][0] for c in channels]).astype(np.float32)  # (C, H, W)
    if not np.isfinite(image).all():
        raise ValueError(f"path: {path.name!r} contains {int((~np.isfinite(image)).sum())} non-finite pixels")
    # Pixel size from a spatial channel: the phase channel's axes carry 'deg' as unit in
    # these files (a metadata slip), the values are the same metres.
    px = next((by_name[c][2] for c in channels if by_name[c][2]), None)
    return PFMImage(
        image=image,
        channels=channels,
        units={c: by_name[c][1] for c in channels},
        pixel_size=px,
        meta={"source": str(path), "reader": used, "quantities": {c: by_name[c][3] for c in channels}},
        scan_size=next((by_name[c][4] for c in channels if by_name[c][4]), None),
    )


def _metadata_scan_size(meta) -> tuple[float, float] | None:
    """(width, height) in metres from an instrument's own metadata, when it states them.

    Gwyddion: ``xreal``/``yreal``; Asylum Igor: ``FastScanSize``/``SlowScanSize`` (``ScanSize``).
    """
    if not isinstance(meta, dict):
        return None
    for kw, kh in (("xreal", "yreal"), ("FastScanSize", "SlowScanSize"), ("ScanSize", "ScanSize")):
        try:
            w, h = float(meta[kw]), float(meta[kh])
        except (KeyError, TypeError, ValueError):
            continue
        if np.isfinite(w) and np.isfinite(h) and w > 0 and h > 0:
            return (w, h)
    return None


def read_instrument_channels(path) -> list[_Raw]:
    """Every channel of a Gwyddion ``.gwy`` or Asylum Igor ``.ibw`` file via SciFiReaders.

    Returns one (quantity, array, units, pixel size, (width, height) in metres) per dataset, in
    file order; the scan size comes from the instrument's metadata when stated, else from the
    axis spans. Files are only read (``open(..., "rb")`` inside gwyfile and igor2). ``.ibw``
    needs the ``igor2`` package.

    Raises:
        ValueError: not a .gwy/.ibw file, or the reader fails (message names the file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gwy", ".ibw"):
        raise ValueError(f"image: expected a .gwy or .ibw file, got {path.name!r}")
    try:
        import SciFiReaders as sr

        reader = sr.GwyddionReader if suffix == ".gwy" else sr.IgorIBWReader
        # the readers print (e.g. a damaged .gwy's raw bytes) to stdout: keep the user's terminal clean
        with contextlib.redirect_stdout(io.StringIO()):
            datasets = reader(str(path)).read()
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear message
        first = (str(exc).splitlines() or ["no message"])[0] or "no message"
        raise ValueError(f"image: cannot read {path.name!r} ({type(exc).__name__}: {first})") from None
    items = datasets.values() if isinstance(datasets, dict) else datasets
    out = []
    for ds in items:
        arr = np.asarray(ds, dtype=np.float32)
        size = _metadata_scan_size(getattr(ds, "original_metadata", None)) or _scan_size(ds)
        px = _pixel_size(ds.dim_0.values) if arr.ndim >= 1 else None
        out.append((str(ds.quantity), arr, str(ds.units), px, size))
    return out


def read_instrument(path) -> tuple[np.ndarray, tuple[str, ...], float | None]:
    """A Gwyddion ``.gwy`` or Asylum Igor ``.ibw`` PFM scan via SciFiReaders.

    Returns ((C, H, W) float32, channel names, metres per pixel or None). Channels are the
    known PFM quantities except deflection (the feedback error), in `CHANNEL_ORDER`.
    Files are only read. ``.ibw`` needs the ``igor2`` package.
    """
    path = Path(path)
    by_name: dict[str, tuple[np.ndarray, float | None]] = {}
    for quantity, arr, _units, px, _size in read_instrument_channels(path):
        cname = _channel_name(quantity)
        if cname is None or cname == "deflection" or cname in by_name or arr.ndim != 2:
            continue
        by_name[cname] = (arr, px)
    if not by_name:
        raise ValueError(f"image: {path.name!r} holds no 2-D amplitude, phase or height channel")
    channels = tuple(c for c in CHANNEL_ORDER if c in by_name)
    image = np.stack([by_name[c][0] for c in channels])
    if not np.isfinite(image).all():
        raise ValueError(f"image: {path.name!r} contains {int((~np.isfinite(image)).sum())} non-finite pixels")
    return image, channels, next((by_name[c][1] for c in channels if by_name[c][1]), None)
