"""The `Sample`: one measured (or synthetic) specimen, validated once at construction.

Everything downstream (targets, patches, training, explanation) takes a `Sample`, so all
checks on user data live here and nowhere deeper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _as_float_array(name: str, value, ndim: tuple[int, ...]) -> np.ndarray:
    if np.iscomplexobj(value):  # never silently drop the imaginary part
        raise TypeError(f"{name}: complex values (dtype {np.asarray(value).dtype}); pass real arrays, e.g. the "
                        "amplitude and phase (np.abs, np.angle) as two channels")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a numeric array, got {type(value).__name__} ({exc})") from None
    if arr.ndim not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name}: expected a {want} array, got shape {arr.shape}")
    return arr


def _check_finite(name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise ValueError(
            f"{name}: contains {int(bad.sum())} non-finite value(s) (NaN/inf), first at index {where}; "
            "clean or mask them before building a Sample"
        )


def _as_names(name: str, value, count: int, default_prefix: str, *, key: bool = False) -> tuple[str, ...]:
    """Validated names; ``key``: they become HDF5 dataset names, so no '/' and not '.'."""
    if value is None:
        return tuple(f"{default_prefix}{i}" for i in range(count))
    names = tuple(str(v) for v in np.asarray(value).reshape(-1).tolist())
    if len(names) != count:
        raise ValueError(f"{name}: expected {count} names, got {len(names)}: {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: names must be unique, got {list(names)}")
    for n in names:
        if not n.strip():
            raise ValueError(f"{name}: names must not be empty, got {list(names)}")
        if key and ("/" in n or n in (".", "..") or "\x00" in n):
            raise ValueError(f"{name}: {n!r} cannot name a dataset in the run's HDF5 files (no '/', not '.'); "
                             "rename it")
    return names


@dataclass(frozen=True, eq=False)
class Sample:
    """A structure image, spectroscopy points and their properties.

    Attributes:
        image: (C, H, W) float structure image (e.g. PFM amplitude, phase, height).
        channels: (C,) channel names.
        positions: (N, 2) float (row, col) of each spectroscopy point, in image pixels.
        loops: (N, V) hysteresis loops, or None when only `targets` are given.
        voltage: (V,) bias waveform of the loops, or None.
        targets: (N, K) properties to learn directly, or None (then derived from loops).
        target_names: (K,) names of `targets`.
        pixel_size: metres per image pixel, or None if unknown.
        labels: optional (H, W) int domain labels with `label_names` (L,).
        truth: optional generator ground truth (see `structattn.data.synthetic`).
        meta: free-form provenance (source file, reader, ...).

    Example:
        >>> import numpy as np
        >>> s = Sample(image=np.zeros((1, 64, 64)), positions=[[32, 32]], targets=[[1.0]])
        >>> s.n_points, s.image.shape
        (1, (1, 64, 64))
    """

    image: np.ndarray
    positions: np.ndarray
    channels: tuple[str, ...] = ()
    loops: np.ndarray | None = None
    voltage: np.ndarray | None = None
    targets: np.ndarray | None = None
    target_names: tuple[str, ...] = ()
    pixel_size: float | None = None
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] = ()
    truth: dict | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        image = _as_float_array("image", self.image, (2, 3))
        if image.ndim == 2:
            image = image[None]
        c, h, w = image.shape
        if c < 1 or h < 2 or w < 2:
            raise ValueError(f"image: expected (C, H, W) with C>=1 and H, W >= 2, got shape {image.shape}")
        _check_finite("image", image)
        object.__setattr__(self, "image", image.astype(np.float32))
        object.__setattr__(self, "channels", _as_names("channels", self.channels or None, c, "channel"))

        pos = _as_float_array("positions", self.positions, (2,))
        if pos.shape[1] != 2 or pos.shape[0] < 1:
            raise ValueError(f"positions: expected shape (N, 2) of (row, col) with N>=1, got {pos.shape}")
        _check_finite("positions", pos)
        outside = (pos[:, 0] < 0) | (pos[:, 0] > h - 1) | (pos[:, 1] < 0) | (pos[:, 1] > w - 1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"positions: {int(outside.sum())} point(s) lie outside the {h}x{w} image, "
                f"first is point {i} at (row, col)=({pos[i, 0]:g}, {pos[i, 1]:g})"
            )
        object.__setattr__(self, "positions", pos)
        n = pos.shape[0]

        if self.loops is None and self.targets is None:
            raise ValueError("loops/targets: a Sample needs `loops` (with `voltage`) or `targets`; got neither")
        if self.loops is not None:
            loops = _as_float_array("loops", self.loops, (2,))
            if loops.shape[0] != n:
                raise ValueError(f"loops: expected one loop per point, (N={n}, V), got shape {loops.shape}")
            if self.voltage is None:
                raise ValueError("voltage: `loops` were given without their (V,) `voltage` waveform")
            volt = _as_float_array("voltage", self.voltage, (1,))
            if volt.shape[0] != loops.shape[1]:
                raise ValueError(
                    f"voltage: expected length V={loops.shape[1]} to match loops {loops.shape}, got {volt.shape}"
                )
            _check_finite("voltage", volt)
            # NaN inside loops is not fatal: loop analysis flags such points.
            object.__setattr__(self, "loops", loops)
            object.__setattr__(self, "voltage", volt)
        elif self.voltage is not None:
            raise ValueError("voltage: given without `loops`")

        if self.targets is not None:
            tg = _as_float_array("targets", self.targets, (1, 2))
            if tg.ndim == 1:
                tg = tg[:, None]
            if tg.shape[0] != n:
                raise ValueError(f"targets: expected one row per point, (N={n}, K), got shape {tg.shape}")
            _check_finite("targets", tg)
            object.__setattr__(self, "targets", tg)
            object.__setattr__(
                self, "target_names",
                _as_names("target_names", self.target_names or None, tg.shape[1], "target", key=True)
            )
        elif self.target_names:
            raise ValueError("target_names: given without `targets`")

        if self.pixel_size is not None:
            arr = np.asarray(self.pixel_size)
            if arr.size != 1 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
                raise ValueError(f"pixel_size: expected one number of metres per pixel, got {self.pixel_size!r}")
            ps = float(arr.reshape(-1)[0])
            if not np.isfinite(ps) or ps <= 0:
                raise ValueError(f"pixel_size: expected a positive number of metres, got {self.pixel_size!r}")
            object.__setattr__(self, "pixel_size", ps)

        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != (h, w):
                raise ValueError(f"labels: expected shape (H, W)=({h}, {w}) like the image, got {lab.shape}")
            if not np.issubdtype(lab.dtype, np.integer):
                raise TypeError(f"labels: expected an integer array, got dtype {lab.dtype}")
            n_lab = int(lab.max()) + 1
            if lab.min() < 0:
                raise ValueError(f"labels: expected non-negative class indices, got min {lab.min()}")
            names = _as_names("label_names", self.label_names or None, max(n_lab, len(self.label_names)), "class",
                              key=True)
            object.__setattr__(self, "labels", lab.astype(np.int64))
            object.__setattr__(self, "label_names", names)

    @property
    def n_points(self) -> int:
        return int(self.positions.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the structure image."""
        return int(self.image.shape[1]), int(self.image.shape[2])

    def subset(self, index: np.ndarray) -> "Sample":
        """The same sample restricted to the points `index` (image kept whole)."""
        index = np.asarray(index)
        return Sample(
            image=self.image,
            channels=self.channels,
            positions=self.positions[index],
            loops=None if self.loops is None else self.loops[index],
            voltage=self.voltage,
            targets=None if self.targets is None else self.targets[index],
            target_names=self.target_names,
            pixel_size=self.pixel_size,
            labels=self.labels,
            label_names=self.label_names,
            truth=self.truth,
            meta=dict(self.meta),
        )
