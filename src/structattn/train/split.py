"""Spatial block split: train, validation and test points come from different regions.

Why not a random split of points: neighbouring spectroscopy points are a few pixels apart
while each patch is tens of pixels wide, so a random test point's patch is almost the same
pixels as its training neighbours' patches. A model can then score well by memorising
local texture, and the test R² says nothing about new regions of the sample. We cut the
image into ``blocks x blocks`` rectangles, deal whole blocks to train/val/test (seeded),
and drop training points whose patch reaches into a val/test block (``buffer``), so no
test pixel is ever seen in training.
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
    """
    pos = np.asarray(positions, dtype=float)
    if blocks < 2:
        raise ValueError(f"blocks: expected >= 2 blocks per side, got {blocks}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction/test_fraction: expected each in (0, 1) with sum < 1, got {val_fraction}, {test_fraction}"
        )
    h, w = shape
    edges_r = np.linspace(0, h, blocks + 1)
    edges_c = np.linspace(0, w, blocks + 1)
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
