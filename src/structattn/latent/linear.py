"""PCA and NMF baselines with the same interface and scaling as `LoopVAE`.

They answer the question every VAE result must face: does a nonlinear model buy anything
over a linear basis of the same size?
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import NMF, PCA

from .base import LatentEstimator


class PCALatent(LatentEstimator):
    """Principal components of the (centred, globally scaled) loops.

    Args:
        n_latent: number of components.
        standardize: per-loop scaling, ``"center"`` (default), ``"zscore"`` or ``"none"``
            (see `structattn.latent.base`).
        seed: random state (only used by randomized solvers).

    Example:
        >>> from structattn.data.synthetic import make_synthetic
        >>> s = make_synthetic(seed=0)
        >>> z = PCALatent(n_latent=3).fit_transform(s.loops)
        >>> z.shape
        (1089, 3)
    """

    def __init__(self, *, n_latent: int = 3, standardize: str = "center", seed: int = 0):
        self.n_latent = n_latent
        self.standardize = standardize
        self.seed = seed

    def _fit_scaled(self, xs: np.ndarray) -> None:
        if self.n_latent > min(xs.shape):
            raise ValueError(f"n_latent: expected <= min(n_train, V)={min(xs.shape)} for PCA, got {self.n_latent}")
        self.pca_ = PCA(n_components=self.n_latent, random_state=self.seed).fit(xs)

    def _encode(self, xs: np.ndarray) -> np.ndarray:
        return self.pca_.transform(xs)

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return self.pca_.inverse_transform(z)


class NMFLatent(LatentEstimator):
    """Non-negative matrix factorisation of the loops, shifted to be non-negative.

    NMF needs non-negative input but centred loops are signed, so after the common scaling
    one constant ``shift_`` (the minimum over the training loops) is subtracted from every
    value; a single scalar keeps loop shapes intact. Loops transformed later that dip below
    the training minimum are clipped at 0 in the shifted space (their reconstruction error
    shows it). Decoding adds the shift back. Latents are non-negative loadings.

    Args:
        n_latent: number of components.
        standardize: per-loop scaling (see `structattn.latent.base`).
        seed: random state of the NNDSVDa initialisation and the solver.
        max_iter: solver iterations.

    Example:
        >>> from structattn.data.synthetic import make_synthetic
        >>> s = make_synthetic(seed=0)
        >>> bool(NMFLatent(n_latent=3).fit(s.loops).transform(s.loops).min() >= 0)
        True
    """

    def __init__(self, *, n_latent: int = 3, standardize: str = "center", seed: int = 0, max_iter: int = 2000):
        self.n_latent = n_latent
        self.standardize = standardize
        self.seed = seed
        self.max_iter = max_iter

    def _fit_scaled(self, xs: np.ndarray) -> None:
        self.shift_ = float(xs.min())
        self.nmf_ = NMF(
            n_components=self.n_latent, init="nndsvda", random_state=self.seed, max_iter=self.max_iter
        ).fit(xs - self.shift_)

    def _encode(self, xs: np.ndarray) -> np.ndarray:
        return self.nmf_.transform(np.clip(xs - self.shift_, 0.0, None))

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return z @ self.nmf_.components_ + self.shift_
