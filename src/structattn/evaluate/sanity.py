"""Model-parameter randomisation check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

An explanation that stays the same when the model's weights are replaced by random ones
explains the input (or the architecture), not what the model learned. We re-initialise
*all* parameters (cascading to the full model, with a fixed seed), explain the same points
again and report the mean Spearman rank correlation of ``|a|`` between the two: near 1
fails the check, near 0 passes.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from ._tokens import token_scores
from .agreement import _spearman_rows


def randomise_parameters(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A deep copy of `model` with every parameter re-drawn (seeded); the original is kept.

    Modules with ``reset_parameters`` use their own default init; parameters owned directly
    by other modules (e.g. a ViT's [CLS] and position embeddings) are drawn N(0, 0.02²),
    the usual transformer init (zeros would make every token position identical).
    """
    rnd = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in rnd.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
            else:
                for p in mod.parameters(recurse=False):
                    nn.init.trunc_normal_(p, std=0.02)
    return rnd


def randomisation_check(
    make_explainer: Callable[[nn.Module], object],
    model: nn.Module,
    patches: torch.Tensor,
    target: int | None,
    *,
    seed: int = 0,
    maps=None,
) -> dict:
    """Explain `patches` with the trained and a re-initialised model; compare the maps.

    Args:
        make_explainer: model -> explainer (e.g. ``lambda m: make_explainer("rollout", m)``).
        model: the trained model (left unchanged).
        patches: (B, C, w, w).
        target: output index (None for target-free methods).
        seed: seed of the re-initialisation.
        maps: the trained model's maps if already computed (saves a pass).

    Returns:
        ``{"spearman": mean rank correlation, "spearman_per_point": list}``.

    Example:
        >>> from structattn.explain import make_explainer
        >>> from structattn.nets.vit import ViTConfig, ViTRegressor
        >>> m = ViTRegressor(ViTConfig(in_channels=1, window=8, patch=4))
        >>> r = randomisation_check(lambda mm: make_explainer("rollout", mm), m, torch.rand(2, 1, 8, 8), None)
        >>> -1 <= r["spearman"] <= 1
        True
    """
    patch = model.cfg.patch
    if maps is None:
        maps = make_explainer(model).attribute(patches, target=target)
    rnd = randomise_parameters(model, seed=seed)
    maps_rnd = make_explainer(rnd).attribute(patches, target=target)
    a, b = token_scores(maps, patch=patch), token_scores(maps_rnd, patch=patch)
    per = [_spearman_rows(x[None], y[None]) for x, y in zip(a, b)]
    return {"spearman": float(np.nanmean(per)) if not np.all(np.isnan(per)) else float("nan"),
            "spearman_per_point": [float(v) for v in per]}
