"""The one call shape every explanation method shares (Captum's ``attribute``).

An explainer is built on a trained model that maps (B, C, w, w) patches to (B, K) outputs
and returns, for ``attribute(patches, target=k)``, a (B, w, w) float tensor pixel-aligned
with the patches. Token-level scores (B, g, g) are upsampled by repeating each token's
score over its ``p x p`` pixels, which is exact: a token *is* those pixels.
"""

from __future__ import annotations

import torch
from torch import nn


def tokens_to_pixels(scores: torch.Tensor, *, patch: int) -> torch.Tensor:
    """(B, g*g) or (B, g, g) token scores -> (B, g*patch, g*patch) pixel map (nearest)."""
    if scores.ndim == 2:
        g = int(round(scores.shape[1] ** 0.5))
        if g * g != scores.shape[1]:
            raise ValueError(f"scores: expected a square number of tokens, got {scores.shape[1]}")
        scores = scores.reshape(len(scores), g, g)
    return scores.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)


def reads_cls_only(model: nn.Module) -> bool:
    """True when the model's outputs read the final [CLS] state alone (`ViTConfig.readout` "cls")."""
    return getattr(getattr(model, "cfg", None), "readout", "cls") == "cls"


def read_rows(model: nn.Module, h: torch.Tensor, mats: torch.Tensor, target: int | None) -> torch.Tensor:
    """The rows of per-point token-mixing matrices ``mats`` (B, ..., T, T) that output ``target``
    reads, over the patch tokens: (B, ..., T-1).

    For the default [CLS] readout that is the [CLS] row. For a readout of the patch tokens
    (`ViTConfig.readout`), the rows are weighted by each final token state's share of the
    output (`ViTRegressor.readout_shares`), so the attention-family maps follow what the
    output actually reads. What the "spatial_embed" readout reads from a token's embedding
    passes no attention: it goes to that token itself (the identity row).
    """
    if reads_cls_only(model):
        return mats[..., 0, 1:]
    if target is None:
        raise ValueError("target: this model reads the patch tokens, so its attention maps differ per output; pass target=k")
    r, r_embed = model.readout_shares(h, target, split=True)  # (B, T) each
    spec = "bt,bts->bs" if mats.ndim == 3 else "bt,bhts->bhs"
    rows = torch.einsum(spec, r, mats)
    if mats.ndim == 4:
        r_embed = r_embed[:, None]
    return (rows + r_embed)[..., 1:]


def linear_path_kind(model: nn.Module) -> str | None:
    """What a model's linear path reads, in words (None: it has none): the token embeddings
    (readout "spatial_embed") and/or the pixels through a fixed ridge base (``linear_base``)."""
    cfg = getattr(model, "cfg", None)
    parts = []
    if getattr(cfg, "readout", None) == "spatial_embed":
        parts.append("the tokens' embeddings (--readout spatial_embed)")
    if getattr(cfg, "linear_base", False):
        parts.append("ridge on the pixels and their wavelet moduli (--prefer-ridge)" if getattr(cfg, "base_wavelets", 0)
                     else "ridge on the pixels (--prefer-ridge)")
    return " and ".join(parts) or None


def linear_path_shares(model: nn.Module, x: torch.Tensor, targets, *, batch: int = 256) -> list[float] | None:
    """Per output in ``targets``, the mean share over the points ``x`` (B, C, w, w) of what it reads
    from its linear path (`linear_path_kind`: the tokens' embeddings, the pixels' ridge base), which
    passes no attention: sum_t |c'_t| / sum_t (|c_t| + |c'_t|) per point (`ViTRegressor.readout_parts`).
    One forward pass per batch serves every target. None for the other readouts, which have no
    such path."""
    if linear_path_kind(model) is None:
        return None
    targets = list(targets)
    was_training = model.training
    model.eval()
    try:
        sums, device = torch.zeros(len(targets)), next(model.parameters()).device
        with torch.no_grad():
            for i in range(0, len(x), batch):
                h, _ = model.encode(x[i:i + batch].to(device))
                for j, k in enumerate(targets):
                    sums[j] += model.readout_shares(h, k, split=True)[1].sum().cpu()
        return [float(v) / len(x) for v in sums] if len(x) else None
    finally:
        model.train(was_training)


def linear_path_share(model: nn.Module, x: torch.Tensor, target: int, *, batch: int = 256) -> float | None:
    """`linear_path_shares` of one output."""
    shares = linear_path_shares(model, x, [target], batch=batch)
    return None if shares is None else shares[0]


class Explainer:
    """Base class: ``attribute(patches, target=k) -> (B, w, w)``.

    Subclasses set ``name`` and implement `_attribute`. ``needs_target`` is False for
    methods whose map does not depend on the output (raw attention, rollout).
    """

    name = "base"
    needs_target = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def _check(self, patches: torch.Tensor, target: int | None) -> None:
        cfg = getattr(self.model, "cfg", None)
        if not isinstance(patches, torch.Tensor) or patches.ndim != 4:
            shape = tuple(patches.shape) if hasattr(patches, "shape") else type(patches).__name__
            raise ValueError(f"patches: expected a (B, C, w, w) tensor, got {shape}")
        if cfg is not None and target is not None and not 0 <= target < cfg.n_outputs:
            raise ValueError(f"target: expected an output index in [0, {cfg.n_outputs}), got {target}")
        if self.needs_target and target is None:
            raise ValueError(f"target: the {self.name!r} method explains one output; pass target=k")

    def attribute(self, patches: torch.Tensor, *, target: int | None = None) -> torch.Tensor:
        """(B, C, w, w) patches -> (B, w, w) attribution maps for output `target`."""
        self._check(patches, target)
        was_training = self.model.training
        self.model.eval()
        try:
            return self._attribute(patches, target=target).detach().float()
        finally:
            self.model.train(was_training)

    def _attribute(self, patches: torch.Tensor, *, target: int | None) -> torch.Tensor:
        raise NotImplementedError
