"""A small CNN regressor: the baseline every ViT figure stands next to.

im2spec-style encoder (Kalinin et al.'s structure -> spectrum CNNs): three 3x3 conv blocks
(16, 32, 64 channels) each halving the patch, then a dense head on the *flattened* map.
Flattening (not global pooling) keeps where in the patch a feature sits, so the baseline can
learn off-centre rules too; a pooled CNN would be a straw man on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class CNNConfig:
    """Architecture of the baseline CNN (saved with its scores)."""

    in_channels: int = 3
    window: int = 32  # patch side; must be a multiple of 8 (three 2x poolings)
    width: int = 16  # channels of the first block; doubled per block
    hidden: int = 64  # dense layer width
    dropout: float = 0.1
    n_outputs: int = 1

    def __post_init__(self) -> None:
        if self.window % 8 or self.window < 8:
            raise ValueError(f"window: expected a multiple of 8 for the CNN baseline, got {self.window}")

    def to_dict(self) -> dict:
        return asdict(self)


class CNNRegressor(nn.Module):
    """(B, C, w, w) patches -> (B, n_outputs).

    Example:
        >>> m = CNNRegressor(CNNConfig(in_channels=2, window=16, n_outputs=3))
        >>> m(torch.zeros(4, 2, 16, 16)).shape
        torch.Size([4, 3])
    """

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers, c = [], cfg.in_channels
        for k in range(3):
            out = cfg.width * 2**k
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers)
        flat = c * (cfg.window // 8) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(cfg.hidden, cfg.n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
