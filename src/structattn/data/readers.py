"""Structure images from the microscope's own files, with channel names, units and scan size.

One entry point, `read_image(path)`, for every image format the tool reads:

==============  ===============================================================================
``.gwy``        Gwyddion (SciFiReaders' ``GwyddionReader``); scan size from ``xreal``/``yreal``
``.ibw``        Asylum Research Igor binary wave (SciFiReaders' ``IgorIBWReader``, needs
                ``igor2``); scan size from ``FastScanSize``/``SlowScanSize``
``.h5``         pyNSID / sidpy PFM image (`structattn.data.pfm.read_pfm`); scan size from the
                ``x``/``y`` axes
``.npz``        ``image`` (C, H, W) or (H, W), optional ``channels`` (C,) str, ``units`` (C,) str,
                ``scan_size`` (2,) metres [width, height]
``.npy``        an (H, W) or (C, H, W) array; no names, no physical size
==============  ===============================================================================

Files are opened for reading only (their bytes and modification time never change).

Channel names: the PFM quantities are named ``height``, ``amplitude``, ``deflection`` and
``phase`` (trace/retrace dropped, as in `structattn.data.pfm`); any other channel keeps the
instrument's name. By default the structure channels are height, amplitude and phase when the
file has any of them (deflection is the feedback error, not structure), else every channel;
``channels=`` picks channels by name.

Physical size follows the pycroscopy / SciFiReaders convention: pixel (r, c) of an (H, W)
image of a ``width x height`` scan sits at ``x = c * width / (W - 1)``, ``y = r * height /
(H - 1)`` from the corner of pixel (0, 0); the first and last pixels lie on the scan's edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .pfm import CHANNEL_ORDER, _channel_name, read_instrument_channels, read_pfm

__all__ = ["StructureImage", "read_image", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".gwy", ".ibw", ".h5", ".hdf5", ".npz", ".npy")
STRUCTURE_CHANNELS = ("height", "amplitude", "phase")  # the default choice when a file has any of them


@dataclass(frozen=True, eq=False)
class StructureImage:
    """A structure image as read from a file.

    Attributes:
        image: (C, H, W) float32, finite.
        channels: (C,) channel names.
        units: channel name -> unit as stored in the file ('' when unknown).
        scan_size: (width, height) of the scan in metres, or None when the file states none.
        meta: provenance: ``source`` file, ``reader``, ``all_channels`` (every channel the file holds).

    Example:
        >>> img = read_image("../shared/data/instrument/BTFO_DSO_pfm.ibw")  # doctest: +SKIP
        >>> img.channels, img.image.shape, img.scan_size  # doctest: +SKIP
        (('height', 'amplitude', 'phase'), (3, 256, 256), (2e-06, 2e-06))
    """

    image: np.ndarray
    channels: tuple[str, ...]
    units: dict = field(default_factory=dict)
    scan_size: tuple[float, float] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[2])

    @property
    def pixel_size(self) -> float | None:
        """Metres between neighbouring pixel centres along a row (width / (W - 1)), or None."""
        if self.scan_size is None:
            return None
        return float(self.scan_size[0]) / max(1, self.shape[1] - 1)


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"image {path.name!r}: {what}")


def _numeric(path: Path, name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)) or arr.dtype == bool:
        raise _fail(path, f"field {name!r} has dtype {arr.dtype}, expected real numbers")
    return arr.astype(np.float32)


def _from_instrument(path: Path) -> tuple[list[tuple[str, np.ndarray, str]], tuple | None, str]:
    raw = read_instrument_channels(path)
    out, size, seen = [], None, set()
    for quantity, arr, units, _px, sz in raw:
        if arr.ndim != 2:
            continue
        name = _channel_name(quantity) or quantity
        if name in seen:  # trace after retrace (or the reverse): keep the instrument's own name
            name = quantity
        if name in seen:
            continue
        seen.add(name)
        out.append((name, arr, units))
        size = size or sz
    return out, size, "SciFiReaders." + ("GwyddionReader" if path.suffix.lower() == ".gwy" else "IgorIBWReader")


def _from_nsid(path: Path) -> tuple[list[tuple[str, np.ndarray, str]], tuple | None, str]:
    try:
        pfm = read_pfm(path)  # read-only
    except ValueError as exc:
        raise _fail(path, str(exc).removeprefix("path: ")) from None
    return ([(c, pfm.image[k], pfm.units.get(c, "")) for k, c in enumerate(pfm.channels)], pfm.scan_size,
            f"structattn.data.pfm.read_pfm ({pfm.meta.get('reader')})")


def _from_numpy(path: Path) -> tuple[list[tuple[str, np.ndarray, str]], tuple | None, str]:
    size = None
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise _fail(path, f"not a readable .npy array ({type(exc).__name__}: {exc})") from None
        names, units = None, None
        field_name = "array"
    else:
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise _fail(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None
        if "image" not in data:
            raise _fail(path, f"field 'image' missing (present: {sorted(data)})")
        arr, names, units = data["image"], data.get("channels"), data.get("units")
        field_name = "image"
        if "scan_size" in data:
            s = np.asarray(data["scan_size"], dtype=float).reshape(-1)
            if s.size != 2 or not np.isfinite(s).all() or (s <= 0).any():
                raise _fail(path, f"field 'scan_size' must be [width, height] in metres > 0, got {s.tolist()}")
            size = (float(s[0]), float(s[1]))
    arr = _numeric(path, field_name, arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise _fail(path, f"field {field_name!r} must be (H, W) or (C, H, W), got shape {arr.shape}")
    c = arr.shape[0]
    names = [f"channel{i}" for i in range(c)] if names is None else [str(n) for n in np.asarray(names).reshape(-1)]
    units = [""] * c if units is None else [str(u) for u in np.asarray(units).reshape(-1)]
    if len(names) != c or len(units) != c:
        raise _fail(path, f"fields 'channels'/'units' need one entry per channel ({c}), got {len(names)}/{len(units)}")
    return [(n, arr[k], u) for k, (n, u) in enumerate(zip(names, units))], size, "numpy"


def read_image(path, *, channels: tuple[str, ...] | list[str] | str | None = None) -> StructureImage:
    """Read a structure image (see the module doc for formats, names and sizes).

    Args:
        path: the image file.
        channels: names to keep, in this order (a list or a comma-separated string); None
            keeps height, amplitude and phase when present, else every channel.

    Returns:
        The `StructureImage`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsupported or unreadable file, a requested channel that the file lacks,
            channels of different shapes, non-numeric or non-finite pixels. The message is
            one line naming the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix in (".gwy", ".ibw"):
        items, size, reader = _from_instrument(path)
    elif suffix in (".h5", ".hdf5"):
        items, size, reader = _from_nsid(path)
    elif suffix in (".npz", ".npy"):
        items, size, reader = _from_numpy(path)
    else:
        raise _fail(path, f"unsupported file type {suffix!r}; expected one of {list(IMAGE_SUFFIXES)}")
    if not items:
        raise _fail(path, "holds no 2-D image channel")
    names = [n for n, _, _ in items]
    if isinstance(channels, str):
        channels = [c.strip() for c in channels.split(",") if c.strip()]
    if channels:
        missing = [c for c in channels if c not in names]
        if missing:
            raise _fail(path, f"channel {missing[0]!r} not found (channels in the file: {', '.join(names)})")
        if len(set(channels)) != len(channels):
            raise _fail(path, f"channel named twice in {list(channels)}")
        keep = list(channels)
    else:
        structure = [c for c in CHANNEL_ORDER if c in STRUCTURE_CHANNELS and c in names]
        keep = structure or names
    by_name = {n: (a, u) for n, a, u in items}
    shapes = {by_name[c][0].shape for c in keep}
    if len(shapes) != 1:
        raise _fail(path, f"channels {keep} have different shapes {sorted(shapes)}; pick channels of one shape")
    image = np.stack([np.asarray(by_name[c][0], dtype=np.float32) for c in keep])
    h, w = image.shape[1:]
    if h < 2 or w < 2:
        raise _fail(path, f"image of shape {(h, w)} is too small (need H, W >= 2)")
    bad = ~np.isfinite(image)
    if bad.any():
        k = int(np.argwhere(bad)[0][0])
        raise _fail(path, f"channel {keep[k]!r} contains {int(bad[k].sum())} non-finite pixel(s)")
    return StructureImage(image=image, channels=tuple(keep), units={c: by_name[c][1] for c in keep},
                          scan_size=size, meta={"source": str(path), "reader": reader, "all_channels": names})
