"""Shared machinery of the loop-latent estimators: input checks, loop scaling, the
sklearn-style `transform` / `inverse_transform` / `reconstruction_error` surface.

Why a per-loop offset is removed before any model sees the loops: measured loops carry an
arbitrary vertical offset (instrument background, the synthetic generator adds a random
one of std 0.05) that says nothing about switching. If it stays in, the first latent of
every model is spent on it. The loop *amplitude* is kept (switchable polarization is a
physical factor, `height` in the synthetic rule), so by default loops are only centred,
then divided by one global scale so the models see O(1) numbers. `standardize="zscore"`
also divides each loop by its own std (latents then see shape only); `"none"` keeps the
offset. The per-loop offset/scale of a loop is known whenever the loop itself is given, so
`reconstruction_error` restores them and measures the error in the original loop units.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

STANDARDIZE = ("center", "zscore", "none")


def check_loops(loops, *, name: str = "loops", n_voltage: int | None = None) -> np.ndarray:
    """(N, V) float64 copy of `loops`, or ValueError/TypeError naming `name`."""
    try:
        arr = np.asarray(loops, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a numeric (N, V) array, got {type(loops).__name__} ({exc})") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 2:
        raise ValueError(f"{name}: expected a 2-D (N, V) array with N>=1 and V>=2, got shape {arr.shape}")
    if n_voltage is not None and arr.shape[1] != n_voltage:
        raise ValueError(f"{name}: expected V={n_voltage} voltage steps (as fitted), got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name}: {len(rows)} loop(s) contain NaN/inf, first is loop {int(rows[0])}; "
            "clean them (e.g. structattn.latent.clip_spikes cannot fix NaN: drop or interpolate) first"
        )
    return arr


def check_index(train_index, n: int) -> np.ndarray:
    """Integer index array into range(n) from `train_index` (None -> all)."""
    if train_index is None:
        return np.arange(n)
    idx = np.asarray(train_index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"train_index: a boolean mask must have shape ({n},), got {idx.shape}")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"train_index: expected a 1-D integer index or boolean mask, got {idx.dtype} {idx.shape}")
    if idx.size < 2 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(
            f"train_index: expected >= 2 indices in [0, {n}), got {idx.size} in "
            f"[{idx.min() if idx.size else '-'}, {idx.max() if idx.size else '-'}]"
        )
    return idx


class LatentEstimator(BaseEstimator):
    """Base class (sklearn `BaseEstimator`: get_params/set_params/clone work); subclasses implement `_fit_scaled`, `_encode`, `_decode` on scaled loops.

    Fitted state common to all: ``n_voltage_``, ``global_scale_`` (divides centred loops),
    ``loop_scale_`` (typical per-loop std, used to undo zscore when decoding bare latents),
    ``latent_mean_``, ``latent_std_``, ``latent_min_``, ``latent_max_`` (over training loops,
    used by `traverse`).
    """

    n_latent: int
    standardize: str

    # -- scaling -----------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.n_latent, (int, np.integer)) or self.n_latent < 1:
            raise ValueError(f"n_latent: expected a positive int, got {self.n_latent!r}")
        if self.standardize not in STANDARDIZE:
            raise ValueError(f"standardize: expected one of {STANDARDIZE}, got {self.standardize!r}")

    def _per_loop(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1) offset and (N, 1) scale of each loop under `standardize`."""
        n = x.shape[0]
        if self.standardize == "none":
            off = np.zeros((n, 1))
        else:
            off = x.mean(axis=1, keepdims=True)
        if self.standardize == "zscore":
            sc = x.std(axis=1, keepdims=True)
            sc = np.maximum(sc, 1e-12 + 1e-6 * float(np.median(sc)))  # flat loops: no division by 0
        else:
            sc = np.ones((n, 1))
        return off, sc

    def _scale(self, x: np.ndarray) -> np.ndarray:
        off, sc = self._per_loop(x)
        return (x - off) / sc / self.global_scale_

    def _fit_scaler(self, x: np.ndarray) -> np.ndarray:
        off, sc = self._per_loop(x)
        u = (x - off) / sc
        g = float(u.std())
        self.global_scale_ = g if g > 0 else 1.0
        self.loop_scale_ = float(np.median(sc))
        self.n_voltage_ = int(x.shape[1])
        return u / self.global_scale_

    # -- sklearn surface ---------------------------------------------------------------
    def fit(self, loops, *, train_index=None):
        """Fit on ``loops[train_index]`` (all loops if None). Returns self."""
        self._check_params()
        x = check_loops(loops)
        idx = check_index(train_index, x.shape[0])
        xs = self._fit_scaler(x[idx])  # (n_train, V), O(1)
        self._fit_scaled(xs)
        z = self._encode(xs)  # (n_train, n_latent)
        self.latent_mean_ = z.mean(axis=0)
        self.latent_std_ = z.std(axis=0)
        self.latent_min_ = z.min(axis=0)
        self.latent_max_ = z.max(axis=0)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_voltage_"):
            raise RuntimeError(f"{type(self).__name__}: call fit(loops) first")

    def transform(self, loops) -> np.ndarray:
        """(N, n_latent) latents of `loops` (posterior means for the VAE)."""
        self._check_fitted()
        x = check_loops(loops, n_voltage=self.n_voltage_)
        return self._encode(self._scale(x))

    def fit_transform(self, loops, *, train_index=None) -> np.ndarray:
        return self.fit(loops, train_index=train_index).transform(loops)

    def inverse_transform(self, z) -> np.ndarray:
        """(N, V) loops decoded from (N, n_latent) latents, in loop units, offset 0.

        A bare latent carries no per-loop offset (removed before fitting); under
        ``standardize="zscore"`` the loop is given the typical training amplitude.
        """
        self._check_fitted()
        try:
            z = np.asarray(z, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"z: expected a numeric (N, {self.n_latent}) array ({exc})") from None
        if z.ndim != 2 or z.shape[1] != self.n_latent:
            raise ValueError(f"z: expected shape (N, n_latent={self.n_latent}), got {z.shape}")
        if not np.isfinite(z).all():
            raise ValueError("z: contains NaN/inf")
        return self._decode(z) * self.global_scale_ * self.loop_scale_

    def reconstruct(self, loops) -> np.ndarray:
        """(N, V) loops -> latents -> loops, with each loop's own offset/scale restored."""
        self._check_fitted()
        x = check_loops(loops, n_voltage=self.n_voltage_)
        off, sc = self._per_loop(x)
        return self._decode(self._encode(self._scale(x))) * self.global_scale_ * sc + off

    def reconstruction_error(self, loops, *, relative: bool = False) -> float:
        """Mean squared reconstruction error of `loops`, in squared loop units.

        Args:
            loops: (N, V) loops.
            relative: if True, divide by the mean square of the per-loop-centred loops:
                the fraction of the loop-shape variance the latents do not explain
                (comparable across data sets of very different amplitude).
        """
        x = check_loops(loops, n_voltage=getattr(self, "n_voltage_", None))
        err = float(np.mean((self.reconstruct(x) - x) ** 2))
        if relative:
            denom = float(np.mean((x - x.mean(axis=1, keepdims=True)) ** 2))
            return err / denom if denom > 0 else float("nan")
        return err

    # -- subclass hooks ----------------------------------------------------------------
    def _fit_scaled(self, xs: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode(self, xs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError
