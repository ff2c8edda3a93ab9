"""Wavelet-modulus token features: first-order scattering coefficients per token cell.

Each input channel is convolved with complex Morlet wavelets ψ_{j,θ} (kymatio's filter design:
scales j = 0 .. J-1, L orientations), the modulus |x * ψ_{j,θ}| is taken at every pixel and
averaged over each token's cell, next to the cell mean of the channel itself (the low-pass).
That is Mallat's first-order scattering transform with a box low-pass matching the token grid
(kymatio's `Scattering2D` uses a Gaussian low-pass and FFTs; its 2-D transform cost about 10x
more per batch on this CPU). The filters are fixed: the modulus of an oriented wavelet is an
edge *energy* at one orientation and scale, which ~10^3 labelled points are too few to learn
from scratch (docs/training.md, round 16).

The map x -> features is positively homogeneous of degree 1 (the modulus) or linear (the cell
means), so gradient x input conserves relevance through it, as through the conv stem.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Spatial support of the filters: ±7 px. Cut from a 65 x 65 grid, not built on the small grid, whose
# periodisation folds the tails back in: |x * ψ| then matches kymatio's FFT transform within 3 % (relative L2)
# at the coarser scale (11 px: 10 %) and 0.01 % at the finer (tests/test_wavelet.py).
KERNEL = 15
_GRID = 65


def morlet_bank(scales: int, orientations: int, size: int = KERNEL) -> np.ndarray:
    """(scales * orientations, size, size) complex Morlet wavelets centred on the middle pixel (odd size),
    in kymatio's design (`kymatio.scattering2d.filter_bank.filter_bank`: σ = 0.8·2^j, ξ = 3π/4 / 2^j,
    slant 4 / L), ordered j-major."""
    from kymatio.scattering2d.filter_bank import morlet_2d  # kymatio's top-level import also loads 3-D code

    if scales < 1 or orientations < 1 or size % 2 == 0 or size > _GRID:
        raise ValueError(f"scales, orientations, size: expected positive integers and an odd size <= {_GRID}, "
                         f"got {scales}, {orientations}, {size}")
    L, c, h = orientations, _GRID // 2, size // 2
    bank = [morlet_2d(_GRID, _GRID, 0.8 * 2**j, (int(L - L / 2 - 1) - t) * np.pi / L, 3.0 / 4.0 * np.pi / 2**j,
                      4.0 / L, offset=-c)[c - h : c + h + 1, c - h : c + h + 1]
            for j in range(scales) for t in range(L)]
    return np.asarray(bank)


def check_orientations(value, name: str) -> int:
    """`value` as a number of wavelet orientations (0 = off), or a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected 0 (off) or a positive number of orientations, got {value!r}")
    return int(value)


def wavelet_scales(patch: int) -> int:
    """Scales for a token of `patch` px: the largest J with 2^J <= patch, at most 2 (at least 1)."""
    return max(1, min(2, int(np.floor(np.log2(max(patch, 1))))))


class WaveletModulus(nn.Module):
    """(B, C, w, w) -> (B, C (1 + J L), w / patch, w / patch): per token cell, each channel's mean and
    its mean wavelet modulus at J scales and L orientations. No trained parameters."""

    def __init__(self, in_channels: int, *, patch: int, orientations: int = 8) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("patch", patch), ("orientations", orientations)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        self.in_channels, self.patch = in_channels, patch
        self.scales = wavelet_scales(patch)
        bank = morlet_bank(self.scales, orientations)
        w = torch.as_tensor(np.stack([bank.real, bank.imag], 1).reshape(-1, 1, KERNEL, KERNEL), dtype=torch.float32)
        self.n_wavelets = len(bank)
        self.register_buffer("weight", w.repeat(in_channels, 1, 1, 1), persistent=False)  # (C 2 J L, 1, k, k)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (1 + self.n_wavelets)

    def modulus(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, J L, H, W): |x * ψ| at every pixel, the image reflected at its edges."""
        b, c, h, w = x.shape
        half = KERNEL // 2
        mode = "reflect" if min(h, w) > half else "replicate"
        z = F.conv2d(F.pad(x, (half,) * 4, mode=mode), self.weight.to(x.dtype), groups=c)
        return torch.sqrt(z.view(b, c, self.n_wavelets, 2, h, w).pow(2).sum(3) + 1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        mod = self.modulus(x).view(b, c * self.n_wavelets, h, w)
        return torch.cat([F.avg_pool2d(x, self.patch), F.avg_pool2d(mod, self.patch)], dim=1)
