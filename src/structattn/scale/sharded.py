"""A Lightning ``predict`` loop whose DDP ranks each write their share into a shard HDF5 file.

Shared by explaining (`structattn.scale.explain_points`) and dense prediction
(`structattn.maps.predict_dense`): each process (rank) takes a contiguous range of the n items
(`shard_range`), its ``predict_step`` returns ``(item positions, {group: {target: (b, ...)}})``
and a `BasePredictionWriter` writes every batch into ``shard_dir/rank<r>.h5`` as it comes
(`ShardWriter`). After a barrier, `predict_to_shards` returns the shard paths on global rank 0
(None on the others), which merges them with `structattn.scale.h5stream.merge_shards`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset, Sampler

from .h5stream import ShardWriter
from .parallel import Parallel, trainer_kwargs


def shard_range(n: int, rank: int, world: int, align: int = 1) -> tuple[int, int]:
    """Contiguous [lo, hi) share of `n` items for `rank` of `world`.

    Shares are whole runs of `align` items (the last one may be short), so that with
    ``align=batch`` every rank sees the same batches as one process would; their sizes differ
    by at most `align` items (1 with the default).
    """
    nb = -(-int(n) // int(align))
    return min(n, nb * rank // world * align), min(n, nb * (rank + 1) // world * align)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RankRangeSampler(Sampler):
    """Items lo..hi of this process (read from the initialised process group when iterated)."""

    def __init__(self, n: int, align: int = 1) -> None:
        self.n, self.align = int(n), int(align)

    def _range(self) -> range:
        return range(*shard_range(self.n, *_rank_world(), align=self.align))

    def __iter__(self):
        return iter(self._range())

    def __len__(self) -> int:
        return len(self._range())


class ShardPredictionWriter(BasePredictionWriter):
    """Each rank writes its batches into ``shard_dir/rank<r>.h5`` as they come.

    ``groups`` x ``targets`` datasets of (share, *item_shape) float32 (`ShardWriter`).
    """

    def __init__(self, shard_dir: Path, *, n: int, groups, targets, item_shape: tuple, chunk: int,
                 align: int = 1) -> None:
        super().__init__(write_interval="batch")
        self.shard_dir, self.n, self.align = Path(shard_dir), int(n), int(align)
        self.groups, self.targets, self.item_shape, self.chunk = list(groups), list(targets), tuple(item_shape), chunk
        self.writer: ShardWriter | None = None

    def on_predict_start(self, trainer, pl_module) -> None:
        lo, hi = shard_range(self.n, trainer.global_rank, trainer.world_size, align=self.align)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.writer = ShardWriter(self.shard_dir / f"rank{trainer.global_rank:05d}.h5", start=lo, n=hi - lo,
                                  methods=self.groups, targets=self.targets, item_shape=self.item_shape,
                                  chunk=self.chunk)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        j, values = prediction
        if len(j) and not np.array_equal(j, np.arange(j[0], j[0] + len(j))):
            raise RuntimeError("a batch of non-contiguous items reached the shard writer")
        self.writer.write(int(j[0]), values)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.writer.close()
        trainer.strategy.barrier("structattn-shards-written")


def predict_to_shards(module: L.LightningModule, dataset: Dataset, shard_dir: str | Path, *, groups, targets,
                      item_shape: tuple, batch: int, parallel: Parallel | None = None, progress: bool = False,
                      inference_mode: bool = True, align_to_batches: bool = False) -> list[Path] | None:
    """Run ``module.predict_step`` over `dataset` (items ``(j, x)``) on every rank; write shards.

    ``align_to_batches``: every rank's share is whole batches of one process's batching, so
    each batch holds the same items as with one process (results then match one process
    bit for bit up to the kernels' own nondeterminism); with fewer batches than ranks the
    shares are single items.

    Returns the shard paths (one per rank, in rank order) on global rank 0, None on the others.
    """
    par = parallel or Parallel()
    shard_dir = Path(shard_dir)
    n = len(dataset)
    if n < par.world_size:  # Lightning refuses a rank without a batch
        raise ValueError(f"--devices: {par.world_size} processes for {n} item(s); use at most {n}")
    # whole batches per rank, unless there are fewer batches than ranks (every rank needs one)
    align = int(batch) if align_to_batches and -(-n // int(batch)) >= par.world_size else 1
    writer_cb = ShardPredictionWriter(shard_dir, n=n, groups=groups, targets=targets, item_shape=item_shape,
                                      chunk=batch, align=align)
    loader = DataLoader(dataset, batch_size=int(batch), sampler=RankRangeSampler(n, align=align))
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*predict_dataloader.*")
        trainer = L.Trainer(**trainer_kwargs(par), logger=False, enable_checkpointing=False,
                            enable_model_summary=False, enable_progress_bar=progress, callbacks=[writer_cb],
                            inference_mode=inference_mode, use_distributed_sampler=False,
                            default_root_dir=str(shard_dir))
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    if not trainer.is_global_zero:
        return None
    return [shard_dir / f"rank{r:05d}.h5" for r in range(trainer.world_size)]
