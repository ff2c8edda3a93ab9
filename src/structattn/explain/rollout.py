"""Attention rollout (Abnar & Zuidema 2020), residual-aware.

Each layer's attention is averaged over heads and mixed with the identity to account for
the residual connection, ``Ã_l = 0.5 · mean_h(A_l) + 0.5 · I`` (rows renormalised), and the
layers are composed by matrix product, ``R = Ã_L · … · Ã_1`` (later layers on the left:
token mixing is applied first-layer first). The [CLS] row of ``R`` over the patch tokens is
the map. It is the same for every output (``needs_target = False``).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Explainer, read_rows, reads_cls_only, tokens_to_pixels


def rollout(weights: list[torch.Tensor], *, residual: float = 0.5) -> torch.Tensor:
    """(B, T, T) rollout of per-layer (B, heads, T, T) attention weights, first layer first.

    Args:
        weights: one (B, H, T, T) row-stochastic tensor per layer.
        residual: weight of the identity (the skip connection) in each layer's mix.

    Example:
        >>> a = torch.full((1, 2, 3, 3), 1 / 3)
        >>> rollout([a, a])[0, 0]
        tensor([0.5000, 0.2500, 0.2500])
    """
    if not weights:
        raise ValueError("weights: expected at least one layer of attention weights, got none")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual: expected a weight in [0, 1], got {residual}")
    eye = torch.eye(weights[0].shape[-1], dtype=weights[0].dtype, device=weights[0].device)
    joint = None
    for w in weights:
        a = (1.0 - residual) * w.mean(1) + residual * eye  # (B, T, T)
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    return joint


class RolloutExplainer(Explainer):
    """Residual-aware attention rollout, [CLS] row, renormalised over the patch tokens.

    Args:
        model: a `ViTRegressor`.
        residual: identity weight in each layer's mix (0.5 as in Abnar & Zuidema).

    Example:
        >>> from structattn.nets.vit import ViTConfig, ViTRegressor
        >>> m = ViTRegressor(ViTConfig(in_channels=1, window=16, patch=4))
        >>> RolloutExplainer(m).attribute(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 16, 16])
    """

    name = "rollout"
    needs_target = False

    def __init__(self, model: nn.Module, *, residual: float = 0.5) -> None:
        super().__init__(model)
        if not 0.0 <= residual <= 1.0:
            raise ValueError(f"residual: expected a weight in [0, 1], got {residual}")
        self.residual = residual
        self.needs_target = not reads_cls_only(model)  # as AttentionExplainer: per output for token readouts

    def _attribute(self, patches: torch.Tensor, *, target: int | None) -> torch.Tensor:
        with torch.no_grad():
            _, weights, h = self.model(patches, return_attention=True, return_states=True)
        cls = read_rows(self.model, h, rollout(weights, residual=self.residual), target)  # (B, g*g)
        cls = cls / cls.sum(-1, keepdim=True).clamp_min(1e-12)
        return tokens_to_pixels(cls, patch=self.model.cfg.patch)
