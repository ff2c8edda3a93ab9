"""Raw [CLS] attention: how much the [CLS] query attends to each patch token."""

from __future__ import annotations

import torch
from torch import nn

from .base import Explainer, read_rows, reads_cls_only, tokens_to_pixels


class AttentionExplainer(Explainer):
    """[CLS] -> token attention of one layer, one head or the head mean.

    The [CLS] row is renormalised over the patch tokens (its self-attention dropped), so
    each map sums to 1 over tokens. The map is the same for every output.

    Args:
        model: a `ViTRegressor`.
        layer: block index (negative counts from the end); default the last.
        head: head index, or None for the mean over heads.

    Example:
        >>> from structattn.nets.vit import ViTConfig, ViTRegressor
        >>> m = ViTRegressor(ViTConfig(in_channels=1, window=16, patch=4))
        >>> AttentionExplainer(m).attribute(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 16, 16])
    """

    name = "attention"
    needs_target = False

    def __init__(self, model: nn.Module, *, layer: int = -1, head: int | None = None) -> None:
        super().__init__(model)
        depth, heads = model.cfg.depth, model.cfg.heads
        if not -depth <= layer < depth:
            raise ValueError(f"layer: expected an index in [-{depth}, {depth}), got {layer}")
        if head is not None and not 0 <= head < heads:
            raise ValueError(f"head: expected None (mean) or an index in [0, {heads}), got {head}")
        self.layer, self.head = layer, head
        # the [CLS] row is the same for every output; a model reading the patch tokens reads them
        # differently for each output (ViTConfig.readout), so its maps need the target
        self.needs_target = not reads_cls_only(model)

    def cls_attention(self, patches: torch.Tensor, target: int | None = None) -> torch.Tensor:
        """(B, heads, g*g) [CLS] attention of the chosen layer, renormalised over tokens (for a
        model reading the patch tokens, their attention rows weighted by what output `target` reads)."""
        with torch.no_grad():
            _, weights, h = self.model(patches, return_attention=True, return_states=True)
        cls = read_rows(self.model, h, weights[self.layer], target)  # (B, H, T-1)
        return cls / cls.sum(-1, keepdim=True).clamp_min(1e-12)

    def _attribute(self, patches: torch.Tensor, *, target: int | None) -> torch.Tensor:
        cls = self.cls_attention(patches, target)
        tok = cls.mean(1) if self.head is None else cls[:, self.head]
        return tokens_to_pixels(tok, patch=self.model.cfg.patch)
