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
import torch
from sklearn.metrics import r2_score

from ..nets.cnn import CNNConfig, CNNRegressor
from .trainer import TrainConfig, fit_model, predict_batched

BASELINES = ("mean", "ridge", "position", "cnn")
ALPHAS = np.logspace(-2, 5, 22)  # ridge penalties tried on the validation blocks (relative to n)
MIN_R2 = 0.1  # below this the ViT explains too little of the target to read its explanations


ROW_BATCH = 1024  # feature rows made at a time: memory bounded by the batch, not by the number of points


def _block(x, index: np.ndarray) -> np.ndarray:
    """Items `index` of `x`: an (N, ...) array, or a `PatchSource` or other source with ``take(index)``
    (rows cut on demand)."""
    index = np.asarray(index, np.int64)
    if isinstance(x, (np.ndarray, torch.Tensor)) or not hasattr(x, "take"):  # arrays' own take() flattens
        return np.asarray(x[index])
    return x.take(index)


def _rows(x, index: np.ndarray) -> np.ndarray:
    """(len(index), p) float64 feature rows of items `index` of `x` (see `_block`)."""
    return _block(x, index).reshape(len(index), -1).astype(np.float64)


def _batches(index: np.ndarray, batch: int | None = None):
    batch = batch or ROW_BATCH
    for i in range(0, len(index), batch):
        yield index[i:i + batch]


def _train_moments(x, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof 0) of the training rows, two streamed passes (no catastrophic cancellation)."""
    total = None
    for b in _batches(train):
        r = _rows(x, b).sum(0)
        total = r if total is None else total + r
    mu = total / len(train)
    ss = np.zeros_like(mu)
    for b in _batches(train):
        ss += ((_rows(x, b) - mu) ** 2).sum(0)
    sd = np.sqrt(ss / len(train))
    sd[sd < 1e-8] = 1.0
    return mu, sd


def ridge_coefficients(x, y: np.ndarray, *, train: np.ndarray, alphas: np.ndarray = ALPHAS) -> dict:
    """Ridge coefficients for every penalty at once, features standardised with training statistics.

    `x` is an (N, ...) feature array or a `structattn.scale.PatchSource` (rows cut on demand).
    The penalty is ``alpha * n_train`` on standardised features and centred targets. With
    fewer training rows than features, one SVD of the (n, p) training matrix; otherwise the
    (p, p) Gram matrix is accumulated a batch of rows at a time and eigen-decomposed, so
    memory is min(n, p) x p numbers, never N x p. Both give sklearn's ``Ridge`` solution.

    Returns:
        {"mu", "sd": (p,) feature scaling, "ym": (K,) training target mean,
         "coef": (A, p, K) coefficients on standardised features, one set per penalty}
    """
    y = np.asarray(y, np.float64)
    train = np.asarray(train, np.int64)
    if y.ndim != 2 or len(y) != len(x):
        raise ValueError(f"y: expected ({len(x)}, K) targets, one row per item of x, got shape {y.shape}")
    if len(train) < 2:
        raise ValueError(f"train: expected at least 2 training rows, got {len(train)}")
    if not np.isfinite(y[train]).all():
        raise ValueError("y: the training targets hold NaN or inf")
    n = len(train)
    mu, sd = _train_moments(x, train)
    ym = y[train].mean(0)
    yc = y[train] - ym
    p = len(mu)
    if n < p:  # dual side is smaller: the training matrix itself
        z = (_rows(x, train) - mu) / sd
        u, s, vt = np.linalg.svd(z, full_matrices=False)  # (n, r), (r,), (r, p)
        uty = u.T @ yc  # (r, K)
        d = s[None, :] / (s[None, :] ** 2 + alphas[:, None] * n)  # (A, r)
        coef = np.einsum("rp,ar,rk->apk", vt, d, uty)
    else:  # primal side is smaller: streamed Gram matrix Z^T Z (p, p) and Z^T y (p, K)
        gram = np.zeros((p, p))
        zty = np.zeros((p, y.shape[1]))
        for b in _batches(train):
            z = (_rows(x, b) - mu) / sd
            gram += z.T @ z
            zty += z.T @ (y[b] - ym)
        w, v = np.linalg.eigh(gram)  # eigenvalues are the squared singular values
        w = np.clip(w, 0.0, None)
        vtz = v.T @ zty  # (p, K)
        coef = np.einsum("pr,ar,rk->apk", v, 1.0 / (w[None, :] + alphas[:, None] * n), vtz)
    return {"mu": mu, "sd": sd, "ym": ym, "coef": coef}


def ridge_predict(x, index: np.ndarray, fit: dict, coef: np.ndarray) -> np.ndarray:
    """Predictions (len(index), K) of `coef` (p, K), or of every penalty (A, len(index), K) for (A, p, K)."""
    index = np.asarray(index, np.int64)
    out = []
    for b in _batches(index):
        z = (_rows(x, b) - fit["mu"]) / fit["sd"]
        out.append(np.einsum("mp,...pk->...mk", z, coef))
    return np.concatenate(out, axis=-2) + fit["ym"]


def ridge_fit_select(x, y: np.ndarray, *, train: np.ndarray, val: np.ndarray, alphas: np.ndarray = ALPHAS) -> dict:
    """`ridge_coefficients` with the penalty chosen per target by the MSE on the validation points.

    Returns the fit's "mu", "sd", "ym" and "chosen": (p, K) coefficients on standardised features,
    "alpha": (K,) penalties, "val_mse": (K,) and "val_pred": (len(val), K) at the chosen penalties.
    """
    y = np.asarray(y, np.float64)
    fit = ridge_coefficients(x, y, train=train, alphas=alphas)
    val_pred = ridge_predict(x, val, fit, fit["coef"])  # (A, m, K)
    mse = ((val_pred - y[val][None]) ** 2).mean(1)  # (A, K)
    best = mse.argmin(0)  # (K,)
    k = np.arange(y.shape[1])
    return {"mu": fit["mu"], "sd": fit["sd"], "ym": fit["ym"],
            "chosen": np.stack([fit["coef"][b, :, j] for j, b in enumerate(best)], axis=1),
            "alpha": alphas[best], "val_mse": mse[best, k], "val_pred": val_pred[best, :, k].T}


def ridge_select(
    x, y: np.ndarray, *, train: np.ndarray, val: np.ndarray, alphas: np.ndarray = ALPHAS
) -> tuple[np.ndarray, dict]:
    """Ridge on features x -> predictions (N, K) for all points, penalty per target on val.

    `x` is an (N, ...) feature array or a `PatchSource` (patch pixels cut a batch at a time;
    see `ridge_coefficients`). Features are standardised with training statistics. Returns
    (predictions, info) where info holds the chosen penalty per target.
    """
    fit = ridge_fit_select(x, y, train=train, val=val, alphas=alphas)
    pred = ridge_predict(x, np.arange(len(y)), fit, fit["chosen"])
    return pred, {"alpha": [float(a) for a in fit["alpha"]], "val_mse": [float(m) for m in fit["val_mse"]]}


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
    x,
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
    """All baselines on standardised patches and targets y (N, K) (target units).

    `x` is an (N, C, w, w) array or a `structattn.scale.PatchSource` that cuts them a batch
    at a time (what `structattn run` passes: memory bounded by the batch, not by N). The CNN
    learns the same standardised targets with the same trainer, options and seed as the ViT;
    ridge and position choose their penalties on the validation points.
    """
    y = np.asarray(y, np.float64)
    preds: dict[str, np.ndarray] = {"mean": np.broadcast_to(y[train].mean(0), y.shape).copy()}
    info: dict = {}
    preds["ridge"], info["ridge"] = ridge_select(x, y, train=train, val=val)
    preds["position"], info["position"] = position_baseline(positions, y, shape=shape, train=train, val=val)
    if cnn:
        preds["cnn"], info["cnn"] = fit_cnn(x, y, train=train, val=val, train_cfg=train_cfg,
                                            checkpoint_dir=checkpoint_dir)
    return BaselineResult(r2=r2_on(y, preds, test), predictions=preds, info=info)


def r2_on(y: np.ndarray, preds: dict[str, np.ndarray], test: np.ndarray) -> dict[str, np.ndarray]:
    """name -> (K,) R² of each prediction (N, K) on the points `test` (NaN for a constant target)."""
    return {b: np.array([_r2(y[test, k], p[test, k]) for k in range(y.shape[1])]) for b, p in preds.items()}


def fit_cnn(x, y: np.ndarray, *, train: np.ndarray, val: np.ndarray, train_cfg: TrainConfig,
            checkpoint_dir=None) -> tuple[np.ndarray, dict]:
    """The small CNN baseline on standardised targets: (N, K) predictions in target units, and its
    training record. The same trainer, options and seed (``train_cfg.seed``) as the ViT."""
    y = np.asarray(y, np.float64)
    ym, ys = y[train].mean(0), np.maximum(y[train].std(0), 1e-8)
    c, w = _block(x, np.arange(1)).shape[1::2]  # (1, C, w, w) -> C, w
    L.seed_everything(train_cfg.seed, workers=True, verbose=False)
    model = CNNRegressor(CNNConfig(in_channels=c, window=w, n_outputs=y.shape[1]))
    model, hist = fit_model(model, x, (y - ym) / ys, train_index=train, val_index=val, train=train_cfg,
                            checkpoint_dir=checkpoint_dir)
    out = predict_batched(model, lambda a, b: _block(x, np.arange(a, b)), len(y))
    return out * ys + ym, {"best_epoch": hist["best_epoch"], "stopped_epoch": hist["stopped_epoch"],
                           "config": model.cfg.to_dict()}


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
    name: str, vit_r2: float, baseline_r2: dict, *, margin: float, min_r2: float = MIN_R2, who: str = "the ViT"
) -> tuple[bool, str, str]:
    """(learned, best baseline name, one-sentence verdict) for one target; `who` names the run's predictor
    of it (a held ridge under --prefer-ridge)."""
    best = best_baseline(baseline_r2)
    best_r2 = baseline_r2.get(best)
    best_r2 = float("nan") if best_r2 is None else best_r2
    if not np.isfinite(vit_r2):
        return False, best, f"not learned: {name} is constant on the test points, R² is undefined"
    if vit_r2 < min_r2:
        return False, best, (f"not learned: {who} explains almost none of {name} on held-out blocks "
                             f"(R² {vit_r2:.2f} < {min_r2})")
    if vit_r2 < best_r2 + margin:
        how = "does worse than" if vit_r2 < best_r2 - margin else "does no better than"
        return False, best, (f"not learned beyond the baselines: {who} (R² {vit_r2:.2f}) {how} "
                             f"{best} (R² {best_r2:.2f}; margin {margin:.2f})")
    return True, best, (f"learned: {who} (R² {vit_r2:.2f}) beats the best baseline, {best} ({best_r2:.2f}), "
                        f"by more than the margin {margin:.2f}")
