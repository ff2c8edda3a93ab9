"""Co-registration: place a spectroscopy grid on a structure image by physical coordinates.

Coordinates (the pycroscopy / SciFiReaders convention, see `structattn.data.readers`): x runs
along image columns and y along image rows, in metres from the corner pixel (0, 0); an image of
W x H pixels over a ``width x height`` scan has pixel (r, c) at ``(x, y) = (c * width / (W - 1),
r * height / (H - 1))``. A grid of rows x cols points with ``extent = (E_x, E_y)`` placed at
``offset = (O_x, O_y)`` has point (i, j) at ``(O_x + j * E_x / (cols - 1), O_y + i * E_y / (rows
- 1))``: the extent runs from the first to the last point, the offset is where the first point
(row 0, column 0) sits. Without extent and offset the grid covers the same scan area as the
image (its first and last points on the image's edges), which needs no physical size at all.

No rotation, scan-angle or drift correction: the grid's axes are the image's axes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .grids import LoopGrid, parse_voltage, read_grid
from .readers import StructureImage, read_image
from .sample import Sample

__all__ = ["Registration", "place_grid", "parse_pair", "sample_from_files", "files_spec"]

# Points may stick out of the scan by this share of its size (float rounding of stored axes).
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Registration:
    """Where the grid sits on the image (saved in the bundle and the run's config).

    Attributes:
        mode: ``"same scan area"`` or ``"physical"`` (extent/offset in metres).
        image_shape: (H, W) pixels of the image.
        grid_shape: (rows, cols) of the grid.
        scan_size: (width, height) of the image scan in metres, or None.
        extent: (E_x, E_y) of the grid as placed, in metres (None: same scan area without a size).
        offset: (O_x, O_y) of the grid's first point, in metres (None: same scan area without a size).
        pixel_box: (row0, col0, row1, col1) of the first and last grid points, in image pixels.
    """

    mode: str
    image_shape: tuple[int, int]
    grid_shape: tuple[int, int]
    scan_size: tuple[float, float] | None
    extent: tuple[float, float] | None
    offset: tuple[float, float] | None
    pixel_box: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        return asdict(self)


def _pair(name: str, value) -> tuple[float, float] | None:
    """'W,H' text or a pair of numbers -> (float, float); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [v.strip() for v in value.split(",")]
    else:
        parts = list(np.asarray(value, dtype=object).reshape(-1))
    try:
        out = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 2 or not np.isfinite(out).all():
        raise ValueError(f"{name}: expected two numbers in metres 'X,Y' (e.g. 2e-6,2e-6), got {value!r}")
    return out  # type: ignore[return-value]


def parse_pair(name: str, value) -> tuple[float, float] | None:
    """Validate an ``--extent`` (positive) or ``--offset`` pair of metres."""
    out = _pair(name, value)
    if out is not None and name == "--extent" and min(out) <= 0:
        raise ValueError(f"--extent: expected positive width and height in metres, got {value!r}")
    return out


def place_grid(
    grid_shape: tuple[int, int],
    image_shape: tuple[int, int],
    *,
    scan_size: tuple[float, float] | None = None,
    extent=None,
    offset=None,
    grid_extent: tuple[float, float] | None = None,
    image_name: str = "image",
    grid_name: str = "loops",
) -> tuple[np.ndarray, Registration]:
    """(N, 2) (row, col) image-pixel positions of a grid's points, row-major, and the registration.

    Args:
        grid_shape: (rows, cols) of the grid.
        image_shape: (H, W) of the image.
        scan_size: (width, height) of the image scan in metres, or None.
        extent: (E_x, E_y) metres of the grid (first to last point); None: the grid's own
            ``grid_extent`` when an offset is given, else the same scan area as the image.
        offset: (O_x, O_y) metres of the grid's first point from the image's corner; None: (0, 0).
        grid_extent: the extent stated by the grid file, if any.
        image_name, grid_name: file names for error messages.

    Raises:
        ValueError: a physical placement without the image's scan size, or points outside the
            image (one line naming both files, the extent/offset and the scan size).

    Example:
        >>> pos, reg = place_grid((3, 3), (101, 101), scan_size=(1e-6, 1e-6), extent=(5e-7, 5e-7),
        ...                       offset=(2.5e-7, 0.0))
        >>> pos[[0, 8]].tolist()
        [[0.0, 25.0], [50.0, 75.0]]
    """
    rows, cols = (int(v) for v in grid_shape)
    h, w = (int(v) for v in image_shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"{grid_name}: expected a grid of at least 1 x 1 points, got {grid_shape}")
    extent = parse_pair("--extent", extent)
    offset = parse_pair("--offset", offset)
    ii, jj = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
    fi = ii.ravel() / max(rows - 1, 1)  # 0..1 from the first to the last row
    fj = jj.ravel() / max(cols - 1, 1)
    if extent is None and offset is None:  # same scan area: first and last points on the image's edges
        pos = np.column_stack([fi * (h - 1), fj * (w - 1)])
        mode = "same scan area"
        if scan_size is not None:
            extent, offset = (float(scan_size[0]), float(scan_size[1])), (0.0, 0.0)
    else:
        mode = "physical"
        if extent is None:
            if grid_extent is None:
                raise ValueError(f"--offset: the grid {grid_name!r} states no physical size; give --extent too")
            extent = (float(grid_extent[0]), float(grid_extent[1]))
        offset = offset or (0.0, 0.0)
        if scan_size is None:
            raise ValueError(f"--extent/--offset: the image {image_name!r} states no physical scan size; "
                             "omit them to place the grid over the same scan area")
        sw, sh = float(scan_size[0]), float(scan_size[1])
        x = offset[0] + fj * extent[0]  # metres from the image's corner
        y = offset[1] + fi * extent[1]
        tol_x, tol_y = _TOLERANCE * sw, _TOLERANCE * sh
        outside = (x < -tol_x) | (x > sw + tol_x) | (y < -tol_y) | (y > sh + tol_y)
        if outside.any():
            raise ValueError(
                f"--extent/--offset: the grid {grid_name!r} ({rows}x{cols} points, x {x.min():.4g}..{x.max():.4g} m, "
                f"y {y.min():.4g}..{y.max():.4g} m) falls outside the image {image_name!r} "
                f"(scan {sw:.4g} x {sh:.4g} m): {int(outside.sum())} of {rows * cols} points outside; "
                "check --extent (grid width,height) and --offset (first point x,y)")
        pos = np.column_stack([np.clip(y / sh, 0, 1) * (h - 1), np.clip(x / sw, 0, 1) * (w - 1)])
    box = (float(pos[0, 0]), float(pos[0, 1]), float(pos[-1, 0]), float(pos[-1, 1]))
    reg = Registration(mode=mode, image_shape=(h, w), grid_shape=(rows, cols),
                       scan_size=None if scan_size is None else (float(scan_size[0]), float(scan_size[1])),
                       extent=extent, offset=offset, pixel_box=box)
    return pos, reg


def files_spec(*, image, loops, extent=None, offset=None, channels=None, voltage=None,
               field: str = "out-of-field", cycle: int = 0) -> str:
    """The canonical source string of an image + grid pair (what `load_sample` rebuilds it from)."""
    spec = {"image": str(image), "loops": str(loops)}
    if extent is not None:
        spec["extent"] = list(parse_pair("--extent", extent))
    if offset is not None:
        spec["offset"] = list(parse_pair("--offset", offset))
    if channels:
        spec["channels"] = [c.strip() for c in channels.split(",")] if isinstance(channels, str) else list(channels)
    if voltage is not None:
        spec["voltage"] = voltage if isinstance(voltage, str) else [float(v) for v in np.ravel(voltage)]
    if field != "out-of-field":
        spec["field"] = field
    if cycle:
        spec["cycle"] = int(cycle)
    return json.dumps(spec)


def sample_from_files(
    image,
    loops,
    *,
    extent=None,
    offset=None,
    channels=None,
    voltage=None,
    field: str = "out-of-field",
    cycle: int = 0,
) -> Sample:
    """A `Sample` from a structure-image file and a spectroscopy-grid file.

    Args:
        image: image file (`structattn.data.readers.read_image`: .gwy, .ibw, NSID .h5, .npz, .npy).
        loops: grid file (`structattn.data.grids.read_grid`: NSID/USID .h5, .npz, .npy).
        extent: grid (width, height) in metres, first to last point ("W,H" or a pair); see `place_grid`.
        offset: grid first-point (x, y) in metres from the image's corner.
        channels: image channels to keep (names); None: height, amplitude, phase when present.
        voltage: the bias of a ``.npy`` grid.
        field, cycle: the USID choices (see `read_grid`).

    Returns:
        The Sample: the image's channels, one point per grid point (row-major), the loops and
        voltage, metres per pixel, and ``meta["registration"]`` (see `Registration`).
    """
    img: StructureImage = read_image(image, channels=channels)
    grid: LoopGrid = read_grid(loops, voltage=parse_voltage(voltage), field=field, cycle=cycle)
    pos, reg = place_grid(grid.shape, img.shape, scan_size=img.scan_size, extent=extent, offset=offset,
                          grid_extent=grid.extent, image_name=Path(image).name, grid_name=Path(loops).name)
    rows, cols = grid.shape
    from .bundle import file_sha256

    meta = {
        "source": f"{image} + {loops}",
        "reader": "structattn.data.coregister.sample_from_files",
        "spec": files_spec(image=image, loops=loops, extent=extent, offset=offset, channels=channels,
                           voltage=voltage, field=field, cycle=cycle),
        "registration": reg.to_dict(),
        "channel_units": dict(img.units),
        "image_meta": {k: v for k, v in img.meta.items() if k != "all_channels"},
        "grid_meta": dict(grid.meta),
        "grid_extent": grid.extent,
        "sha256": {"image": file_sha256(image), "loops": file_sha256(loops)},
    }
    try:
        return Sample(image=img.image, channels=img.channels, positions=pos,
                      loops=grid.loops.reshape(rows * cols, -1), voltage=grid.voltage,
                      pixel_size=img.pixel_size, meta=meta)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{Path(image).name} + {Path(loops).name}: {exc}") from None


def sample_from_spec(spec: dict) -> Sample:
    """Rebuild the Sample of a `files_spec` dict (what a run folder records)."""
    unknown = set(spec) - {"image", "loops", "extent", "offset", "channels", "voltage", "field", "cycle"}
    if unknown or "image" not in spec or "loops" not in spec:
        raise ValueError(f"source: an image+loops source needs keys image and loops, got {sorted(spec)}")
    return sample_from_files(spec["image"], spec["loops"], extent=spec.get("extent"), offset=spec.get("offset"),
                             channels=spec.get("channels"), voltage=spec.get("voltage"),
                             field=spec.get("field", "out-of-field"), cycle=spec.get("cycle", 0))
