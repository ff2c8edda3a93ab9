"""Explain many points with bounded memory, in one process or several (Lightning predict).

`explain_points` runs a Lightning ``predict`` loop over a `PatchDataset` (patches cut on
the fly): each process (DDP rank) takes a contiguous range of the points, explains it batch
by batch and writes every batch's maps into its own shard HDF5 file as it goes
(`structattn.scale.sharded.predict_to_shards`, shared with dense prediction); when all ranks
are done, global rank 0 merges the shards, chunk by chunk, into one ``explanations.h5``
(`ExplanationsWriter`, atomic). Nothing holds all the
patches or all the maps: peak memory is set by the batch.

A point's map depends only on its own patch (the ViT has no batch statistics), so the
result does not depend on the number of processes beyond floating-point noise of batched
matrix products (tested: 2 processes against 1).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..explain import make_explainer
from .h5stream import ExplanationsWriter, merge_shards
from .parallel import Parallel
from .patches import PatchDataset, PatchSource
from .sharded import shard_range  # noqa: F401  (re-exported: structattn.scale.explain.shard_range)
from .sharded import predict_to_shards


def explain_batch(model, x: torch.Tensor, *, methods: Sequence[str], targets: Sequence[int],
                  target_names: Sequence[str], options: dict | None = None) -> dict:
    """{method: {target name: (b, w, w) float32 numpy}} for one batch of standardised patches."""
    options = options or {}
    out: dict = {}
    for name in methods:
        ex = make_explainer(name, model, **options.get(name, {}))
        if not ex.needs_target:  # raw attention, rollout: one map for every target
            a = ex.attribute(x).float().cpu().numpy()
            out[name] = {t: a for t in target_names}
        else:
            out[name] = {t: ex.attribute(x, target=k).float().cpu().numpy() for k, t in zip(targets, target_names)}
    return out


class ExplainModule(L.LightningModule):
    """predict_step = `explain_batch`; returns (item positions, maps) for the writer."""

    def __init__(self, model: torch.nn.Module, *, methods, targets, target_names, options=None) -> None:
        super().__init__()
        self.model = model
        self.methods, self.targets, self.target_names = list(methods), list(targets), list(target_names)
        self.options = options or {}

    def predict_step(self, batch, batch_idx):
        j, x = batch
        maps = explain_batch(self.model, x, methods=self.methods, targets=self.targets,
                             target_names=self.target_names, options=self.options)
        return j.cpu().numpy(), maps


def explain_points(
    model: torch.nn.Module,
    source: PatchSource,
    out: str | Path,
    *,
    methods: Sequence[str],
    target_names: Sequence[str],
    index: np.ndarray | None = None,
    point_index: np.ndarray | None = None,
    attrs: dict | None = None,
    batch: int = 64,
    parallel: Parallel | None = None,
    options: dict | None = None,
    shard_dir: str | Path | None = None,
    keep_existing: bool = True,
    progress: bool = False,
) -> Path | None:
    """Explain the points `index` of `source` with every method and target; write `out`.

    Args:
        model: a trained `ViTRegressor` (its outputs are the targets, in order).
        source: patches on demand (standardised as the model was trained).
        out: the explanations.h5 to write (atomically; other methods of an existing file
            with the same point_index are kept).
        methods: explanation methods (`structattn.explain.EXPLAINERS` keys).
        target_names: one name per model output.
        index: which points of `source` (default all), in file order.
        point_index: ``/point_index`` of the file (default `index`).
        batch: points per batch and per HDF5 chunk; peak memory grows with it.
        parallel: processes / devices / nodes (default one CPU process).
        shard_dir: where ranks write their shards (default beside `out`; must be on a file
            system every node sees).

    Returns:
        `out` on global rank 0, None on the other ranks.
    """
    par = parallel or Parallel()
    out = Path(out)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"--batch: expected a number of points >= 1, got {batch!r}")
    dataset = PatchDataset(source, index)
    n = len(dataset)
    if n == 0:
        raise ValueError("points: nothing to explain (0 points)")
    pidx = dataset.index if point_index is None else np.asarray(point_index, np.int64)
    if len(pidx) != n:
        raise ValueError(f"point_index: expected {n} entries, got {len(pidx)}")
    window = source.window
    shard_dir = Path(shard_dir) if shard_dir is not None else out.parent / f".{out.name}.shards"
    module = ExplainModule(model, methods=methods, targets=range(len(target_names)), target_names=target_names,
                           options=options)
    shards = predict_to_shards(module, dataset, shard_dir, groups=methods, targets=target_names,
                               item_shape=(window, window), batch=batch, parallel=par, progress=progress,
                               inference_mode=False)  # gradattn, IG and LRP need gradients
    if shards is None:
        return None
    try:
        with ExplanationsWriter(out, point_index=pidx, methods=methods, targets=target_names, window=window,
                                attrs=attrs, chunk=batch, keep_existing=keep_existing) as w:
            merge_shards(shards, w)
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
    return out
