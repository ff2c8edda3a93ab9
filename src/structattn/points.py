"""Which points a run explains: shared by `structattn run` and `structattn explain`."""

from __future__ import annotations

import numpy as np


def check_points_spec(spec: str) -> None:
    """Validate a --points spec: "test", "all" or a positive number of test points."""
    if spec not in ("test", "all") and not (str(spec).isdigit() and int(spec) > 0):
        raise ValueError(f"--points: expected 'test', 'all' or a positive number, got {spec!r}")


def choose_points(split_test: np.ndarray, n_points: int, spec: str, *, seed: int) -> np.ndarray:
    """Indices of the points to explain: all test points, all points or N test points."""
    if spec == "all":
        return np.arange(n_points)
    if spec == "test":
        return np.sort(split_test)
    n = min(int(spec), len(split_test))
    return np.sort(np.random.default_rng(seed).choice(split_test, size=n, replace=False))
