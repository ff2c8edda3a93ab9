"""`structattn explain RUN`: explain a finished run with several methods and score them.

Kept in its own module (not in pipeline.py) so the explanation stage can be re-run on a
run folder without retraining: it reads the saved model and data, explains the chosen
points, adds ``/<method>/<target>`` to ``explanations.h5`` (atomically), the scores to
``metrics.json`` under ``explanations`` and re-writes the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data.patches import extract_patches
from .data.truth import truth_masks, truth_within
from .evaluate import evaluate_methods, scores_for_json
from .explain import EXPLAINERS
from .explain.base import linear_path_kind, linear_path_shares
from .points import check_points_spec, choose_points
from .runfolder import RunFolder, write_explanations


SCORE_POINTS = 256  # points scored (ground truth, faithfulness, randomisation); all maps are written


def parse_methods(spec: str | Sequence[str]) -> tuple[str, ...]:
    """"attention,rollout" or a sequence -> validated tuple of registry keys."""
    names = tuple(s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip())
    bad = [n for n in names if n not in EXPLAINERS]
    if not names or bad:
        raise ValueError(f"--methods: expected a comma-separated subset of {sorted(EXPLAINERS)}, got {spec!r}")
    return names


def _points(split: np.ndarray, spec: str, *, seed: int) -> np.ndarray:
    """The pipeline's choice (same points as `structattn run` for the same spec and seed)."""
    check_points_spec(spec)
    return choose_points(np.flatnonzero(split == 2), len(split), spec, seed=seed)


def auroc_lines(section: dict) -> list[str]:
    """One "ground-truth AUROC, <target>: method value, ..." line per target that has ground truth."""
    lines = []
    for target, per in section["scores"].items():
        row = ", ".join(f"{m} {v['auroc']:.2f}" for m, v in per.items()
                        if not m.startswith("_") and v.get("auroc") is not None)
        if row:
            lines.append(f"ground-truth AUROC, {target}: {row}")
    return lines


def explain_run(
    run_dir: str | Path,
    *,
    methods: str | Sequence[str],
    points: str = "test",
    options: dict | None = None,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    sample=None,
    parallel=None,
    batch: int = 64,
    score_points: int = SCORE_POINTS,
    shard_dir: str | Path | None = None,
) -> dict:
    """Explain and score a run folder in place; returns the ``explanations`` metrics section.

    ``sample`` (optional) is the run's already loaded `Sample`, saving a re-read.

    Up to `score_points` points, and one process, everything happens in memory as it always
    did. Beyond that (or with several processes, ``parallel`` a `structattn.scale.Parallel`)
    the maps of all points are explained `batch` at a time from patches cut on the fly and
    streamed into explanations.h5 (`structattn.scale.explain_points`, a Lightning predict
    loop whose DDP ranks write shards), and the scores (ground truth, deletion/insertion,
    randomisation, agreement) are computed on `score_points` points spread evenly over the
    explained ones: memory is bounded by the batch and the scored subset, not by the points.
    """
    rf = RunFolder(run_dir)
    names = parse_methods(methods)
    trained = rf.model
    sample = rf.sample if sample is None else sample
    window = trained.window
    split = rf.predictions["split"]
    index = _points(split, str(points), seed=seed)
    if len(index) == 0:
        raise ValueError(f"--points: no points to explain for {points!r} in {rf.path}")
    if isinstance(score_points, bool) or not isinstance(score_points, (int, np.integer)) or score_points < 1:
        raise ValueError(f"--score-points: expected a number of points >= 1, got {score_points!r}")
    world = 1 if parallel is None else parallel.world_size
    stream = len(index) > score_points or world > 1
    scored = index if not stream else index[np.unique(np.linspace(0, len(index) - 1, min(score_points, len(index)))
                                                      .round().astype(int))]
    pad = "edge" if trained.pad_mode == "exclude" else trained.pad_mode
    patches = extract_patches(sample.image, sample.positions[scored], window=window, pad_mode=pad)
    x = trained.standardise(patches)
    targets = list(trained.target_names)
    masks = {t: m for t in targets if (m := truth_masks(sample, target=t, window=window, index=scored)) is not None}
    within = {t: w for t in masks if (w := truth_within(sample, target=t, window=window)) is not None}
    scores, maps = evaluate_methods(
        trained.model, x, methods=names, targets=list(range(len(targets))), target_names=targets,
        masks=masks or None, within=within or None, options=options, seed=seed, on_step=on_step,
    )
    shares = linear_path_shares(trained.model, torch.as_tensor(x), range(len(targets)))
    linear = {} if shares is None else dict(zip(targets, shares))
    attrs = {"window": window, "patch": trained.model.cfg.patch, "pad_mode": trained.pad_mode}
    if not stream:
        by_method = {m: {t: maps[t][m] for t in targets} for m in list(names) + ["centre"]}
        write_explanations(rf.path / "explanations.h5", point_index=index, maps=by_method, attrs=attrs)
    else:
        from .scale import PatchSource, explain_points

        del maps, patches, x
        if on_step:
            on_step(f"maps of all {len(index)} points, {batch} at a time ({world} process(es))")
        source = PatchSource(sample.image, sample.positions, window=window, pad_mode=trained.pad_mode,
                             mean=trained.channel_mean, std=trained.channel_std)
        explain_points(trained.model, source, rf.path / "explanations.h5", methods=list(names) + ["centre"],
                       target_names=targets, index=index, attrs=attrs, batch=batch, parallel=parallel,
                       options=options, shard_dir=shard_dir)
    section = {
        "n_points": int(len(index)),
        "n_scored": int(len(scored)),
        "scored_on": "every explained point" if not stream else
                     f"{len(scored)} of the {len(index)} explained points, spread evenly (--score-points)",
        "points": str(points),
        "methods": list(names),
        "baseline_value": 0.0,
        "ranking": "|attribution|",
        "scores": scores_for_json(scores),
    }
    if linear:  # --readout spatial_embed, --prefer-ridge: how much of each output passes no attention
        section["linear_path_share"] = linear
        section["linear_path"] = linear_path_kind(trained.model)
    # keep what `run` already recorded there (e.g. its n_points, seconds_per_point)
    rf.update_metrics(explanations={**rf.metrics.get("explanations", {}), **section})
    return section
