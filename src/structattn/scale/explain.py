"""Explain many points with bounded memory, in one process or several (Lightning predict).

`explain_points` runs a Lightning ``predict`` loop over a `PatchDataset` (patches cut on
the fly): each process (DDP rank) takes a contiguous range of the points, explains it batch
by batch and writes every batch's maps into its own shard HDF5 file as it goes (a
`BasePredictionWriter`); when all ranks are done, global rank 0 merges the shards, chunk by
chunk, into one ``explanations.h5`` (`ExplanationsWriter`, atomic). Nothing holds all the
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
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Sampler

from ..explain import make_explainer
from .h5stream import ExplanationsWriter, ShardWriter, merge_shards
from .parallel import Parallel, trainer_kwargs
from .patches import PatchDataset, PatchSource


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [lo, hi) share of `n` items for `rank` of `world` (sizes differ by at most 1)."""
    return n * rank // world, n * (rank + 1) // world


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RankRangeSampler(Sampler):
    """Items lo..hi of this process (read from the initialised process group when iterated)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def _range(self) -> range:
        return range(*shard_range(self.n, *_rank_world()))

    def __iter__(self):
        return iter(self._range())

    def __len__(self) -> int:
        return len(self._range())


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


class ShardPredictionWriter(BasePredictionWriter):
    """Each rank writes its batches into ``shard_dir/rank<r>.h5`` as they come."""

    def __init__(self, shard_dir: Path, *, n: int, methods, target_names, window: int, chunk: int) -> None:
        super().__init__(write_interval="batch")
        self.shard_dir, self.n = Path(shard_dir), int(n)
        self.methods, self.target_names, self.window, self.chunk = list(methods), list(target_names), window, chunk
        self.writer: ShardWriter | None = None

    def on_predict_start(self, trainer, pl_module) -> None:
        lo, hi = shard_range(self.n, trainer.global_rank, trainer.world_size)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.writer = ShardWriter(self.shard_dir / f"rank{trainer.global_rank:05d}.h5", start=lo, n=hi - lo,
                                  methods=self.methods, targets=self.target_names, window=self.window,
                                  chunk=self.chunk)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        j, maps = prediction
        if len(j) and not np.array_equal(j, np.arange(j[0], j[0] + len(j))):
            raise RuntimeError("explain: a batch of non-contiguous points reached the shard writer")
        self.writer.write(int(j[0]), maps)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.writer.close()
        trainer.strategy.barrier("structattn-shards-written")


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
    writer_cb = ShardPredictionWriter(shard_dir, n=n, methods=methods, target_names=target_names, window=window,
                                      chunk=batch)
    module = ExplainModule(model, methods=methods, targets=range(len(target_names)), target_names=target_names,
                           options=options)
    loader = DataLoader(dataset, batch_size=int(batch), sampler=RankRangeSampler(n))
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*predict_dataloader.*")
        trainer = L.Trainer(**trainer_kwargs(par), logger=False, enable_checkpointing=False,
                            enable_model_summary=False, enable_progress_bar=progress, callbacks=[writer_cb],
                            inference_mode=False,  # gradattn, IG and LRP need gradients
                            use_distributed_sampler=False, default_root_dir=str(shard_dir))
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    if not trainer.is_global_zero:
        return None
    try:
        shards = [shard_dir / f"rank{r:05d}.h5" for r in range(trainer.world_size)]
        with ExplanationsWriter(out, point_index=pidx, methods=methods, targets=target_names, window=window,
                                attrs=attrs, chunk=batch, keep_existing=keep_existing) as w:
            merge_shards(shards, w)
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
    return out
