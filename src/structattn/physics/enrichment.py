"""Attention (or any attribution) by domain class: enrichment with bootstrap intervals.

For explained point m with an (w, w) attribution map ``a_m`` and the label patch ``y_m``
(same pixels, see `structattn.physics.segment.label_patches`):

* attribution share of class l: ``s_ml = sum_{y_m = l} |a_m| / sum |a_m|``
* area share of class l:        ``f_ml = #{y_m = l} / w^2``

**Signed attributions** (gradients, integrated gradients, SHAP) are taken in absolute value:
the question is *where* the model looks, not in which direction a pixel pushes; a class
whose pixels push up and down in equal amounts is still used. Attention maps are already
non-negative, so nothing changes for them.

**Global enrichment = ratio of means** over points:
``E_l = mean_m s_ml / mean_m f_ml``. Equivalently: pool every point's map, each
normalised to total 1, and compare the share of attribution on class l with the share of
area of class l. E = 1 means "attended in proportion to its area", > 1 enriched.
Why not the mean of per-point ratios ``s_ml / f_ml``? That ratio is undefined where the
class is absent from the patch and explodes where it covers a few pixels, so its mean is
dominated by the rarest cases; the ratio of means weights each point by how much of the
class it contains and needs no special case for absent classes (they add 0 to both sums).
A class absent from every patch gets NaN.

**Intervals**: percentile bootstrap over points (resample points with replacement,
recompute the ratio of means), 95% by default. Points are the unit of resampling because
attribution pixels within a patch are strongly dependent. Neighbouring patches overlap, so
the interval is somewhat optimistic when points are denser than the window; say so when
reporting.

**Per point**: ``s_ml / f_ml`` with NaN where class l is absent from point m's patch
(for maps). Points whose map sums to 0 carry no attribution and are left out (counted).

**Reference** (``reference=``): ``"area"`` (default, as above) asks "more than its area?".
``"profile"`` is a control for spatial bias: a model that simply looks at the patch centre
is class-blind, yet a class that happens to sit more often near the centres than at the
rims would look enriched. With ``"profile"`` the area share is replaced by the share the
class would get under the average map shape, ``f_ml = sum_{y_m = l} pbar / sum pbar`` with
``pbar`` the mean over points of the normalised |maps|; E = 1 then means "no class
preference beyond where the method looks on average". The profile is fixed from all
points (not re-estimated per bootstrap resample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _ratio_of_means(share: np.ndarray, area: np.ndarray) -> np.ndarray:
    """(..., L) ratio of means over the point axis (-2) of (..., M, L) arrays."""
    num = share.mean(axis=-2)
    den = area.mean(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _bootstrap(share: np.ndarray, area: np.ndarray, *, n_boot: int, seed: int, level: float) -> np.ndarray:
    """(L, 2) percentile interval of the ratio of means, resampling points (rows)."""
    m = share.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, share.shape[1]))
    # Chunks keep memory at ~chunk x M x L floats for large M.
    chunk = max(1, min(n_boot, 2_000_000 // max(1, m * share.shape[1])))
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, m, size=(min(chunk, n_boot - start), m))  # (b, M)
        out[start : start + len(idx)] = _ratio_of_means(share[idx], area[idx])
    return _interval(out, level)


def _interval(draws: np.ndarray, level: float) -> np.ndarray:
    """(L, 2) percentile interval of (B, L) bootstrap draws; NaN for all-NaN columns."""
    alpha = (1.0 - level) / 2
    ci = np.full((draws.shape[1], 2), np.nan)
    ok = np.isfinite(draws).any(axis=0)  # a class absent from every point stays NaN
    if ok.any():
        ci[ok] = np.nanquantile(draws[:, ok], [alpha, 1 - alpha], axis=0).T
    return ci


@dataclass(frozen=True, eq=False)
class EnrichmentResult:
    """Attribution share against area share, per domain class (see module doc).

    Attributes:
        names: (L,) class names.
        enrichment: (L,) global enrichment (ratio of means); NaN for a class never present.
        ci: (L, 2) bootstrap interval (low, high) at `level`.
        per_point: (M, L) per-point enrichment, NaN where the class is absent or the map is 0.
        share: (M, L) attribution share per point and class (rows of 0 for empty maps).
        area: (M, L) area share per point and class.
        valid: (M,) bool, False where the map summed to 0 (left out of the statistics).
        n_boot, seed, level: bootstrap settings, kept so `split_by` reproduces them.
        meta: ``{"reference": "area" | "profile"}``.

    Example:
        >>> import numpy as np
        >>> labels = np.zeros((20, 8, 8), int); labels[:, :, :4] = 1   # half class 1
        >>> maps = (labels == 1).astype(float)                         # all weight on class 1
        >>> r = domain_enrichment(maps, labels, names=("c+", "a"), n_boot=200)
        >>> np.round(r.enrichment, 2).tolist()
        [0.0, 2.0]
    """

    names: tuple[str, ...]
    enrichment: np.ndarray
    ci: np.ndarray
    per_point: np.ndarray
    share: np.ndarray
    area: np.ndarray
    valid: np.ndarray
    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95
    meta: dict = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return int(self.valid.sum())

    def enriched(self) -> dict[str, bool]:
        """Per class: True if the whole interval lies above 1."""
        return {n: bool(lo > 1.0) for n, (lo, _) in zip(self.names, self.ci)}

    def depleted(self) -> dict[str, bool]:
        """Per class: True if the whole interval lies below 1."""
        return {n: bool(hi < 1.0) for n, (_, hi) in zip(self.names, self.ci)}

    def table(self) -> list[dict]:
        """One row per class: name, reference (area or profile) share, attribution share, enrichment, CI."""
        v = self.valid
        rows = []
        for i, n in enumerate(self.names):
            rows.append(
                {
                    "class": n,
                    "reference_share": float(self.area[v, i].mean()) if v.any() else float("nan"),
                    "attribution_share": float(self.share[v, i].mean()) if v.any() else float("nan"),
                    "enrichment": float(self.enrichment[i]),
                    "ci_low": float(self.ci[i, 0]),
                    "ci_high": float(self.ci[i, 1]),
                }
            )
        return rows

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-point arrays)."""
        return {
            "statistic": "ratio of means of |attribution| share over "
            + ("area share" if self.meta.get("reference", "area") == "area" else "share under the mean map profile")
            + ", per class",
            "level": self.level,
            "n_boot": self.n_boot,
            "n_points": self.n_points,
            "n_empty_maps": int((~self.valid).sum()),
            "classes": self.table(),
            "reference": self.meta.get("reference", "area"),
        }

    def split_by(self, values: np.ndarray, *, quantiles: tuple[float, float] = (1 / 3, 2 / 3)) -> "EnrichmentSplit":
        """Enrichment for points with low vs high `values` (e.g. coercive voltage).

        Args:
            values: (M,) property per point, same order as the maps.
            quantiles: points at or below the first quantile are "low", at or above the
                second "high"; the middle is left out so the groups differ clearly.

        Returns:
            An `EnrichmentSplit` with both groups and the bootstrap interval of the
            difference high - low (groups resampled independently).
        """
        vals = np.asarray(values, dtype=float).reshape(-1)
        if vals.shape[0] != self.share.shape[0]:
            raise ValueError(f"values: expected one value per point, ({self.share.shape[0]},), got {vals.shape}")
        q_lo, q_hi = (float(q) for q in quantiles)
        if not 0.0 < q_lo <= q_hi < 1.0:
            raise ValueError(f"quantiles: expected 0 < low <= high < 1, got {quantiles}")
        ok = self.valid & np.isfinite(vals)
        if ok.sum() < 4:
            raise ValueError(f"values: need >= 4 valid points to split, got {int(ok.sum())}")
        t_lo, t_hi = np.quantile(vals[ok], [q_lo, q_hi])
        groups = {"low": ok & (vals <= t_lo), "high": ok & (vals >= t_hi)}
        res = {}
        for g, sel in groups.items():
            if sel.sum() < 2:
                raise ValueError(f"values: the {g!r} group has {int(sel.sum())} point(s); need >= 2")
            res[g] = _result(
                self.names, self.share[sel], self.area[sel], self.valid[sel],
                n_boot=self.n_boot, seed=self.seed, level=self.level, meta=self.meta,
            )
        # Difference high - low: independent bootstrap of each group, same seeds per draw.
        rng = np.random.default_rng(self.seed + 1)
        sh, ar = {}, {}
        for g, sel in groups.items():
            sh[g], ar[g] = self.share[sel], self.area[sel]
        diffs = np.empty((self.n_boot, len(self.names)))
        for b in range(self.n_boot):
            e = {}
            for g in groups:
                idx = rng.integers(0, len(sh[g]), len(sh[g]))
                e[g] = _ratio_of_means(sh[g][idx], ar[g][idx])
            diffs[b] = e["high"] - e["low"]
        diff_ci = _interval(diffs, self.level)
        return EnrichmentSplit(
            low=res["low"],
            high=res["high"],
            thresholds=(float(t_lo), float(t_hi)),
            diff=res["high"].enrichment - res["low"].enrichment,
            diff_ci=diff_ci,
        )


@dataclass(frozen=True, eq=False)
class EnrichmentSplit:
    """Enrichment in low- vs high-property points, and the difference high - low.

    Attributes:
        low, high: `EnrichmentResult` of each group.
        thresholds: (low cut, high cut) property values.
        diff: (L,) enrichment high - low.
        diff_ci: (L, 2) bootstrap interval of `diff`; excluding 0 = a real difference.
    """

    low: EnrichmentResult
    high: EnrichmentResult
    thresholds: tuple[float, float]
    diff: np.ndarray
    diff_ci: np.ndarray

    def to_dict(self) -> dict:
        return {
            "thresholds": list(self.thresholds),
            "low": self.low.to_dict(),
            "high": self.high.to_dict(),
            "diff_high_minus_low": [
                {"class": n, "diff": float(d), "ci_low": float(lo), "ci_high": float(hi)}
                for n, d, (lo, hi) in zip(self.low.names, self.diff, self.diff_ci)
            ],
        }


def _result(names, share, area, valid, *, n_boot, seed, level, meta=None) -> EnrichmentResult:
    v = valid
    with np.errstate(invalid="ignore", divide="ignore"):
        per_point = np.where((area > 0) & v[:, None], share / np.where(area > 0, area, 1.0), np.nan)
    if v.sum() == 0:
        enr = np.full(len(names), np.nan)
        ci = np.full((len(names), 2), np.nan)
    else:
        enr = _ratio_of_means(share[v], area[v])
        ci = _bootstrap(share[v], area[v], n_boot=n_boot, seed=seed, level=level)
    return EnrichmentResult(
        names=tuple(names), enrichment=enr, ci=ci, per_point=per_point, share=share, area=area,
        valid=v, n_boot=n_boot, seed=seed, level=level, meta=dict(meta or {}),
    )


CHUNK = 1024  # explained points handled at a time by `domain_enrichment`


def domain_enrichment(
    maps: np.ndarray,
    label_patches: np.ndarray,
    *,
    names,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    reference: str = "area",
) -> EnrichmentResult:
    """Per-class enrichment of attribution over area, globally (with CI) and per point.

    Args:
        maps: (M, w, w) attribution maps, pixel-aligned with the patches (any sign; the
            absolute value is used). NaN is rejected. An array or anything sliced like one
            along M (an h5py dataset): it is read `CHUNK` points at a time.
        label_patches: (M, w, w) int class index per pixel, into `names`.
        names: (L,) class names.
        n_boot: bootstrap resamples over points.
        seed: bootstrap seed (same seed, same interval).
        level: interval coverage, e.g. 0.95.
        reference: ``"area"`` (class area share) or ``"profile"`` (share under the average
            map shape: controls for a method's spatial bias, see module doc).

    Returns:
        An `EnrichmentResult`.

    Raises:
        ValueError: shapes differ, labels fall outside ``0..L-1``, maps hold NaN/inf, or
            the settings are out of range.
    """
    y_all = label_patches if hasattr(label_patches, "shape") else np.asarray(label_patches)
    maps = maps if hasattr(maps, "shape") else np.asarray(maps)
    names = tuple(str(n) for n in names)
    shape = tuple(getattr(maps, "shape", np.shape(maps)))
    if len(shape) != 3:
        raise ValueError(f"maps: expected (M, w, w) attribution maps, got shape {shape}")
    if tuple(np.shape(y_all)) != shape:
        raise ValueError(f"label_patches: expected the maps' shape {shape}, got {tuple(np.shape(y_all))}")
    if not np.issubdtype(np.asarray(y_all[:0]).dtype, np.integer):
        raise TypeError(f"label_patches: expected an integer array, got dtype {np.asarray(y_all[:0]).dtype}")
    if len(names) < 1:
        raise ValueError("names: expected at least one class name")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ValueError(f"n_boot: expected an integer >= 10, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected 0 < level < 1, got {level!r}")
    if reference not in ("area", "profile"):
        raise ValueError(f"reference: expected 'area' or 'profile', got {reference!r}")

    m, L = shape[0], len(names)
    total, mass, area = np.empty(m), np.empty((m, L)), np.empty((m, L))
    prof_sum = np.zeros(shape[1] * shape[2])
    bad = 0
    # CHUNK points at a time: `maps` may be an h5py dataset of any length; memory follows the chunk
    for i in range(0, m, CHUNK):
        a = np.asarray(maps[i:i + CHUNK], dtype=np.float64)
        lab = np.asarray(y_all[i:i + CHUNK]).reshape(len(a), -1)  # (b, P)
        if lab.size and (lab.min() < 0 or lab.max() >= L):
            raise ValueError(f"label_patches: values must index names (0..{L - 1}), got {lab.min()}..{lab.max()}")
        bad += int((~np.isfinite(a)).sum())
        w = np.abs(a).reshape(len(a), -1)  # (b, P)
        onehot = lab[:, :, None] == np.arange(L)[None, None, :]  # (b, P, L)
        total[i:i + len(a)] = w.sum(1)
        mass[i:i + len(a)] = np.einsum("mp,mpl->ml", w, onehot)
        area[i:i + len(a)] = onehot.mean(1)
        ok = total[i:i + len(a)] > 0
        prof_sum += (w[ok] / total[i:i + len(a)][ok, None]).sum(0)
    if bad:
        raise ValueError(f"maps: {bad} non-finite value(s); explanations must be finite")
    valid = total > 0
    share = mass / np.where(valid, total, 1.0)[:, None]  # (M, L)
    if reference == "profile" and valid.any():
        prof = prof_sum / valid.sum()  # (P,) average map shape, sums to 1
        for i in range(0, m, CHUNK):
            lab = np.asarray(y_all[i:i + CHUNK]).reshape(-1, len(prof))
            area[i:i + len(lab)] = np.einsum("p,mpl->ml", prof, lab[:, :, None] == np.arange(L)[None, None, :])
    return _result(names, share, area, valid, n_boot=int(n_boot), seed=seed, level=level,
                   meta={"reference": reference})
