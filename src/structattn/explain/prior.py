"""The centre-weighted prior: an explainer that ignores the model and the input.

The property is measured at the patch centre, so "the centre matters most" is a strong,
free guess. Any explanation method worth its cost must beat it on ground truth; it is
scored exactly like the real methods.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Explainer


def centre_prior(window: int, *, sigma: float | None = None) -> np.ndarray:
    """(window, window) isotropic Gaussian centred on pixel (window//2, window//2), max 1.

    Args:
        window: patch side in pixels.
        sigma: width in pixels; default ``window / 6``. (Its pixel ranking, hence AUROC,
            does not depend on sigma: only the distance to the centre does.)

    Example:
        >>> float(centre_prior(8)[4, 4])
        1.0
    """
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window: expected a positive integer, got {window!r}")
    s = window / 6 if sigma is None else float(sigma)
    if s <= 0:
        raise ValueError(f"sigma: expected a positive width in pixels, got {sigma}")
    yy, xx = np.mgrid[0:window, 0:window] - window // 2
    return np.exp(-(yy**2 + xx**2) / (2 * s**2))


class CentrePriorExplainer(Explainer):
    """The same Gaussian for every point and target (a baseline, not an explanation).

    Example:
        >>> from structattn.nets.vit import ViTConfig, ViTRegressor
        >>> m = ViTRegressor(ViTConfig(in_channels=1, window=16, patch=4))
        >>> CentrePriorExplainer(m).attribute(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 16, 16])
    """

    name = "centre"
    needs_target = False

    def __init__(self, model: nn.Module, *, sigma: float | None = None) -> None:
        super().__init__(model)
        self.sigma = sigma

    def _attribute(self, patches: torch.Tensor, *, target: int | None) -> torch.Tensor:
        prior = torch.as_tensor(centre_prior(patches.shape[-1], sigma=self.sigma), dtype=torch.float32)
        return prior.expand(len(patches), -1, -1).clone()
