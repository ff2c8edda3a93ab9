"""Semi-synthetic samples: real PFM texture, a known rule, known causal regions.

The purely synthetic generator (`structattn.data.synthetic`) draws its own domain pattern,
and its rule reads a disk *centred* on the point, so any default that assumes a centred,
isotropic rule looks fine on it. This module takes a *measured* PFM image (the shared
PbTiO3 scans, or any image a user points to) and computes targets from its pixels by rules
whose causal regions are off-centre, anisotropic or nonlinear. Each rule's region is a mask
in patch coordinates, stored as ``truth["regions"]`` so explanations can be scored against it
(`structattn.data.truth.truth_masks`).

Feature images (all from the texture, robust z-scores): ``A`` amplitude, ``P`` phase,
``W`` wall indicator (amplitude in its lowest 15%: walls are dark lines in PFM amplitude),
``G`` = |d A/d col| - |d A/d row| (vertical walls give a large horizontal gradient).
Offsets are (row, col) in pixels from the point, for a reference 32 px patch; ``disk(o, r)``
is the disk of radius r at offset o.

=================  =========  =========================================================
rule               kind       value at a point (before unit scaling and noise)
=================  =========  =========================================================
``amp_corner``     linear     mean A over disk((-8, +8), 5)
``phase_corner``   linear     mean P over disk((+8, -8), 5)
``contrast``       linear     mean A over disk(0, 4) - mean A over the ring 8..13 px
                              (context beyond the centre)
``wall_density``   nonlinear  mean W over disk(0, 6)  (a threshold of the pixels)
``wall_direction`` nonlinear  mean G over disk((0, +6), 7)  (anisotropic)
``threshold``      nonlinear  sigmoid of (mean P over disk((-8, -8), 5) - its median), steep
``product``        nonlinear  mean A over disk((+8, +8), 5) x mean P over disk((-8, 0), 5)
``trend``          no struct. a smooth function of the point's position only
``noise``          no struct. Gaussian noise
=================  =========  =========================================================

Every target is scaled to unit standard deviation, then Gaussian noise of ``noise`` x 1 is
added (so the best achievable R² is about 1 / (1 + noise²)). ``trend`` and ``noise`` have no
causal region: they exist to check that a run says "not learned" when the structure does
not determine the property.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .sample import Sample

REF_WINDOW = 32  # the rule geometry is defined for this patch size (regions fit inside it)
_HALF = REF_WINDOW // 2


def _disk(offset: tuple[int, int], radius: float) -> np.ndarray:
    """(33, 33) bool disk at `offset` from the centre pixel (16, 16)."""
    yy, xx = np.mgrid[-_HALF : _HALF + 1, -_HALF : _HALF + 1]
    return (yy - offset[0]) ** 2 + (xx - offset[1]) ** 2 <= radius**2


def _ring(r0: float, r1: float) -> np.ndarray:
    yy, xx = np.mgrid[-_HALF : _HALF + 1, -_HALF : _HALF + 1]
    d2 = yy**2 + xx**2
    return (d2 >= r0**2) & (d2 <= r1**2)


# rule -> (kind, the regions it reads). Regions are (33, 33) masks centred on the point.
RULES: dict[str, tuple[str, tuple[np.ndarray, ...]]] = {
    "amp_corner": ("linear", (_disk((-8, 8), 5),)),
    "phase_corner": ("linear", (_disk((8, -8), 5),)),
    "contrast": ("linear", (_disk((0, 0), 4), _ring(8, 13))),
    "wall_density": ("nonlinear", (_disk((0, 0), 6),)),
    "wall_direction": ("nonlinear", (_disk((0, 6), 7),)),
    "threshold": ("nonlinear", (_disk((-8, -8), 5),)),
    "product": ("nonlinear", (_disk((8, 8), 5), _disk((-8, 0), 5))),
    "trend": ("no structure", ()),
    "noise": ("no structure", ()),
}
DEFAULT_RULES = tuple(r for r in RULES if RULES[r][0] != "no structure")


def _robust_z(x: np.ndarray) -> np.ndarray:
    med = np.median(x)
    iqr = np.subtract(*np.percentile(x, [75, 25]))
    scale = iqr / 1.349 if iqr > 0 else (x.std() or 1.0)
    return ((x - med) / scale).astype(np.float64)


def _region_mean(feature: np.ndarray, region: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Mean of `feature` (H, W) over `region` (33, 33, centred) at each point -> (N,)."""
    kernel = region.astype(np.float64) / region.sum()
    # correlate: out[p] = sum_k kernel[k] * feature[p + k - centre], i.e. the region at offset k.
    out = ndimage.correlate(feature, kernel, mode="reflect")
    rc = np.rint(positions).astype(int)
    return out[rc[:, 0], rc[:, 1]]


def _channel(image: np.ndarray, channels: tuple[str, ...], name: str, fallback: int) -> np.ndarray:
    k = channels.index(name) if name in channels else min(fallback, len(channels) - 1)
    return image[k]


def rule_values(
    image: np.ndarray, channels: tuple[str, ...], positions: np.ndarray, rule: str, *, rng: np.random.Generator
) -> np.ndarray:
    """(N,) noise-free value of `rule` at `positions` on the (C, H, W) texture `image`."""
    if rule not in RULES:
        raise ValueError(f"rules: unknown rule {rule!r}; choose from {sorted(RULES)}")
    regions = RULES[rule][1]
    amp = _robust_z(_channel(image, channels, "amplitude", 0))
    if rule == "amp_corner":
        return _region_mean(amp, regions[0], positions)
    if rule == "phase_corner":
        return _region_mean(_robust_z(_channel(image, channels, "phase", 1)), regions[0], positions)
    if rule == "contrast":
        return _region_mean(amp, regions[0], positions) - _region_mean(amp, regions[1], positions)
    if rule == "wall_density":
        walls = (amp < np.quantile(amp, 0.15)).astype(np.float64)
        return _region_mean(walls, regions[0], positions)
    if rule == "wall_direction":
        g = np.abs(ndimage.sobel(amp, axis=1)) - np.abs(ndimage.sobel(amp, axis=0))
        return _region_mean(g, regions[0], positions)
    if rule == "threshold":
        m = _region_mean(_robust_z(_channel(image, channels, "phase", 1)), regions[0], positions)
        return 1.0 / (1.0 + np.exp(-(m - np.median(m)) / (0.1 * (m.std() or 1.0))))
    if rule == "product":
        a = _region_mean(amp, regions[0], positions)
        p = _region_mean(_robust_z(_channel(image, channels, "phase", 1)), regions[1], positions)
        return (a - a.mean()) / (a.std() or 1.0) * (p - p.mean()) / (p.std() or 1.0)
    h, w = image.shape[1:]
    if rule == "trend":  # a smooth drift across the film, blind to the domains
        r, c = positions[:, 0] / h, positions[:, 1] / w
        return np.sin(2.5 * r + 0.5) + 0.8 * c**2
    return rng.standard_normal(len(positions))  # "noise"


def read_texture(path: str | Path) -> tuple[np.ndarray, tuple[str, ...], float | None]:
    """A measured PFM image as ((C, H, W) float32, channel names, metres per pixel or None).

    ``.h5``: NSID PFM (`structattn.data.pfm.read_pfm`); ``.gwy`` / ``.ibw``: SciFiReaders'
    Gwyddion and Igor readers. Channels named amplitude/phase/height are kept (deflection is
    the feedback error, not structure); for other files every 2-D channel is kept.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image: no such file {str(path)!r}")
    if path.suffix.lower() == ".npz":  # a texture saved by `save_texture` (e.g. for a machine without readers)
        with np.load(path, allow_pickle=False) as z:
            if "image" not in z or "channels" not in z:
                raise ValueError(f"image: {path.name!r} needs arrays 'image' (C, H, W) and 'channels' (C,)")
            px = float(z["pixel_size"]) if "pixel_size" in z and np.isfinite(z["pixel_size"]) else None
            return z["image"].astype(np.float32), tuple(str(c) for c in z["channels"]), px
    if path.suffix.lower() in (".h5", ".hdf5"):
        from .pfm import read_pfm

        pfm = read_pfm(path, reader="h5py")
        keep = [k for k, c in enumerate(pfm.channels) if c != "deflection"]
        return pfm.image[keep], tuple(pfm.channels[k] for k in keep), pfm.pixel_size
    from .pfm import read_instrument

    return read_instrument(path)


def save_texture(path: str | Path, image: np.ndarray, channels: tuple[str, ...], pixel_size: float | None) -> None:
    """Write a texture as ``.npz`` (image, channels, pixel_size) that `read_texture` reads back."""
    np.savez_compressed(path, image=np.asarray(image, np.float32), channels=np.array(channels),
                        pixel_size=np.nan if pixel_size is None else float(pixel_size))


def make_semisynthetic(
    *,
    image: str | Path,
    rules: tuple[str, ...] = DEFAULT_RULES,
    spacing: int = 5,
    noise: float = 0.1,
    seed: int = 0,
) -> Sample:
    """A `Sample` on the real texture in `image` with targets from `rules`.

    Args:
        image: a PFM image file (see `read_texture`).
        rules: rule names (see the module table); each becomes one target.
        spacing: grid pitch of the points in pixels (5 px gives about 2000 points on 256 px).
        noise: Gaussian noise added to each unit-variance target.
        seed: seeds the noise.
    """
    rules = tuple(rules)
    bad = [r for r in rules if r not in RULES]
    if not rules or bad:
        raise ValueError(f"rules: expected names from {sorted(RULES)}, got {list(rules)}")
    if int(spacing) < 1:
        raise ValueError(f"spacing: expected a positive number of pixels, got {spacing!r}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
    img, channels, pixel_size = read_texture(image)
    h, w = img.shape[1:]
    if min(h, w) < 2 * _HALF + 2 * spacing:
        raise ValueError(f"image: {h}x{w} px is too small for a {REF_WINDOW} px patch grid")
    rng = np.random.default_rng(seed)
    rr = np.arange(_HALF, h - _HALF, spacing, dtype=float)
    cc = np.arange(_HALF, w - _HALF, spacing, dtype=float)
    g = np.meshgrid(rr, cc, indexing="ij")
    positions = np.stack([g[0].ravel(), g[1].ravel()], axis=1)
    cols = []
    for rule in rules:
        v = rule_values(img, channels, positions, rule, rng=rng)
        v = (v - v.mean()) / (v.std() or 1.0)
        cols.append(v + noise * rng.standard_normal(len(v)))
    regions = {r: np.logical_or.reduce(RULES[r][1]) for r in rules if RULES[r][1]}
    spec = f"semisynthetic:image={image},rules={'+'.join(rules)},spacing={int(spacing)},noise={noise:g},seed={seed}"
    return Sample(
        image=img,
        channels=channels,
        positions=positions,
        targets=np.stack(cols, axis=1),
        target_names=rules,
        pixel_size=pixel_size,
        truth={"regions": regions, "kinds": {r: RULES[r][0] for r in rules}},
        meta={"source": str(image), "spec": spec, "target_units": {r: "a.u." for r in rules}},
    )


# key in the source string -> (make_semisynthetic parameter, parser, what the error calls it)
_KEYS = {
    "image": ("image", str, "a file path"),
    "rules": ("rules", lambda v: tuple(filter(None, v.split("+"))), "rule names joined by '+'"),
    "spacing": ("spacing", int, "an integer"),
    "noise": ("noise", float, "a number"),
    "seed": ("seed", int, "an integer"),
}


def parse_semisynthetic(source: str) -> dict:
    """``semisynthetic:image=PATH,rules=a+b,spacing=5,noise=0.1,seed=0`` -> keyword options."""
    opts: dict = {}
    _, _, rest = source.partition(":")
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or key not in _KEYS:
            raise ValueError(
                f"source: expected 'semisynthetic:image=PATH[,rules=a+b,spacing=N,noise=X,seed=N]', got {source!r}"
            )
        name, kind, what = _KEYS[key]
        try:
            opts[name] = kind(val)
        except ValueError:
            raise ValueError(f"source: {key} must be {what} in {source!r}") from None
    if "image" not in opts:
        raise ValueError(f"source: semisynthetic needs image=PATH (a PFM image file), got {source!r}")
    return opts
