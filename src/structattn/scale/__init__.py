"""Scale (issue 16): bounded memory and several processes, GPUs or nodes.

- `patches`: `PatchSource` / `PatchDataset`, patches cut on demand from a (memory-mapped) image
- `h5stream`: explanations.h5 written batch by batch (chunked, compressed, atomic) and shard merging
- `parallel`: ``--accelerator/--devices/--num-nodes/--strategy/--precision`` -> Lightning
- `predict`: ensemble mean and calibrated std at positions, batch by batch (`predict`, `suggest`)
- `sharded`: `predict_to_shards`, a Lightning predict loop whose DDP ranks write shard HDF5 files
- `explain`: `explain_points`, a Lightning predict loop whose ranks write shards, merged by rank 0
- `precision`: the bf16-autocast check of attention maps against fp32
- `memory`: freed heap pages back to the OS in long batch loops (glibc ``malloc_trim``)
"""

from .explain import explain_batch, explain_points, shard_range
from .h5stream import ExplanationsWriter, merge_shards
from .parallel import Parallel, check_parallel, global_rank, trainer_kwargs
from .patches import PatchDataset, PatchSource

__all__ = ["ExplanationsWriter", "Parallel", "PatchDataset", "PatchSource", "check_parallel", "explain_batch",
           "explain_points", "global_rank", "merge_shards", "shard_range", "trainer_kwargs"]
