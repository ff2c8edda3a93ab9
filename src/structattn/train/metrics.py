"""Regression scores, per target."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, r2_score


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray, names: tuple[str, ...]) -> dict[str, dict]:
    """{name: {"r2", "mae", "n"}} for (N, K) arrays."""
    out = {}
    for k, name in enumerate(names):
        out[name] = {
            "r2": float(r2_score(y_true[:, k], y_pred[:, k])),
            "mae": float(mean_absolute_error(y_true[:, k], y_pred[:, k])),
            "n": int(len(y_true)),
        }
    return out
