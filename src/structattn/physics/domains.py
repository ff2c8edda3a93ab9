"""Attribution by domain class for a whole set of explanations (every method x target).

This is what ``structattn domains RUN`` computes: pick a segmentation (the bundle's labels
or the unsupervised one), cut label patches aligned with the explained points, and run
`domain_enrichment` (+ the low/high split by each target) on every ``/<method>/<target>``
map stack. Pure numpy/h5py: no plotting, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .enrichment import EnrichmentResult, EnrichmentSplit, domain_enrichment
from .segment import Segmentation, label_patches, segment_domains

SOURCES = ("auto", "labels", "segment")


def segmentation_for(sample, *, source: str = "auto", seed: int = 0, amplitude: str = "amplitude",
                     phase: str = "phase") -> Segmentation | None:
    """The segmentation to use for a `Sample`, or None when none is available.

    Args:
        sample: a `structattn.data.sample.Sample`.
        source: ``"labels"`` (the sample's own ``labels``/``label_names``), ``"segment"``
            (unsupervised, needs `amplitude` and `phase` channels) or ``"auto"`` (labels if
            given, else segment if the channels exist, else None).
        seed: segmentation seed.
        amplitude, phase: channel names for the unsupervised segmentation.
    """
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
    has_labels = sample.labels is not None
    has_channels = amplitude in sample.channels and phase in sample.channels
    if source == "labels" or (source == "auto" and has_labels):
        if not has_labels:
            raise ValueError("source: 'labels' asked for, but the sample carries no `labels`")
        return Segmentation.from_labels(labels=sample.labels, names=sample.label_names)
    if source == "segment" or (source == "auto" and has_channels):
        return segment_domains(sample.image, sample.channels, amplitude=amplitude, phase=phase, seed=seed)
    return None


@dataclass(frozen=True, eq=False)
class DomainAnalysis:
    """Enrichment per (method, target), with the segmentation it used.

    Attributes:
        segmentation: the `Segmentation` (labels over the whole image).
        positions: (M, 2) (row, col) of the explained points.
        point_index: (M,) indices of the explained points into the sample's points.
        window: patch side in pixels.
        results: ``{method: {target: EnrichmentResult}}``.
        splits: ``{method: {target: EnrichmentSplit}}`` (low vs high target value), where
            values were given.

    Example:
        >>> from structattn.data.synthetic import make_synthetic
        >>> s = make_synthetic(seed=0)
        >>> seg = segmentation_for(s)                      # the generator's labels
        >>> lp = label_patches(seg.labels, s.positions, window=16)
        >>> maps = {"oracle": {"V+": (lp == 2) + 0.1}}
        >>> da = analyze_domains(segmentation=seg, positions=s.positions, window=16, maps=maps, n_boot=100)
        >>> da.results["oracle"]["V+"].enriched()["a"]
        True
    """

    segmentation: Segmentation
    positions: np.ndarray
    point_index: np.ndarray
    window: int
    results: dict
    splits: dict = field(default_factory=dict)
    pad_mode: str = "reflect"

    def to_dict(self) -> dict:
        """JSON-ready summary for ``metrics.json["domains"]``."""
        seg = self.segmentation
        out = {
            "segmentation": {
                "method": seg.method,
                "names": list(seg.names),
                "fractions": seg.fractions,
                "confidence": {k: (None if not np.isfinite(v) else float(v)) for k, v in seg.confidence.items()},
                "notes": dict(seg.notes),
            },
            "window": int(self.window),
            "pad_mode": self.pad_mode,
            "n_points": int(len(self.point_index)),
            "enrichment": {},
        }
        for method, per_target in self.results.items():
            out["enrichment"][method] = {}
            for target, res in per_target.items():
                entry = _nan_to_none(res.to_dict())
                split = self.splits.get(method, {}).get(target)
                if split is not None:
                    entry["split"] = _nan_to_none(split.to_dict())
                out["enrichment"][method][target] = entry
        return out

    def write_h5(self, path) -> None:
        """Write labels, names, points and per-point / global enrichment to an HDF5 file.

        Layout: ``/labels`` (H, W), ``/names`` (L,), ``/point_index`` (M,), ``/positions``
        (M, 2), and per ``/<method>/<target>/``: ``per_point`` (M, L), ``enrichment`` (L,),
        ``ci`` (L, 2), ``share`` (M, L), ``area`` (M, L).
        """
        import h5py

        with h5py.File(path, "w") as f:
            f["labels"] = self.segmentation.labels.astype(np.int16)
            f["names"] = np.array(self.segmentation.names, dtype=h5py.string_dtype())
            f["point_index"] = np.asarray(self.point_index, dtype=np.int64)
            f["positions"] = np.asarray(self.positions, dtype=np.float64)
            f.attrs["window"] = int(self.window)
            f.attrs["segmentation_method"] = self.segmentation.method
            for method, per_target in self.results.items():
                for target, res in per_target.items():
                    g = f.create_group(f"{method}/{target}")
                    g["per_point"] = res.per_point.astype(np.float32)
                    g["enrichment"] = res.enrichment
                    g["ci"] = res.ci
                    g["share"] = res.share.astype(np.float32)
                    g["area"] = res.area.astype(np.float32)


def _nan_to_none(obj):
    """NaN -> None recursively, so json.dump writes valid JSON (null)."""
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def analyze_domains(
    *,
    segmentation: Segmentation,
    positions: np.ndarray,
    window: int,
    maps: dict,
    values: dict | None = None,
    point_index: np.ndarray | None = None,
    pad_mode: str = "reflect",
    n_boot: int = 1000,
    seed: int = 0,
    quantiles: tuple[float, float] = (1 / 3, 2 / 3),
    reference: str = "area",
) -> DomainAnalysis:
    """Enrichment of every ``maps[method][target]`` stack over the segmentation's classes.

    Args:
        segmentation: labels over the whole image.
        positions: (M, 2) (row, col) of the explained points, in the maps' order.
        window: patch side (the maps are (M, window, window)).
        maps: ``{method: {target: (M, window, window) array}}``.
        values: optional ``{target: (M,) property values}`` for the low/high split.
        point_index: (M,) indices into the sample's points (stored for reference).
        pad_mode: the padding the image patches used (label patches must match).
        n_boot, seed, quantiles: bootstrap and split settings.
        reference: ``"area"`` or ``"profile"`` (see `domain_enrichment`).

    Returns:
        A `DomainAnalysis`.
    """
    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions: expected (M, 2) (row, col), got shape {pos.shape}")
    lp = label_patches(segmentation.labels, pos, window=window, pad_mode=pad_mode)  # (M, w, w)
    results: dict[str, dict[str, EnrichmentResult]] = {}
    splits: dict[str, dict[str, EnrichmentSplit]] = {}
    for method, per_target in maps.items():
        for target, stack in per_target.items():
            arr = stack if hasattr(stack, "shape") else np.asarray(stack)  # an h5py dataset stays on disk
            if tuple(arr.shape) != lp.shape:
                raise ValueError(
                    f"maps[{method!r}][{target!r}]: expected {lp.shape} (points x window x window), got {arr.shape}"
                )
            res = domain_enrichment(
                arr, lp, names=segmentation.names, n_boot=n_boot, seed=seed, reference=reference
            )
            results.setdefault(method, {})[target] = res
            if values is not None and target in values:
                v = np.asarray(values[target], dtype=float)
                if np.isfinite(v).sum() >= 6:
                    splits.setdefault(method, {})[target] = res.split_by(v, quantiles=quantiles)
    idx = np.arange(len(pos)) if point_index is None else np.asarray(point_index)
    return DomainAnalysis(
        segmentation=segmentation, positions=pos, point_index=idx, window=int(window),
        results=results, splits=splits, pad_mode=pad_mode,
    )


def read_explanations(path) -> tuple[np.ndarray, dict]:
    """Read a run's ``explanations.h5`` (DESIGN.md contract).

    Returns:
        ``(point_index (M,), {method: {target: (M, w, w) float32}})``.

    Raises:
        ValueError: the file lacks ``/point_index`` or holds no (M, w, w) map stacks.
    """
    import h5py

    maps: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        if "point_index" not in f:
            raise ValueError(f"path: {str(path)!r} has no /point_index (not an explanations.h5?)")
        idx = np.asarray(f["point_index"][()], dtype=np.int64)
        for method, grp in f.items():
            if not isinstance(grp, h5py.Group):
                continue
            for target, ds in grp.items():
                if isinstance(ds, h5py.Dataset) and ds.ndim == 3 and ds.shape[0] == len(idx):
                    maps.setdefault(method, {})[target] = np.asarray(ds[()], dtype=np.float32)
    if not maps:
        raise ValueError(f"path: {str(path)!r} holds no /<method>/<target> (M, w, w) maps for {len(idx)} points")
    return idx, maps


def domains_from_explanations(
    path,
    *,
    sample,
    segmentation: Segmentation | None = None,
    source: str = "auto",
    pad_mode: str = "reflect",
    n_boot: int = 1000,
    seed: int = 0,
    reference: str = "area",
) -> DomainAnalysis | None:
    """`analyze_domains` on a run's ``explanations.h5`` for the `Sample` it was made from.

    The window is read from the maps; the low/high split uses ``sample.targets`` for the
    targets the maps are named after. Returns None when no segmentation is available
    (no ``labels`` and no amplitude/phase channels).
    """
    idx, maps = read_explanations(path)
    if idx.min() < 0 or idx.max() >= sample.n_points:
        raise ValueError(f"point_index: values must lie in 0..{sample.n_points - 1}, got {idx.min()}..{idx.max()}")
    seg = segmentation if segmentation is not None else segmentation_for(sample, source=source, seed=seed)
    if seg is None:
        return None
    window = next(iter(next(iter(maps.values())).values())).shape[-1]
    values = None
    if sample.targets is not None:
        values = {t: sample.targets[idx, k] for k, t in enumerate(sample.target_names)}
    return analyze_domains(
        segmentation=seg, positions=sample.positions[idx], window=window, maps=maps, values=values,
        point_index=idx, pad_mode=pad_mode, n_boot=n_boot, seed=seed, reference=reference,
    )


def write_run_domains(run_dir, analysis: DomainAnalysis, *, h5_name: str = "domains.h5") -> dict:
    """Store an analysis in a run folder: ``domains.h5`` and ``metrics.json["domains"]``.

    The rest of ``metrics.json`` is kept as it is (read, one key replaced, written back).
    Returns the summary dict that was written under ``"domains"``.
    """
    import json
    from pathlib import Path

    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"run_dir: {str(run)!r} is not a directory")
    analysis.write_h5(run / h5_name)
    summary = analysis.to_dict()
    summary["file"] = h5_name
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics["domains"] = summary
    tmp = metrics_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, allow_nan=False))
    tmp.replace(metrics_path)  # atomic: a crash never leaves half a metrics.json
    return summary


def run_domains(
    run_dir,
    *,
    sample,
    point_index: np.ndarray,
    maps: dict,
    window: int,
    pad_mode: str,
    values: dict | None = None,
    source: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    reference: str = "area",
) -> DomainAnalysis | None:
    """The ``domains`` step of a run: segment (or take labels), analyse, write into `run_dir`.

    `pad_mode` is the run's (``"exclude"`` runs extract with ``"edge"``). `values`
    (``{target: (M,) values at the explained points}``, e.g. the run's measured targets,
    which may be loop descriptors or latents) drive the low/high split; without them
    ``sample.targets`` is used where the names match. Returns None (and writes nothing)
    when no segmentation is available.
    """
    seg = segmentation_for(sample, source=source, seed=seed)
    if seg is None:
        return None
    idx = np.asarray(point_index, dtype=np.int64)
    if values is None and sample.targets is not None:
        values = {t: sample.targets[idx, k] for k, t in enumerate(sample.target_names)}
    analysis = analyze_domains(
        segmentation=seg, positions=sample.positions[idx], window=window, maps=maps, values=values,
        point_index=idx, pad_mode="edge" if pad_mode == "exclude" else pad_mode, n_boot=n_boot, seed=seed,
        reference=reference,
    )
    write_run_domains(run_dir, analysis)
    return analysis
