"""Unsupervised domain segmentation of a PFM structure image into named classes.

Classes (names as in `structattn.data.synthetic.LABEL_NAMES`, kept where found):

* ``c+`` / ``c-``: out-of-plane polarization up / down, told apart by the PFM phase;
* ``a``: in-plane (a-domain) regions, i.e. regions of low vertical PFM amplitude that are
  wider than a wall;
* ``wall_cc``: 180 degree c/c walls, where c+ meets c-;
* ``wall_ac``: 90 degree a/c walls, the one-pixel rim of an a region facing c;
* ``wall``: a thin low-amplitude line whose type cannot be told (only on real images).

How (all deterministic for a given ``seed``):

1. Polarity: the phase projected on its own polarization axis, ``p = cos(theta - phi)``
   (Gaussian-smoothed, ``sigma`` px; ``phi`` from the doubled-angle circular mean, so the
   two c phases 180 degrees apart map to p = +1 / -1 whatever the instrument's offset, and
   wrapped phase such as -90..270 deg is handled). Responsive pixels take the sign of p;
   specks under ``min_area`` px are phase noise.
2. Response: a 2-component Gaussian mixture on log amplitude (smoothed, percentile-
   clipped), cut halfway between the two means: below is "low response" (a-domains, walls).
   It counts only if the low part's median amplitude is under ``low_ratio`` x the rest.
3. Morphology (scipy.ndimage): low-response pixels form ``a`` only where a disk of radius
   ``a_min_radius`` fits (binary opening) and not along a c+/c- boundary (within
   ``wall_width`` px), since a thin low line where polarity flips is a c/c wall. Other
   pixels take the nearer c class. Walls then follow geometric rules (the same as the
   synthetic generator's): ``wall_cc`` = c pixels touching both polarities, dilated once
   (2-4 px, like measured walls); ``wall_ac`` = 1-px rim of ``a``; ``wall`` = remaining
   thin low-amplitude lines, a wall whose type amplitude and phase cannot tell.

Which phase is c+? On real data the sign convention depends on the instrument (drive
phase offset, lock-in settings) and is not known a priori. The convention here is
explicit: ``c+`` is the polarity whose phase lies nearer to ``c_plus_phase`` (default
-90 deg, the convention of the synthetic generator). The two cluster phases are reported
in ``Segmentation.notes`` so users can swap names if their reference says otherwise;
enrichment statistics are symmetric under that swap (only names change).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from sklearn.mixture import GaussianMixture

CLASS_ORDER = ("c+", "c-", "a", "wall_cc", "wall_ac", "wall")
_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A label image with named domain classes.

    Attributes:
        labels: (H, W) int64 class index per pixel, into `names`.
        names: (L,) class names, a subset of ``("c+", "c-", "a", "wall_cc", "wall_ac")`` for
            the unsupervised segmentation, or any names for user-given labels.
        confidence: per class, 0..1: for c+/c- the mean |p| of their pixels (clean
            180-degree phase contrast = 1), for a the mean mixture posterior of "low
            response"; NaN for walls (geometric) and user-given labels.
        notes: per class (and ``"_method"``), how it was found and what is uncertain.
        method: ``"gmm+morphology"`` or ``"given"``.

    Example:
        >>> from structattn.data.synthetic import make_synthetic
        >>> s = make_synthetic(seed=0)
        >>> seg = segment_domains(s.image, s.channels)
        >>> seg.labels.shape, seg.names[:3]
        ((256, 256), ('c+', 'c-', 'a'))
    """

    labels: np.ndarray
    names: tuple[str, ...]
    confidence: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    method: str = "given"

    @classmethod
    def from_labels(cls, *, labels: np.ndarray, names) -> "Segmentation":
        """Wrap user-given labels (e.g. a bundle's ``labels`` / ``label_names``)."""
        lab = np.asarray(labels)
        if lab.ndim != 2:
            raise ValueError(f"labels: expected an (H, W) int array, got shape {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(f"labels: expected an integer array, got dtype {lab.dtype}")
        names = tuple(str(n) for n in names)
        if lab.size and (lab.min() < 0 or lab.max() >= len(names)):
            raise ValueError(
                f"labels: values must index names (0..{len(names) - 1}), got range {lab.min()}..{lab.max()}"
            )
        return cls(
            labels=lab.astype(np.int64),
            names=names,
            confidence={n: float("nan") for n in names},
            notes={"_method": "labels given by the user"},
            method="given",
        )

    @property
    def fractions(self) -> dict[str, float]:
        """Area fraction of each class in the image."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.names))
        return {n: float(c) / self.labels.size for n, c in zip(self.names, counts)}


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy**2 + xx**2) <= radius**2 + 0.5


def _channel(image: np.ndarray, channels, name: str, param: str) -> np.ndarray:
    channels = tuple(str(c) for c in channels)
    if name not in channels:
        raise ValueError(
            f"{param}: channel {name!r} not in the image; available channels: {list(channels)}. "
            f"Pass {param}=<name of the PFM {param} channel>"
        )
    return np.asarray(image[channels.index(name)], dtype=np.float64)


def segment_domains(
    image: np.ndarray,
    channels,
    *,
    amplitude: str = "amplitude",
    phase: str = "phase",
    c_plus_phase: float = -90.0,
    sigma: float = 0.7,
    a_min_radius: int = 2,
    wall_width: float = 2.0,
    low_ratio: float = 0.6,
    min_area: int = 9,
    seed: int = 0,
) -> Segmentation:
    """Segment a PFM image into c+, c-, a-domains and c/c, a/c walls (see module doc).

    Args:
        image: (C, H, W) structure image.
        channels: (C,) channel names.
        amplitude: name of the PFM amplitude channel (any linear unit).
        phase: name of the PFM phase channel, in degrees (any offset or wrap).
        c_plus_phase: phase in degrees that marks c+ on this instrument; the polarity
            cluster nearer to it is named ``c+``.
        sigma: Gaussian smoothing of the features, px (noise vs thin walls).
        a_min_radius: a low-response region is an a-domain only where a disk of this
            radius (px) fits in it; thinner lines are walls.
        wall_width: low-response pixels within this distance (px) of a polarity change are
            c/c walls, not a-domains.
        low_ratio: a-domains are reported only if the low-response component's median
            amplitude is below this fraction of the c components' median.
        min_area: polarity specks smaller than this (px) are treated as phase noise.
        seed: mixture initialisation seed.

    Returns:
        A `Segmentation` with ``method="gmm+morphology"``.

    Raises:
        ValueError: the image is not (C, H, W), a channel is missing, or it is not finite.
    """
    img = np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"image: expected a (C, H, W) array, got shape {img.shape}")
    if len(tuple(channels)) != img.shape[0]:
        raise ValueError(f"channels: expected {img.shape[0]} names for image {img.shape}, got {list(channels)}")
    amp = _channel(img, channels, amplitude, "amplitude")
    ph = _channel(img, channels, phase, "phase")
    for nm, arr in (("amplitude", amp), ("phase", ph)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{nm}: channel contains {int((~np.isfinite(arr)).sum())} non-finite pixels")
    if min(amp.shape) < 8:
        raise ValueError(f"image: expected at least 8x8 pixels to segment, got {amp.shape}")
    if not sigma >= 0:
        raise ValueError(f"sigma: expected a smoothing width >= 0 px, got {sigma!r}")
    if not isinstance(a_min_radius, (int, np.integer)) or a_min_radius < 1:
        raise ValueError(f"a_min_radius: expected an integer >= 1 px, got {a_min_radius!r}")
    if not 0 < low_ratio < 1:
        raise ValueError(f"low_ratio: expected 0 < low_ratio < 1, got {low_ratio!r}")
    if not wall_width >= 0 or not isinstance(min_area, (int, np.integer)) or min_area < 0:
        raise ValueError(f"wall_width/min_area: expected >= 0 (min_area an integer), got {wall_width!r}/{min_area!r}")

    # 1. Polarity. Axis from the doubled-angle mean: both c phases (180 deg apart) add up
    #    in exp(2i theta); the axis is oriented towards `c_plus_phase`. The projection
    #    p = cos(theta - phi) is +1 on c+, -1 on c-, ~0 or random where the phase is noise.
    theta = np.deg2rad(ph)
    phi = float(np.angle(np.exp(2j * theta).mean()) / 2)
    if np.cos(np.deg2rad(c_plus_phase) - phi) < 0:
        phi += np.pi
    proj = ndimage.gaussian_filter(np.cos(theta - phi), sigma)  # (H, W) in [-1, 1]

    # 2. Response. Two-component Gaussian mixture on log amplitude (PFM amplitude is
    #    heavy-tailed on real films; clip to percentiles so hot pixels do not set the scale),
    #    fit on a regular subsample for speed (neighbouring pixels are correlated anyway).
    a_s = ndimage.gaussian_filter(amp, sigma)
    lo, hi = np.percentile(a_s, [1, 99])
    lo = max(lo, hi * 1e-3) if hi > 0 else 1e-12
    feat = np.log(np.clip(a_s, lo, max(hi, lo * 1.001))).reshape(-1, 1)  # (H*W, 1)
    gmm = GaussianMixture(n_components=2, covariance_type="full", random_state=seed)
    gmm.fit(feat[:: max(1, feat.shape[0] // 20000)])
    post = gmm.predict_proba(feat)  # (H*W, 2)
    low = int(np.argmin(gmm.means_[:, 0]))
    # Decide halfway between the two means (in log amplitude), not by the posterior: the
    # low component (a-domains + walls + blurred edges) is much wider than the c one and
    # its posterior would swallow the rim of every c region.
    cut = float(gmm.means_[:, 0].mean())
    is_low = (feat[:, 0] < cut).reshape(amp.shape)
    # a-domains only if the low component is clearly weaker than the rest.
    amp_low = float(np.median(amp[is_low])) if is_low.any() else np.inf
    amp_c = float(np.median(amp[~is_low])) if (~is_low).any() else np.nan
    has_low = bool(is_low.any() and (~is_low).any() and amp_low < low_ratio * amp_c)
    if not has_low:
        is_low = np.zeros(amp.shape, bool)

    # Polarity of responsive pixels by the sign of p; specks under `min_area` px are noise.
    plus = (proj >= 0) & ~is_low
    minus = (proj < 0) & ~is_low
    for m in (plus, minus):
        lab_m, n_m = ndimage.label(m)
        if n_m:
            size = ndimage.sum(m, lab_m, index=np.arange(1, n_m + 1))
            m[np.isin(lab_m, 1 + np.flatnonzero(size < min_area))] = False
    one_polarity = not (plus.any() and minus.any())
    if one_polarity:
        pol = np.full(amp.shape, 0 if plus.sum() >= minus.sum() else 1)
    else:
        # Other pixels take the nearer c class (Voronoi fill): they sit on one side of a wall.
        d_pos = ndimage.distance_transform_edt(~plus)
        d_neg = ndimage.distance_transform_edt(~minus)
        pol = np.where(d_pos <= d_neg, 0, 1)

    # 3. Morphology. a-domains: low regions where a disk of `a_min_radius` fits, away from
    #    polarity changes (a thin low line where polarity flips is a c/c wall).
    pol_edge = ndimage.binary_dilation(pol == 0, _CROSS) & ndimage.binary_dilation(pol == 1, _CROSS)
    near_edge = (ndimage.distance_transform_edt(~pol_edge) <= wall_width) if pol_edge.any() else np.zeros_like(is_low)
    a = ndimage.binary_opening(is_low, _disk(a_min_radius)) & ~near_edge
    a = ndimage.binary_opening(a, _disk(1))  # drop slivers left by the edge cut

    bulk = np.where(a, 2, pol)  # 0 c+, 1 c-, 2 a
    is_c = bulk < 2
    near_p = ndimage.binary_dilation(bulk == 0, _CROSS)
    near_n = ndimage.binary_dilation(bulk == 1, _CROSS)
    wall_cc = ndimage.binary_dilation(is_c & near_p & near_n, _CROSS) & is_c
    wall_ac = a & ~ndimage.binary_erosion(a, _CROSS, border_value=1)  # rim of a facing c
    # Thin low-response lines that are neither at a polarity change nor next to a:
    # a wall whose type the two channels cannot tell (e.g. between two same-phase regions).
    wall = is_low & is_c & ~wall_cc & ~ndimage.binary_dilation(a, _CROSS, iterations=2)
    wall = ndimage.binary_opening(wall, _CROSS) if wall.any() else wall
    full = np.where(wall_cc, 3, np.where(wall_ac, 4, np.where(wall, 5, bulk)))

    # Keep only classes found; re-index to (0..L-1) in CLASS_ORDER.
    present = [k for k in range(6) if (full == k).any()]
    remap = np.full(6, -1)
    remap[present] = np.arange(len(present))
    labels = remap[full].astype(np.int64)
    names = tuple(CLASS_ORDER[k] for k in present)

    # Confidence: for c classes the mean |p| of their pixels (1 = clean 180-degree phase
    # contrast), for a the mean mixture posterior of "low response"; walls are geometric.
    p_low = post[:, low].reshape(amp.shape)
    conf = {}
    for k in present:
        sel = full == k
        if k < 2:
            conf[CLASS_ORDER[k]] = float(np.abs(proj[sel]).mean())
        elif k == 2:
            conf[CLASS_ORDER[k]] = float(p_low[sel].mean())
        else:
            conf[CLASS_ORDER[k]] = float("nan")
    wrap = lambda d: ((d + 180.0) % 360.0) - 180.0  # noqa: E731
    axis_deg = float(np.rad2deg(phi))
    ratio = amp_low / amp_c if np.isfinite(amp_low) and amp_c else float("nan")
    notes = {
        "_method": "phase-axis projection for polarity, 2-component Gaussian mixture on log amplitude "
        "for response, morphology for a-domains and walls",
        "_amplitude_ratio": f"low-response / responsive median amplitude = {ratio:.2f}",
        "c+": f"phase near {wrap(axis_deg):.0f} deg (nearer c_plus_phase={c_plus_phase:g}); "
        "which phase is 'up' is a convention, not measured",
        "c-": f"phase near {wrap(axis_deg + 180.0):.0f} deg",
        "a": f"low vertical amplitude regions wider than {2 * a_min_radius + 1} px, away from polarity changes"
        if has_low
        else f"no a: low-response component at {ratio:.2f} x the responsive amplitude (needs < {low_ratio})",
        "wall_cc": "c pixels touching both polarities, dilated once (geometric)",
        "wall_ac": "1-px rim of a-domains facing c (geometric)",
        "wall": "thin low-amplitude lines not at a polarity change nor next to a: wall of unknown type",
    }
    if one_polarity:
        notes["_polarity"] = "one polarity only: no second phase cluster among responsive pixels"
    notes = {k: v for k, v in notes.items() if k.startswith("_") or k in names}
    return Segmentation(labels=labels, names=names, confidence=conf, notes=notes, method="gmm+morphology")


def label_patches(
    labels: np.ndarray, positions: np.ndarray, *, window: int, pad_mode: str = "reflect"
) -> np.ndarray:
    """(N, window, window) int label patches, pixel-aligned with `extract_patches`.

    Use the same ``pad_mode`` as the image patches the explanations were made on, so that
    label and attribution pixels correspond near the border too.
    """
    from ..data.patches import extract_patches

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels: expected (H, W), got shape {lab.shape}")
    if pad_mode == "constant":
        raise ValueError("pad_mode: 'constant' would invent class 0 at the border; use 'reflect' or 'edge'")
    # float32 carries small ints exactly; rint undoes nothing but guards the cast.
    out = extract_patches(lab[None].astype(np.float32), positions, window=window, pad_mode=pad_mode)[:, 0]
    return np.rint(out).astype(np.int64)
