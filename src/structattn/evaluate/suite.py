"""All scores for several methods on the same points: what `bench/` and the CLI call."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..explain import ATTENTION_FAMILY, make_explainer
from .agreement import agreement
from .cost import measure_cost
from .faithfulness import deletion_insertion_targets
from .ground_truth import ground_truth_scores
from .sanity import randomisation_check


def evaluate_methods(
    model: nn.Module,
    patches: torch.Tensor,
    *,
    methods: Sequence[str],
    targets: Sequence[int],
    target_names: Sequence[str] | None = None,
    masks: dict | None = None,
    within: dict | None = None,
    options: dict | None = None,
    include_prior: bool = True,
    faithfulness_steps: int | None = 16,
    randomisation_points: int | None = 16,
    seed: int = 0,
    warmup: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> tuple[dict, dict]:
    """Explain `patches` with every method for every target and score everything.

    Args:
        model: a trained `ViTRegressor`.
        patches: (M, C, w, w) the points to explain.
        methods: registry keys (`structattn.explain.EXPLAINERS`).
        targets: output indices to explain.
        target_names: names for the result keys (default ``"0", "1", ...``).
        masks: optional target name -> (M, w, w) bool ground-truth regions.
        within: optional target name -> (M, w, w) bool region the ground truth lives in
            (e.g. the rule's disk); adds ``auroc_within``, which a centre prior cannot game.
        options: optional method -> keyword options for its explainer.
        include_prior: also score the centre prior (key ``"centre"``).
        faithfulness_steps: deletion/insertion steps (None: one per token).
        randomisation_points: points used for the randomisation check (the first ones;
            None: all). Re-explaining costs as much as explaining.
        seed: seeds random orders and the re-initialisation.
        warmup: explain one point untimed first, so one-time costs (imports, allocator,
            shap's first call) do not land on whichever method or target runs first.
        on_step: called with a short label before each unit of work (CLI progress).

    Returns:
        (scores, maps): ``scores[target][method]`` a dict of ``auroc``, ``mass_ratio``,
        ``deletion_auc``, ``insertion_auc``, ``randomisation_spearman``, cost fields and
        ``agreement_spearman``/``agreement_topk`` rows; ``scores[target]["_random"]`` the
        random-order AUCs and ``scores[target]["_agreement"]`` the matrices;
        ``maps[target][method]`` the (M, w, w) float32 numpy maps.
    """
    options = options or {}
    names = [str(t) for t in targets] if target_names is None else list(target_names)
    if len(names) != len(targets):
        raise ValueError(f"target_names: expected {len(targets)} names, got {len(names)}")
    all_methods = list(methods) + (["centre"] if include_prior else [])
    model.eval()
    n_tokens = model.cfg.grid**2
    if faithfulness_steps is not None:
        faithfulness_steps = min(int(faithfulness_steps), n_tokens)  # never finer than one token
    n_rand = len(patches) if randomisation_points is None else min(randomisation_points, len(patches))
    scores: dict = {}
    maps: dict = {}
    shared: dict = {}  # target-free methods are explained once and reused for every target
    for t, tname in zip(targets, names):
        scores[tname], maps[tname] = {}, {}
        for name in all_methods:
            if on_step:
                on_step(f"{name} / {tname}")
            factory = lambda m, name=name: make_explainer(name, m, **options.get(name, {}))  # noqa: E731
            ex = factory(model)
            tgt = t if ex.needs_target else None
            if not ex.needs_target and name in shared:
                a, cost, rnd, dis = shared[name]
                di = dis[list(targets).index(t)]
            else:
                if warmup:
                    ex.attribute(patches[:1], target=tgt)
                a, cost = measure_cost(ex, patches, target=tgt)
                rnd = randomisation_check(factory, model, patches[:n_rand], tgt, seed=seed, maps=a[:n_rand])
                # a map for every target (not ex.needs_target): its curves for all of them at once
                scored = list(targets) if not ex.needs_target else [t]
                dis = deletion_insertion_targets(
                    model, patches, a, targets=scored, steps=faithfulness_steps, seed=seed, with_random=False
                )
                di = dis[scored.index(t)]
                if not ex.needs_target:
                    shared[name] = (a, cost, rnd, dis)
            row = dict(cost)
            row["randomisation_spearman"] = rnd["spearman"]
            row["deletion_auc"], row["insertion_auc"] = di["deletion_auc"], di["insertion_auc"]
            row["curves"] = {k: di[k] for k in ("fraction", "deletion", "insertion")}
            if masks is not None and tname in masks:
                row.update(ground_truth_scores(a, masks[tname]))
                if within is not None and tname in within:
                    row["auroc_within"] = ground_truth_scores(a, masks[tname], within=within[tname])["auroc"]
            row["attention_family"] = name in ATTENTION_FAMILY
            scores[tname][name] = row
            maps[tname][name] = a.numpy().astype(np.float32)
        # Random order: same reference for every method and (one seeded order) every target.
        if "_random" not in shared:
            shared["_random"] = deletion_insertion_targets(
                model, patches, maps[tname][all_methods[0]], targets=targets, steps=faithfulness_steps, seed=seed,
                with_maps=False,
            )
        di = shared["_random"][list(targets).index(t)]
        scores[tname]["_random"] = {
            "deletion_auc": di["random_deletion_auc"],
            "insertion_auc": di["random_insertion_auc"],
            "curves": {"fraction": di["fraction"], "deletion": di["random_deletion"], "insertion": di["random_insertion"]},
        }
        rho, top = agreement(maps[tname], patch=model.cfg.patch)
        scores[tname]["_agreement"] = {"spearman": rho, "topk": top}
        for name in all_methods:
            scores[tname][name]["agreement_spearman"] = rho[name]
            scores[tname][name]["agreement_topk"] = top[name]
    return scores, maps


def scores_for_json(scores: dict, *, curves: bool = True) -> dict:
    """`evaluate_methods` scores as strict JSON (NaN/inf -> None), optionally without curves.

    Example:
        >>> scores_for_json({"V+": {"ig": {"auroc": float("nan"), "curves": {}}}}, curves=False)
        {'V+': {'ig': {'auroc': None}}}
    """

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items() if curves or k != "curves"}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (float, np.floating)):
            return float(v) if np.isfinite(v) else None
        if isinstance(v, np.integer):
            return int(v)
        return v

    return clean(scores)


TABLE_COLUMNS = (
    ("auroc", "GT AUROC"),
    ("auroc_within", "in-region AUROC"),
    ("mass_ratio", "mass ratio"),
    ("deletion_auc", "deletion AUC (lower better)"),
    ("insertion_auc", "insertion AUC (higher better)"),
    ("agreement_mean", "mean ρ with other methods"),
    ("randomisation_spearman", "randomisation ρ (near 0 passes)"),
    ("forwards_per_point", "forwards / point"),
    ("backwards_per_point", "backwards / point"),
    ("seconds_per_point", "s / point"),
)


def comparison_rows(scores: dict) -> list[dict]:
    """Flat rows (target, method, the `TABLE_COLUMNS` keys) for a report table.

    The random order appears as method ``"random order"`` with its deletion/insertion AUCs;
    ``agreement_mean`` is the mean Spearman with the other methods (centre prior excluded).

    Example:
        >>> s = {"V+": {"ig": {"auroc": 0.9, "agreement_spearman": {"ig": 1.0, "shap": 0.5}},
        ...             "_random": {"deletion_auc": 0.5, "insertion_auc": 0.4}}}
        >>> [r["method"] for r in comparison_rows(s)], comparison_rows(s)[0]["agreement_mean"]
        (['ig', 'random order'], 0.5)
    """
    rows = []
    for target, per in scores.items():
        for method, r in per.items():
            if method.startswith("_"):
                continue
            rho = r.get("agreement_spearman", {})
            others = [v for k, v in rho.items() if k not in (method, "centre") and v is not None and np.isfinite(v)]
            row = {"target": target, "method": method}
            for key, _ in TABLE_COLUMNS:
                row[key] = float(np.mean(others)) if key == "agreement_mean" and others else r.get(key)
            rows.append(row)
        if "_random" in per:
            rows.append({"target": target, "method": "random order",
                         **{k: per["_random"].get(k) for k, _ in TABLE_COLUMNS}})
    return rows
