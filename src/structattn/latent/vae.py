"""`LoopVAE`: a small β-VAE that compresses hysteresis loops into a few latents.

Encoder choice: an MLP, not a 1-D CNN. A loop has V=64 samples, and a sample's position
is a *voltage on a known waveform*, not an arbitrary place in a signal: a switching edge
at sample 12 (rising branch, +6 V) and one at sample 44 (falling branch, -6 V) mean
different physics. Convolutions build in translation equivariance, which is the wrong
prior here; a dense layer sees every voltage with its own weight, has few parameters at
V=64 (≈50 k for encoder and decoder), and trains in seconds on a CPU. Convolutions pay off for long (V ≫ 100)
or shift-invariant spectra, which BEPS loops are not.

Loss (per loop, in scaled units, see `structattn.latent.base`):
``sum_V (x - x_hat)^2 + beta * KL(q(z|x) || N(0, I))``. With loops scaled to unit global
std this is a Gaussian likelihood of variance 1/2 per sample; ``beta`` > 1 pushes towards
disentangled, fewer active latents, ``beta`` < 1 towards sharper reconstructions.

After fitting, latents are reordered by their mean KL on the training loops (``latent0`` is
the most informative) and latents with mean KL < 0.01 nats are marked inactive in
``active_`` (they carry no information: their posterior equals the prior).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import LatentEstimator


class _VAENet(nn.Module):
    def __init__(self, n_voltage: int, n_latent: int, hidden: int):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(n_voltage, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, 2 * n_latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(n_latent, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, n_voltage),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)  # (B, L) each
        return mu, logvar.clamp(-12.0, 6.0)

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + noise * torch.exp(0.5 * logvar)  # reparameterisation, noise (B, L)
        return self.decoder(z), mu, logvar


def _kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B, L) KL(N(mu, exp(logvar)) || N(0, 1)) per latent."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class LoopVAE(LatentEstimator):
    """β-VAE with MLP encoder/decoder on (N, V) hysteresis loops.

    Args:
        n_latent: latent size.
        beta: weight of the KL term (1.0 = plain VAE).
        hidden: width of the two hidden layers of encoder and decoder.
        epochs: passes over the training loops.
        batch_size: loops per optimiser step.
        lr: Adam learning rate.
        standardize: per-loop scaling, ``"center"`` (default: remove each loop's mean, keep
            its amplitude), ``"zscore"`` or ``"none"`` (see `structattn.latent.base`).
        seed: seeds initialisation, shuffling and sampling noise; same seed, same latents.
        device: torch device ("cpu").

    Fitted attributes: ``net_`` (the torch module), ``history_`` (dict of per-epoch
    ``loss``, ``recon``, ``kl``), ``kl_per_latent_`` (L,), ``active_`` (L,) bool,
    ``order_`` (latent order by KL), plus the scaling and latent-range attributes of
    `LatentEstimator`.

    Example:
        >>> from structattn.data.synthetic import make_synthetic
        >>> s = make_synthetic(seed=0)
        >>> vae = LoopVAE(n_latent=3, epochs=5).fit(s.loops)
        >>> vae.transform(s.loops).shape, vae.inverse_transform([[0.0, 0.0, 0.0]]).shape
        ((1089, 3), (1, 64))
    """

    def __init__(
        self,
        *,
        n_latent: int = 3,
        beta: float = 1.0,
        hidden: int = 128,
        epochs: int = 200,
        batch_size: int = 256,
        lr: float = 3e-3,
        standardize: str = "center",
        seed: int = 0,
        device: str = "cpu",
    ):
        self.n_latent = n_latent
        self.beta = beta
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.standardize = standardize
        self.seed = seed
        self.device = device

    def _check_params(self) -> None:
        super()._check_params()
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta: expected a finite number >= 0, got {self.beta!r}")
        for name in ("hidden", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr!r}")

    def _fit_scaled(self, xs: np.ndarray) -> None:
        dev = torch.device(self.device)
        gen = torch.Generator().manual_seed(int(self.seed))  # CPU generator: reproducible everywhere
        rng = np.random.default_rng(self.seed)
        with torch.random.fork_rng(devices=[]):  # leave the caller's global torch RNG untouched
            torch.manual_seed(int(self.seed))
            net = _VAENet(xs.shape[1], self.n_latent, self.hidden).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        x_all = torch.as_tensor(xs, dtype=torch.float32, device=dev)  # (n, V)
        n = x_all.shape[0]
        hist = {"loss": [], "recon": [], "kl": []}
        net.train()
        for _ in range(self.epochs):
            perm = rng.permutation(n)
            tot = np.zeros(3)
            for start in range(0, n, self.batch_size):
                xb = x_all[perm[start : start + self.batch_size]]
                noise = torch.randn(xb.shape[0], self.n_latent, generator=gen).to(dev)
                x_hat, mu, logvar = net(xb, noise)
                recon = (x_hat - xb).pow(2).sum(dim=1).mean()
                kl = _kl(mu, logvar).sum(dim=1).mean()
                loss = recon + self.beta * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += np.array([loss.item(), recon.item(), kl.item()]) * xb.shape[0]
            for k, v in zip(hist, tot / n):
                hist[k].append(float(v))
        net.eval()
        self.net_ = net
        self.history_ = hist
        with torch.no_grad():
            mu, logvar = net.encode(x_all)
            kl_lat = _kl(mu, logvar).mean(dim=0).cpu().numpy()  # (L,)
        self.order_ = np.argsort(-kl_lat, kind="stable")
        self.kl_per_latent_ = kl_lat[self.order_]
        self.active_ = self.kl_per_latent_ > 0.01

    def _encode(self, xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(xs, dtype=torch.float32, device=torch.device(self.device))
            mu, _ = self.net_.encode(x)
        return mu.cpu().numpy().astype(np.float64)[:, self.order_]

    def _decode(self, z: np.ndarray) -> np.ndarray:
        inv = np.argsort(self.order_)
        zz = torch.as_tensor(z[:, inv], dtype=torch.float32, device=torch.device(self.device))
        with torch.no_grad():
            return self.net_.decoder(zz).cpu().numpy().astype(np.float64)
