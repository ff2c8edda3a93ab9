"""The baselines every ViT figure stands next to, on the same split and targets.

* ``mean``: the training-set mean (R² about 0 or below on held-out blocks);
* ``ridge``: ridge regression on the standardised patch pixels, the penalty chosen on the
  validation blocks (not by leave-one-out: neighbouring patches overlap, so LOO leaks);
* ``position``: a smooth function of the point's coordinates only (ridge on polynomials of
  degree 1-3 of (row, col), degree and penalty chosen on validation): is the "property"
  just a spatial trend across the film?
* ``cnn``: a small CNN (`structattn.nets.CNNRegressor`) trained by the same trainer.

`learned_verdict` turns the ViT's and the baselines' test R² into the run's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
from sklearn.metrics import r2_score

from ..nets.cnn import CNNConfig, CNNRegressor
from .trainer import TrainConfig, fit_model

BASELINES = ("mean", "ridge", "position", "cnn")
ALPHAS = np.logspace(-2, 5, 22)  # ridge penalties tried on the validation blocks (relative to n)
MIN_R2 = 0.1  # below this the ViT explains too little of the target to read its explanations


def _ridge_path(xtr: np.ndarray, ytr: np.ndarray, xev: list[np.ndarray], alphas: np.ndarray) -> list[np.ndarray]:
    """Ridge predictions for every alpha at once via one SVD.

    xtr (n, p) and ytr (n, K) centred; returns, for each array in `xev`, (A, m, K).
    """
    u, s, vt = np.linalg.svd(xtr, full_matrices=False)  # (n, r), (r,), (r, p)
    uty = u.T @ ytr  # (r, K)
    d = s[None, :] / (s[None, :] ** 2 + alphas[:, None] * len(xtr))  # (A, r)
    out = []
    for x in xev:
        xv = x @ vt.T  # (m, r)
        out.append(np.einsum("mr,ar,rk->amk", xv, d, uty))
    return out


def ridge_select(
    x: np.ndarray, y: np.ndarray, *, train: np.ndarray, val: np.ndarray, alphas: np.ndarray = ALPHAS
) -> tuple[np.ndarray, dict]:
    """Ridge on features x (N, p) -> predictions (N, K) for all points, penalty per target on val.

    Features are standardised with training statistics. Returns (predictions, info) where
    info holds the chosen penalty per target.
    """
    mu, sd = x[train].mean(0), x[train].std(0)
    sd[sd < 1e-8] = 1.0
    z = (x - mu) / sd
    ym = y[train].mean(0)
    val_pred, all_pred = _ridge_path(z[train], y[train] - ym, [z[val], z], alphas)
    mse = ((val_pred - (y[val] - ym)[None]) ** 2).mean(1)  # (A, K)
    best = mse.argmin(0)  # (K,)
    pred = np.stack([all_pred[best[k], :, k] for k in range(y.shape[1])], axis=1) + ym
    return pred, {"alpha": [float(alphas[b]) for b in best], "val_mse": [float(mse[b, k]) for k, b in enumerate(best)]}


def position_features(positions: np.ndarray, shape: tuple[int, int], degree: int) -> np.ndarray:
    """(N, F) monomials r^i c^j, 1 <= i + j <= degree, of coordinates scaled to [-1, 1]."""
    r = 2 * positions[:, 0] / max(shape[0] - 1, 1) - 1
    c = 2 * positions[:, 1] / max(shape[1] - 1, 1) - 1
    cols = [r**i * c ** (d - i) for d in range(1, degree + 1) for i in range(d + 1)]
    return np.stack(cols, axis=1)


def position_baseline(
    positions: np.ndarray, y: np.ndarray, *, shape: tuple[int, int], train: np.ndarray, val: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Smooth trend of the coordinates: polynomial degree (1-3) and penalty chosen per target on val."""
    best_pred = np.zeros_like(y)
    best_mse = np.full(y.shape[1], np.inf)
    info = {"degree": [0] * y.shape[1], "alpha": [0.0] * y.shape[1]}
    for degree in (1, 2, 3):
        pred, sel = ridge_select(position_features(positions, shape, degree), y, train=train, val=val)
        for k in range(y.shape[1]):
            if sel["val_mse"][k] < best_mse[k]:
                best_mse[k], best_pred[:, k] = sel["val_mse"][k], pred[:, k]
                info["degree"][k], info["alpha"][k] = degree, sel["alpha"][k]
    return best_pred, info


@dataclass
class BaselineResult:
    """Test R² per baseline and target, and every baseline's predictions for all points."""

    r2: dict  # baseline -> (K,) test R²
    predictions: dict  # baseline -> (N, K) predictions in target units
    info: dict  # chosen penalties, degrees, CNN history


def fit_baselines(
    x: np.ndarray,
    y: np.ndarray,
    positions: np.ndarray,
    *,
    shape: tuple[int, int],
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    train_cfg: TrainConfig,
    cnn: bool = True,
    checkpoint_dir=None,
) -> BaselineResult:
    """All baselines on standardised patches x (N, C, w, w) and targets y (N, K) (target units).

    The CNN learns the same standardised targets with the same trainer, options and seed as
    the ViT; ridge and position choose their penalties on the validation points.
    """
    y = np.asarray(y, np.float64)
    preds: dict[str, np.ndarray] = {"mean": np.broadcast_to(y[train].mean(0), y.shape).copy()}
    info: dict = {}
    flat = x.reshape(len(x), -1).astype(np.float64)
    preds["ridge"], info["ridge"] = ridge_select(flat, y, train=train, val=val)
    preds["position"], info["position"] = position_baseline(positions, y, shape=shape, train=train, val=val)
    if cnn:
        ym, ys = y[train].mean(0), np.maximum(y[train].std(0), 1e-8)
        L.seed_everything(train_cfg.seed, workers=True, verbose=False)
        model = CNNRegressor(CNNConfig(in_channels=x.shape[1], window=x.shape[-1], n_outputs=y.shape[1]))
        model, hist = fit_model(model, x, (y - ym) / ys, train_index=train, val_index=val, train=train_cfg,
                                checkpoint_dir=checkpoint_dir)
        import torch

        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=torch.float32)
            out = torch.cat([model(xt[i : i + 512]) for i in range(0, len(xt), 512)]).numpy()
        preds["cnn"] = out * ys + ym
        info["cnn"] = {"best_epoch": hist["best_epoch"], "stopped_epoch": hist["stopped_epoch"],
                       "config": model.cfg.to_dict()}
    r2 = {b: np.array([_r2(y[test, k], p[test, k]) for k in range(y.shape[1])]) for b, p in preds.items()}
    return BaselineResult(r2=r2, predictions=preds, info=info)


def _r2(t: np.ndarray, p: np.ndarray) -> float:
    """R², NaN where it is undefined (a constant target)."""
    return float(r2_score(t, p)) if np.ptp(t) > 0 else float("nan")


def r2_margin(y: np.ndarray, a: np.ndarray, b: np.ndarray, *, n_boot: int = 500, seed: int = 0) -> float:
    """Margin by which model a's R² must exceed model b's to count as better on these points.

    Twice the paired-bootstrap standard error of R²(a) - R²(b) over the test points (about a
    95% one-sided bound), floored at 0.02. Points are resampled, not blocks: the paired
    difference of two models' errors at the same point is far less spatially correlated
    than either error, and the floor guards the rest.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        s = rng.integers(0, n, n)
        ss = ((y[s] - y[s].mean()) ** 2).sum()
        diffs[i] = (((y[s] - b[s]) ** 2).sum() - ((y[s] - a[s]) ** 2).sum()) / ss if ss > 0 else 0.0
    return float(max(0.02, 2 * np.std(diffs)))


def best_baseline(baseline_r2: dict) -> str:
    """Name of the baseline with the highest finite R² ("mean" when none is finite)."""
    finite = {b: v for b, v in baseline_r2.items() if v is not None and np.isfinite(v)}
    return max(finite, key=finite.get) if finite else "mean"


def learned_verdict(
    name: str, vit_r2: float, baseline_r2: dict, *, margin: float, min_r2: float = MIN_R2
) -> tuple[bool, str, str]:
    """(learned, best baseline name, one-sentence verdict) for one target."""
    best = best_baseline(baseline_r2)
    best_r2 = baseline_r2.get(best)
    best_r2 = float("nan") if best_r2 is None else best_r2
    if not np.isfinite(vit_r2):
        return False, best, f"not learned: {name} is constant on the test points, R² is undefined"
    if vit_r2 < min_r2:
        return False, best, (f"not learned: the ViT explains almost none of {name} on held-out blocks "
                             f"(R² {vit_r2:.2f} < {min_r2})")
    if vit_r2 < best_r2 + margin:
        how = "does worse than" if vit_r2 < best_r2 - margin else "does no better than"
        return False, best, (f"not learned beyond the baselines: the ViT (R² {vit_r2:.2f}) {how} "
                             f"{best} (R² {best_r2:.2f}; margin {margin:.2f})")
    return True, best, (f"learned: ViT R² {vit_r2:.2f} beats the best baseline, {best} ({best_r2:.2f}), "
                        f"by more than the margin {margin:.2f}")
