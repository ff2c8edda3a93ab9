"""Regression scores, per target."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, r2_score


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray, names: tuple[str, ...]) -> dict[str, dict]:
    """{name: {"r2", "mae", "n"}} for (N, K) arrays.

    R² is NaN where it is undefined (a target constant on these points): sklearn would call a
    constant target predicted exactly "perfect" (1.0), which is no evidence of anything.
    """
    out = {}
    for k, name in enumerate(names):
        t = y_true[:, k]
        out[name] = {
            "r2": float(r2_score(t, y_pred[:, k])) if len(t) > 1 and np.ptp(t) > 0 else float("nan"),
            "mae": float(mean_absolute_error(y_true[:, k], y_pred[:, k])),
            "n": int(len(y_true)),
        }
    return out
