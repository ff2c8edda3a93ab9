"""Several samples (different images, films, instruments) in one run.

The run's stages take one `Sample`, so several samples are laid out side by side as one
*mosaic* sample: each sample's image (its channels picked by name, in the first sample's order
unless ``channels`` says otherwise) is standardised per channel with its own statistics (films
and instruments differ in scale and offset), padded by ``margin`` pixels with the run's padding
mode, and placed in its own cell of a grid of cells; its points move with it. A patch of a point
is then exactly the patch that sample's own padded image would give (the margin is at least
half a window), so no patch ever mixes two samples. Cells are filled with 0 (the standardised
mean) beyond a smaller sample's padded image.

``meta["samples"]`` records the names, the cell of each sample and ``sample_of_point`` (N,),
which the split (`structattn.train.split.sample_split`) and the per-sample metrics use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .sample import Sample

__all__ = ["combine_samples", "multi_spec", "sample_names", "MIN_MARGIN"]

MIN_MARGIN = 48  # half of the largest automatic window (96 px)
PAD_FOR = {"reflect": "reflect", "edge": "edge", "constant": "constant", "exclude": "edge"}


def sample_names(sources: list[str]) -> list[str]:
    """Short unique names for the samples: file stems (or the source text), de-duplicated."""
    names = []
    for s in sources:
        text = str(s)
        stem = Path(text).stem if not text.startswith(("synthetic", "semisynthetic")) else text
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.append(name)
    return names


def multi_spec(sources: list[str], *, channels=None, margin: int = MIN_MARGIN, pad_mode: str = "reflect") -> str:
    """The canonical source string of a multi-sample run (what `load_sample` rebuilds it from)."""
    spec = {"samples": [str(s) for s in sources], "margin": int(margin), "pad": PAD_FOR.get(pad_mode, "reflect")}
    if channels:
        spec["channels"] = [c.strip() for c in channels.split(",")] if isinstance(channels, str) else list(channels)
    return json.dumps(spec)


def _pick_channels(sample: Sample, name: str, channels: list[str]) -> np.ndarray:
    missing = [c for c in channels if c not in sample.channels]
    if missing:
        raise ValueError(f"channels: sample {name!r} has no channel {missing[0]!r} (its channels: "
                         f"{', '.join(sample.channels)}); channels are matched by name across samples")
    return np.stack([sample.image[sample.channels.index(c)] for c in channels])


def combine_samples(
    samples: list[Sample],
    *,
    names: list[str],
    channels: list[str] | None = None,
    margin: int = MIN_MARGIN,
    pad: str = "reflect",
) -> Sample:
    """One mosaic `Sample` holding every sample (see the module doc).

    Args:
        samples: two or more samples.
        names: one name per sample (metrics are reported under these).
        channels: channel names to use, in this order; None: the first sample's channels.
        margin: pixels of padding around each sample's image (>= half the patch window).
        pad: ``np.pad`` mode of that padding: ``reflect``, ``edge`` or ``constant`` (zeros).

    Raises:
        ValueError: fewer than two samples, a channel missing from a sample, samples with
            different target names or loop lengths (messages name the sample and the field).
    """
    if len(samples) < 2:
        raise ValueError(f"samples: a multi-sample run needs at least 2 samples, got {len(samples)}")
    if len(names) != len(samples) or len(set(names)) != len(names):
        raise ValueError(f"names: expected {len(samples)} unique names, got {names}")
    if pad not in ("reflect", "edge", "constant"):
        raise ValueError(f"pad: expected reflect, edge or constant, got {pad!r}")
    channels = list(channels or samples[0].channels)
    first = samples[0]
    use_targets = all(s.targets is not None for s in samples)
    use_loops = all(s.loops is not None for s in samples)
    if not use_targets and not use_loops:
        raise ValueError("samples: every sample needs given targets, or every sample needs loops; "
                         f"targets in {[n for n, s in zip(names, samples) if s.targets is not None]}, "
                         f"loops in {[n for n, s in zip(names, samples) if s.loops is not None]}")
    for s, n in zip(samples[1:], names[1:]):
        if use_targets and s.target_names != first.target_names:
            raise ValueError(f"target_names: sample {n!r} has targets {list(s.target_names)}, sample "
                             f"{names[0]!r} has {list(first.target_names)}; they must match")
        if use_loops and s.loops.shape[1] != first.loops.shape[1]:
            raise ValueError(f"loops: sample {n!r} has {s.loops.shape[1]} loop steps, sample {names[0]!r} has "
                             f"{first.loops.shape[1]}; loops of one run share one voltage waveform")
        if use_loops and not np.allclose(s.voltage, first.voltage, rtol=1e-3, atol=1e-6):
            raise ValueError(f"voltage: sample {n!r} has a different bias waveform from sample {names[0]!r}")

    cells = []
    for s, n in zip(samples, names):
        img = _pick_channels(s, n, channels).astype(np.float64)
        mean = img.mean(axis=(1, 2), keepdims=True)
        std = np.maximum(img.std(axis=(1, 2), keepdims=True), 1e-12)
        z = (img - mean) / std
        cells.append(np.pad(z, ((0, 0), (margin, margin), (margin, margin)), mode=pad))
    n_grid = int(np.ceil(np.sqrt(len(samples))))  # cells in a near-square grid, row by row
    cell_h = max(c.shape[1] for c in cells)
    cell_w = max(c.shape[2] for c in cells)
    n_rows = int(np.ceil(len(samples) / n_grid))
    mosaic = np.zeros((len(channels), n_rows * cell_h, n_grid * cell_w), np.float32)
    positions, sample_of_point, boxes = [], [], []
    for k, (s, cell) in enumerate(zip(samples, cells)):
        r0, c0 = (k // n_grid) * cell_h, (k % n_grid) * cell_w
        mosaic[:, r0:r0 + cell.shape[1], c0:c0 + cell.shape[2]] = cell
        h, w = s.shape
        boxes.append([r0 + margin, c0 + margin, h, w])  # the sample's own image inside the mosaic
        positions.append(s.positions + np.array([r0 + margin, c0 + margin], float))
        sample_of_point.append(np.full(s.n_points, k))
    sizes = {s.pixel_size for s in samples}
    meta = {
        "source": " | ".join(str(s.meta.get("spec", s.meta.get("source", n))) for s, n in zip(samples, names)),
        "reader": "structattn.data.multi.combine_samples",
        "samples": {"names": list(names), "boxes": boxes, "margin": int(margin), "pad": pad,
                    "sample_of_point": np.concatenate(sample_of_point).tolist(),
                    "channels": channels, "standardised": "per sample and channel (own mean and std)",
                    "sources": [str(s.meta.get("spec", s.meta.get("source", ""))) for s in samples],
                    "registrations": [s.meta.get("registration") for s in samples]},
        "target_units": dict(first.meta.get("target_units", {})),
    }
    return Sample(
        image=mosaic,
        channels=tuple(channels),
        positions=np.concatenate(positions),
        loops=np.concatenate([s.loops for s in samples]) if use_loops else None,
        voltage=first.voltage if use_loops else None,
        targets=np.concatenate([s.targets for s in samples]) if use_targets else None,
        target_names=first.target_names if use_targets else (),
        pixel_size=sizes.pop() if len(sizes) == 1 else None,
        meta=meta,
    )


def sample_from_multi_spec(spec: dict, *, load, structure_from: str = "response@0V") -> Sample:
    """Rebuild the mosaic of a `multi_spec` dict; `load` reads one source (`load_sample`)."""
    sources = spec.get("samples")
    if not isinstance(sources, list) or len(sources) < 2:
        raise ValueError(f"source: a multi-sample source needs a list of at least 2 samples, got {sources!r}")
    samples = []
    for src in sources:
        samples.append(load(src, structure_from=structure_from))
    mosaic = combine_samples(samples, names=sample_names(sources), channels=spec.get("channels"),
                             margin=int(spec.get("margin", MIN_MARGIN)), pad=spec.get("pad", "reflect"))
    mosaic.meta["spec"] = json.dumps(spec)
    return mosaic
