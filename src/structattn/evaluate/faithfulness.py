"""Deletion and insertion curves for regression outputs (after Petsiuk et al. 2018).

Tokens are removed (deletion) or revealed (insertion) in the order of decreasing ``|a|``,
a removed token taking the ``baseline`` value (0 = the training-mean patch after channel
standardisation). With ``x_k`` the patch after ``k`` steps, ``b`` the all-baseline patch
and ``D = mean_i |f(x_i) - f(b_i)|`` over the explained points, the curves are

* deletion  ``d_k = mean_i |f(x_i^k) - f(b_i)| / D``       (1 -> 0; lower AUC is better)
* insertion ``s_k = 1 - mean_i |f(x_i^k) - f(x_i)| / D``   (0 -> 1; higher AUC is better)

Normalising by the *mean* output gap (not per point) keeps points whose prediction happens
to sit at the baseline's from blowing the curve up. AUC is the trapezoid over the fraction
of tokens in [0, 1]. The same curves for a seeded random order are the reference: a
faithful map has deletion AUC below and insertion AUC above the random order's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._tokens import token_scores


def _curves(model, patches, order, *, targets, baseline, steps, patch, insert):
    """One curve per output in `targets` for one token order: the forwards are shared."""
    b, c, w, _ = patches.shape
    g = w // patch
    m = g * g
    counts = np.unique(np.linspace(0, m, steps + 1).round().astype(int))  # tokens changed at each step
    base = torch.full_like(patches, baseline)
    tg = list(targets)
    with torch.no_grad():
        f_x = model(patches)[:, tg]
        f_b = model(base)[:, tg]
        gap = (f_x - f_b).abs().mean(0).clamp_min(1e-12)
        ranks = torch.empty(b, m, dtype=torch.long)
        ranks.scatter_(1, torch.as_tensor(order), torch.arange(m).expand(b, m).clone())  # rank of each token
        vals = []
        for k in counts:
            chosen = (ranks < int(k)).float().reshape(b, 1, g, g)
            chosen = chosen.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
            if insert:
                xk = base + chosen * (patches - base)
                vals.append((1 - (model(xk)[:, tg] - f_x).abs().mean(0) / gap).double().numpy())
            else:
                xk = patches + chosen * (base - patches)
                vals.append(((model(xk)[:, tg] - f_b).abs().mean(0) / gap).double().numpy())
    frac = counts / m
    return frac, np.stack(vals)  # (S,), (S, len(targets))


def deletion_insertion(
    model: nn.Module,
    patches: torch.Tensor,
    maps,
    *,
    target: int,
    baseline: float = 0.0,
    steps: int | None = None,
    patch: int | None = None,
    seed: int = 0,
    with_random: bool = True,
) -> dict:
    """Deletion and insertion curves and AUCs of `maps`, and of a random token order.

    Args:
        model: maps (B, C, w, w) -> (B, K); put in eval mode by the caller.
        patches: (B, C, w, w) the explained patches.
        maps: (B, w, w) attributions for output `target` (ranked by magnitude).
        target: output index.
        baseline: value of removed tokens.
        steps: number of curve steps; default one per token.
        patch: token side; default ``model.cfg.patch``.
        seed: seeds the random-order reference.
        with_random: also compute the random-order curves (they do not depend on `maps`:
            compute them once per target and skip them for the other methods).

    Returns:
        ``{"fraction": (S,), "deletion": (S,), "insertion": (S,), "deletion_auc",
        "insertion_auc", "random_deletion", "random_insertion", "random_deletion_auc",
        "random_insertion_auc"}`` (curves as lists, AUCs as floats).

    Example:
        >>> from structattn.nets.vit import ViTConfig, ViTRegressor
        >>> m = ViTRegressor(ViTConfig(in_channels=1, window=8, patch=4)).eval()
        >>> r = deletion_insertion(m, torch.rand(2, 1, 8, 8), torch.rand(2, 8, 8), target=0)
        >>> sorted(r)[:2]
        ['deletion', 'deletion_auc']
    """
    return deletion_insertion_targets(
        model, patches, maps, targets=[target], baseline=baseline, steps=steps, patch=patch, seed=seed,
        with_random=with_random,
    )[0]


def deletion_insertion_targets(
    model: nn.Module,
    patches: torch.Tensor,
    maps,
    *,
    targets,
    baseline: float = 0.0,
    steps: int | None = None,
    patch: int | None = None,
    seed: int = 0,
    with_random: bool = True,
    with_maps: bool = True,
) -> list[dict]:
    """`deletion_insertion` of one token order for several outputs at once (one list entry per
    target, equal to ``deletion_insertion(..., target=t)``): a map that does not depend on the
    target (raw attention, rollout, the centre prior) and the random order need the perturbed
    forwards only once. ``with_maps=False`` computes the random-order curves alone (`maps`
    then only gives the shape).
    """
    patch = model.cfg.patch if patch is None else patch
    if not isinstance(patches, torch.Tensor) or patches.ndim != 4:
        raise ValueError(f"patches: expected a (B, C, w, w) tensor, got {getattr(patches, 'shape', type(patches))}")
    scores = token_scores(maps, patch=patch)  # (B, g*g)
    if scores.shape[0] != patches.shape[0] or scores.shape[1] * patch**2 != patches.shape[-1] ** 2:
        raise ValueError(f"maps: expected {(patches.shape[0],) + tuple(patches.shape[-2:])}, got {np.shape(maps)}")
    m = scores.shape[1]
    steps = m if steps is None else int(steps)
    if not 1 <= steps <= m:
        raise ValueError(f"steps: expected an integer in [1, {m}] (tokens), got {steps}")
    targets = [int(t) for t in targets]
    n_out = getattr(getattr(model, "cfg", None), "n_outputs", None)
    if not targets or (n_out is not None and not all(0 <= t < n_out for t in targets)):
        raise ValueError(f"targets: expected output indices in [0, {n_out}), got {targets}")
    rng = np.random.default_rng(seed)
    # Stable sort of -score: ties (e.g. a flat map) fall back to token order, deterministic.
    order = np.argsort(-scores, axis=1, kind="stable")
    rand = np.stack([rng.permutation(m) for _ in range(len(scores))])
    out: list[dict] = [{} for _ in targets]
    orders = [("", order)] if with_maps else []
    orders += [("random_", rand)] if with_random else []
    for name, o in orders:
        for kind in ("deletion", "insertion"):
            frac, curves = _curves(
                model, patches, o, targets=targets, baseline=baseline, steps=steps, patch=patch,
                insert=kind == "insertion",
            )
            for j, d in enumerate(out):
                d[name + kind] = curves[:, j].tolist()
                d[name + kind + "_auc"] = float(np.trapezoid(curves[:, j], frac))
    for d in out:
        d["fraction"] = frac.tolist()
    return out
