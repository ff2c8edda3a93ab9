"""Integrated gradients and occlusion through `captum`, reported at token resolution.

Sign convention (shared by every signed method: IG, occlusion, SHAP): the returned maps are
*signed* (positive = the region pushes output ``k`` up relative to the baseline). Every
score in `structattn.evaluate` ranks by magnitude ``|a|``, because a region that lowers a
property (e.g. a-domains lower ``height``) is as causal as one that raises it.

Baseline: zeros, i.e. the training-mean patch after per-channel standardisation — the same
value SHAP's masker and the deletion/insertion curves use, so all methods answer the same
question ("relative to an average, featureless patch").
"""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, Occlusion
from torch import nn

from .base import Explainer, tokens_to_pixels


def pixels_to_tokens(maps: torch.Tensor, *, patch: int, reduce: str = "sum") -> torch.Tensor:
    """(B, w, w) or (B, C, w, w) pixel attributions -> (B, g*g) token scores (channels summed)."""
    if maps.ndim == 4:
        maps = maps.sum(1)
    if maps.ndim != 3 or maps.shape[-1] % patch:
        raise ValueError(f"maps: expected (B, w, w) with w a multiple of patch={patch}, got {tuple(maps.shape)}")
    b, w, _ = maps.shape
    g = w // patch
    blocks = maps.reshape(b, g, patch, g, patch)
    out = blocks.sum((2, 4)) if reduce == "sum" else blocks.mean((2, 4))
    return out.reshape(b, g * g)


class IntegratedGradientsExplainer(Explainer):
    """Captum integrated gradients from a zero baseline, summed over channels and each token.

    Summing per token keeps completeness: the map's token scores add up to
    ``f(x) - f(0)`` up to the Riemann error (``convergence_delta`` reports it).

    Args:
        model: any module mapping (B, C, w, w) to (B, K); needs ``model.cfg.patch``.
        n_steps: Riemann steps along the straight path (each costs one forward and backward).
        method: captum's quadrature (``"gausslegendre"`` converges fastest).
        internal_batch_size: points x steps evaluated per forward (None: all at once).

    Example:
        >>> from structattn.nets.vit import ViTConfig, ViTRegressor
        >>> m = ViTRegressor(ViTConfig(in_channels=1, window=16, patch=4))
        >>> IntegratedGradientsExplainer(m, n_steps=8).attribute(torch.rand(2, 1, 16, 16), target=0).shape
        torch.Size([2, 16, 16])
    """

    name = "ig"
    needs_target = True

    def __init__(
        self, model: nn.Module, *, n_steps: int = 32, method: str = "gausslegendre", internal_batch_size: int | None = 512
    ) -> None:
        super().__init__(model)
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps: expected a positive integer, got {n_steps!r}")
        self.n_steps, self.method, self.internal_batch_size = n_steps, method, internal_batch_size
        self.last_delta: torch.Tensor | None = None  # (B,) completeness error of the last call

    def _attribute(self, patches: torch.Tensor, *, target: int | None) -> torch.Tensor:
        ig = IntegratedGradients(self.model)
        with torch.enable_grad():
            attr, delta = ig.attribute(
                patches,
                baselines=torch.zeros_like(patches),
                target=target,
                n_steps=self.n_steps,
                method=self.method,
                internal_batch_size=self.internal_batch_size,
                return_convergence_delta=True,
            )
        self.model.zero_grad(set_to_none=True)
        self.last_delta = delta.detach()
        tok = pixels_to_tokens(attr.detach(), patch=self.model.cfg.patch, reduce="sum")
        return tokens_to_pixels(tok, patch=self.model.cfg.patch)


class OcclusionExplainer(Explainer):
    """Captum occlusion with one token as the window and the stride: ``f(x) - f(x, token → 0)``.

    Each token's pixels all carry the same output drop; the map keeps that value (it is
    not multiplied by the token's pixel count), so the map reads in the target's units.

    Args:
        model: any module mapping (B, C, w, w) to (B, K); needs ``model.cfg.patch``.
        perturbations_per_eval: occluded copies evaluated per forward.

    Example:
        >>> from structattn.nets.vit import ViTConfig, ViTRegressor
        >>> m = ViTRegressor(ViTConfig(in_channels=1, window=16, patch=4))
        >>> OcclusionExplainer(m).attribute(torch.rand(2, 1, 16, 16), target=0).shape
        torch.Size([2, 16, 16])
    """

    name = "occlusion"
    needs_target = True

    def __init__(self, model: nn.Module, *, perturbations_per_eval: int = 64) -> None:
        super().__init__(model)
        if not isinstance(perturbations_per_eval, int) or perturbations_per_eval < 1:
            raise ValueError(f"perturbations_per_eval: expected a positive integer, got {perturbations_per_eval!r}")
        self.perturbations_per_eval = perturbations_per_eval

    def _attribute(self, patches: torch.Tensor, *, target: int | None) -> torch.Tensor:
        c, p = patches.shape[1], self.model.cfg.patch
        with torch.no_grad():
            attr = Occlusion(self.model).attribute(
                patches,
                sliding_window_shapes=(c, p, p),
                strides=(c, p, p),
                baselines=0.0,
                target=target,
                perturbations_per_eval=self.perturbations_per_eval,
            )
        tok = pixels_to_tokens(attr, patch=p, reduce="mean") / c  # every pixel of a token holds the same drop
        return tokens_to_pixels(tok, patch=p)
