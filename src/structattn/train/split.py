"""Spatial block split: train, validation and test points come from different regions.

Why not a random split of points: neighbouring spectroscopy points are a few pixels apart
while each patch is tens of pixels wide, so a random test point's patch is almost the same
pixels as its training neighbours' patches. A model can then score well by memorising
local texture, and the test R² says nothing about new regions of the sample. We cut the
image into ``blocks x blocks`` rectangles, deal whole blocks to train/val/test (seeded),
and drop training points whose patch reaches into a val/test block (``buffer``), so no
test pixel is ever seen in training.

When the points cover only part of the image (a BEPS grid inside a larger PFM scan), the
blocks tile the points' bounding box instead of the whole image (`point_bounds`), so every
block holds points. Several samples in one run are split by whole sample or by blocks within
each sample (`sample_split`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpatialSplit:
    """Point indices of each part plus the block layout that produced them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    block_of_point: np.ndarray  # (N,) block id of each point
    part_of_block: np.ndarray  # (blocks*blocks,) 0 train, 1 val, 2 test
    blocks: int
    buffer: int
    dropped: np.ndarray  # training-block points dropped because their patch reaches val/test

    def describe(self) -> str:
        return (
            f"spatial blocks {self.blocks}x{self.blocks} (train/val/test blocks "
            f"{int((self.part_of_block == 0).sum())}/{int((self.part_of_block == 1).sum())}/"
            f"{int((self.part_of_block == 2).sum())}), buffer {self.buffer} px, points "
            f"{len(self.train)}/{len(self.val)}/{len(self.test)}, {len(self.dropped)} dropped at borders"
        )

    def labels(self, n: int) -> np.ndarray:
        """(n,) int: 0 train, 1 val, 2 test, -1 dropped."""
        out = np.full(n, -1)
        out[self.train], out[self.val], out[self.test] = 0, 1, 2
        return out


def spatial_block_split(
    positions: np.ndarray,
    *,
    shape: tuple[int, int],
    blocks: int = 4,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    buffer: int = 0,
    seed: int = 0,
    bounds: tuple[float, float, float, float] | None = None,
) -> SpatialSplit:
    """Deal ``blocks x blocks`` image blocks to train/val/test.

    Args:
        positions: (N, 2) (row, col) of the points.
        shape: (H, W) of the image.
        blocks: blocks per side.
        val_fraction, test_fraction: share of blocks for validation and test (at least one
            block each).
        buffer: training points closer than this many pixels (Chebyshev) to a val/test
            block are dropped; use half the patch window for no pixel overlap.
        seed: seeds the block assignment.
        bounds: (row0, row1, col0, col1) of the area the blocks tile; None: the whole image
            (see `point_bounds`).
    """
    pos = np.asarray(positions, dtype=float)
    if blocks < 2:
        raise ValueError(f"blocks: expected >= 2 blocks per side, got {blocks}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction/test_fraction: expected each in (0, 1) with sum < 1, got {val_fraction}, {test_fraction}"
        )
    h, w = shape
    r0, r1, c0, c1 = (0.0, float(h), 0.0, float(w)) if bounds is None else bounds
    edges_r = np.linspace(r0, r1, blocks + 1)
    edges_c = np.linspace(c0, c1, blocks + 1)
    br = np.clip(np.searchsorted(edges_r, pos[:, 0], side="right") - 1, 0, blocks - 1)
    bc = np.clip(np.searchsorted(edges_c, pos[:, 1], side="right") - 1, 0, blocks - 1)
    block = br * blocks + bc

    # Only blocks that contain points are dealt, so every part gets points.
    occupied = np.unique(block)
    if len(occupied) < 3:
        raise ValueError(f"positions: points fall in only {len(occupied)} of {blocks}x{blocks} blocks; need >= 3")
    rng = np.random.default_rng(seed)
    order = rng.permutation(occupied)
    n_test = max(1, int(round(test_fraction * len(occupied))))
    n_val = max(1, int(round(val_fraction * len(occupied))))
    part = np.zeros(blocks * blocks, dtype=int)
    part[order[:n_test]] = 2
    part[order[n_test : n_test + n_val]] = 1
    point_part = part[block]

    dropped = np.zeros(len(pos), bool)
    if buffer > 0:
        held = np.flatnonzero(part > 0)
        for b in held:
            r0, r1 = edges_r[b // blocks] - buffer, edges_r[b // blocks + 1] + buffer
            c0, c1 = edges_c[b % blocks] - buffer, edges_c[b % blocks + 1] + buffer
            near = (pos[:, 0] >= r0) & (pos[:, 0] < r1) & (pos[:, 1] >= c0) & (pos[:, 1] < c1)
            dropped |= near & (point_part == 0)
    train = np.flatnonzero((point_part == 0) & ~dropped)
    if len(train) == 0:
        raise ValueError(f"--buffer: {buffer} px around held-out blocks leaves no training points; use a smaller "
                         "--buffer or more --blocks")
    return SpatialSplit(
        train=train,
        val=np.flatnonzero(point_part == 1),
        test=np.flatnonzero(point_part == 2),
        block_of_point=block,
        part_of_block=part,
        blocks=blocks,
        buffer=int(buffer),
        dropped=np.flatnonzero(dropped),
    )


def point_bounds(positions: np.ndarray, shape: tuple[int, int], *, min_share: float = 0.5):
    """(row0, row1, col0, col1) for the blocks: the image, or the points' bounding box along an
    axis where the points span less than `min_share` of the image (None when both axes use the image).

    A grid of points over the whole image keeps the image's blocks (so splits of such data do not
    change); a small grid inside a large scan gets blocks that all hold points.
    """
    pos = np.asarray(positions, dtype=float)
    h, w = shape
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    out = [0.0, float(h), 0.0, float(w)]
    changed = False
    for k, side in enumerate((h, w)):
        if hi[k] - lo[k] < min_share * side:
            out[2 * k], out[2 * k + 1] = float(lo[k]) - 0.5, float(hi[k]) + 0.5
            changed = True
    return tuple(out) if changed else None


SAMPLE_SPLITS = ("blocks", "sample")


@dataclass(frozen=True)
class SampleSplit:
    """Train/val/test over several samples: whole samples held out, or blocks within each sample.

    Indices (``train``, ``val``, ``test``, ``dropped``) are into the points the split was given,
    like `SpatialSplit`; ``sample_of_point`` (N,) says which sample each point belongs to.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    sample_of_point: np.ndarray
    names: tuple[str, ...]
    mode: str  # "sample" or "blocks"
    parts: dict  # sample name -> "train" / "validation" / "test" / "train+validation" / "blocks"
    blocks: int
    buffer: int
    dropped: np.ndarray

    def describe(self) -> str:
        counts = f"points {len(self.train)}/{len(self.val)}/{len(self.test)}"
        if self.mode == "sample":
            by = {p: [n for n, q in self.parts.items() if q == p] for p in dict.fromkeys(self.parts.values())}
            held = "; ".join(p + ": " + ", ".join(n) for p, n in by.items())
            return f"whole samples held out ({held}), {counts}, {len(self.dropped)} dropped at borders"
        return (f"spatial blocks {self.blocks}x{self.blocks} within each of {len(self.names)} samples, buffer "
                f"{self.buffer} px, {counts}, {len(self.dropped)} dropped at borders")

    def labels(self, n: int) -> np.ndarray:
        out = np.full(n, -1)
        out[self.train], out[self.val], out[self.test] = 0, 1, 2
        return out

    def info(self) -> dict:
        return {"mode": self.mode, "samples": list(self.names), "parts": dict(self.parts)}

    @property
    def why(self) -> str:
        if self.mode == "sample":
            return "whole samples are held out: the test R² says how the model does on a sample it never saw"
        return "whole spatial blocks of every sample are held out: neighbouring patches overlap, a random split leaks"


def sample_split(
    positions: np.ndarray,
    sample_of_point: np.ndarray,
    *,
    names: tuple[str, ...] | list[str],
    shapes: list[tuple[int, int]],
    origins: np.ndarray,
    mode: str = "blocks",
    blocks: int = 4,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    buffer: int = 0,
    seed: int = 0,
) -> SampleSplit:
    """Split the points of several samples.

    ``mode="blocks"``: each sample gets its own `spatial_block_split` (same blocks, fractions,
    buffer and seed), so every sample contributes train, validation and test points.
    ``mode="sample"``: whole samples are dealt (seeded): with 3 or more samples at least one
    whole sample for test and one for validation, the rest for training; with 2 samples one is
    the test sample and validation comes from held-out blocks of the other (buffer applies).

    Args:
        positions: (N, 2) (row, col) of the points, in the mosaic's pixels.
        sample_of_point: (N,) sample index of each point.
        names: sample names.
        shapes: (H, W) of each sample's own image.
        origins: (S, 2) (row, col) of each sample's image inside the mosaic.
    """
    if mode not in SAMPLE_SPLITS:
        raise ValueError(f"--split: expected one of {SAMPLE_SPLITS}, got {mode!r}")
    pos = np.asarray(positions, dtype=float)
    sop = np.asarray(sample_of_point, dtype=int)
    n_s = len(names)
    present = np.unique(sop)
    if len(present) < 2:
        raise ValueError(f"--split: the points come from {len(present)} sample(s); a multi-sample split needs 2+")

    def within(k: int, *, vf: float, tf: float) -> tuple[np.ndarray, SpatialSplit]:
        idx = np.flatnonzero(sop == k)
        local = pos[idx] - np.asarray(origins[k], float)
        try:
            return idx, spatial_block_split(local, shape=shapes[k], blocks=blocks, val_fraction=vf,
                                            test_fraction=tf, buffer=buffer, seed=seed,
                                            bounds=point_bounds(local, shapes[k]))
        except ValueError as exc:
            raise ValueError(f"--split: sample {names[k]!r}: {exc}") from None

    parts: dict = {}
    tr, va, te, dr = [], [], [], []
    if mode == "blocks":
        for k in present:
            idx, sp = within(int(k), vf=val_fraction, tf=test_fraction)
            tr.append(idx[sp.train]), va.append(idx[sp.val]), te.append(idx[sp.test]), dr.append(idx[sp.dropped])
            parts[names[k]] = "blocks"
    else:
        order = np.random.default_rng(seed).permutation(present)
        if len(present) >= 3:
            n_test = max(1, int(round(test_fraction * len(present))))
            n_val = max(1, int(round(val_fraction * len(present))))
            n_test = min(n_test, len(present) - 2)
            n_val = min(n_val, len(present) - 1 - n_test)
            for j, k in enumerate(order):
                part = "test" if j < n_test else ("validation" if j < n_test + n_val else "train")
                parts[names[k]] = part
                idx = np.flatnonzero(sop == k)
                {"test": te, "validation": va, "train": tr}[part].append(idx)
        else:
            test_k, train_k = int(order[0]), int(order[1])
            parts[names[test_k]] = "test"
            parts[names[train_k]] = "train+validation"
            te.append(np.flatnonzero(sop == test_k))
            idx, sp = within(train_k, vf=val_fraction, tf=test_fraction)
            tr.append(idx[sp.train]), va.append(idx[np.concatenate([sp.val, sp.test])]), dr.append(idx[sp.dropped])
    cat = lambda xs: np.sort(np.concatenate(xs)).astype(int) if xs else np.zeros(0, int)  # noqa: E731
    return SampleSplit(train=cat(tr), val=cat(va), test=cat(te), sample_of_point=sop, names=tuple(names),
                       mode=mode, parts={names[k]: parts[names[k]] for k in range(n_s) if names[k] in parts},
                       blocks=int(blocks), buffer=int(buffer), dropped=cat(dr))
