"""Several processes, GPUs or nodes through Lightning: options, validation, rank detection.

`Parallel` is what ``--accelerator``, ``--devices``, ``--num-nodes``, ``--strategy`` and
``--precision`` resolve to; `trainer_kwargs` turns it into ``lightning.Trainer`` keywords.
Nothing here opens a process group by hand: Lightning's DDP does (gloo on CPU, NCCL on GPU).

Strategy ``"auto"`` with more than one process picks ``"ddp_spawn"`` when structattn was
started as one plain process (Lightning spawns the workers and the run continues in this
process), and ``"ddp"`` when a launcher already started one process per device (torchrun,
``srun``): then every process runs the whole command and only global rank 0 writes the run
folder (`global_rank`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

STRATEGIES = ("auto", "ddp", "ddp_spawn")
ACCELERATORS = ("cpu", "gpu", "auto")
PRECISIONS = ("32", "bf16-mixed")


def launched_externally() -> bool:
    """True inside a process started by torchrun / srun / Lightning's own DDP launcher."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env):
        return True
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return True
    return "LOCAL_RANK" in env


def global_rank(devices: int = 1) -> int:
    """This process's global rank as its launcher set it (0 for a plain process)."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    if "LOCAL_RANK" in env:  # Lightning's subprocess launcher
        return int(env.get("NODE_RANK", "0")) * int(devices) + int(env["LOCAL_RANK"])
    return 0


@dataclass(frozen=True)
class Parallel:
    """How many processes run training, explaining and predicting, and where.

    Example:
        >>> Parallel(devices=2, strategy="ddp_spawn").world_size
        2
    """

    accelerator: str = "cpu"  # "cpu", "gpu" or "auto"
    devices: int = 1  # processes (CPU) or GPUs per node
    num_nodes: int = 1  # machines; each runs `devices` processes (start them with torchrun / srun)
    strategy: str = "auto"  # "auto", "ddp" (processes started by a launcher) or "ddp_spawn"
    precision: str = "32"  # "32" or "bf16-mixed" (bf16 autocast; on GPU see docs/scale.md for the check)

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def to_dict(self) -> dict:
        return asdict(self)


def check_parallel(*, accelerator: str = "cpu", devices=1, num_nodes=1, strategy: str = "auto",
                   precision: str = "32") -> Parallel:
    """Validate the options at the boundary; one-line ValueError naming the flag."""
    if accelerator == "cuda":
        accelerator = "gpu"
    if accelerator not in ACCELERATORS:
        raise ValueError(f"--accelerator: expected one of {ACCELERATORS}, got {accelerator!r}")
    for flag, v in (("--devices", devices), ("--num-nodes", num_nodes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{flag}: expected a whole number >= 1, got {v!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if str(precision) not in PRECISIONS:
        raise ValueError(f"--precision: expected one of {PRECISIONS}, got {precision!r}")
    precision = str(precision)
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator == "auto":
        accelerator = "gpu" if n_gpu else "cpu"
    if accelerator == "gpu":
        if n_gpu == 0:
            raise ValueError(f"--accelerator: gpu asked for, but torch {torch.__version__} sees no CUDA GPU on this "
                             "machine; use --accelerator cpu")
        if devices > n_gpu:
            raise ValueError(f"--devices: {devices} GPUs asked for, this machine has {n_gpu}")
        if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
            raise ValueError("--precision: bf16-mixed asked for, but this GPU does not support bfloat16; use 32")
    elif devices > (os.cpu_count() or 1):
        raise ValueError(f"--devices: {devices} CPU processes asked for, this machine has {os.cpu_count()} cores")
    if num_nodes > 1 and not launched_externally():
        raise ValueError(f"--num-nodes: {num_nodes} nodes need one process per device started on every node by "
                         "torchrun or srun (see docs/scale.md); this is a plain single process")
    if strategy == "ddp_spawn" and num_nodes > 1:
        raise ValueError("--strategy: ddp_spawn runs on one node; use ddp with --num-nodes > 1")
    return Parallel(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                    precision=precision)


def trainer_kwargs(par: Parallel) -> dict:
    """``lightning.Trainer`` keywords for `par` (strategy resolved, see module doc)."""
    strategy = par.strategy
    if par.world_size == 1:
        strategy = "auto"
    elif strategy == "auto":
        strategy = "ddp" if launched_externally() else "ddp_spawn"
    if strategy in ("ddp", "ddp_spawn") and par.accelerator == "cpu":
        from lightning.pytorch.strategies import DDPStrategy

        # gloo on CPU; spawn start method for ddp_spawn (fork would share torch's thread pools)
        strategy = DDPStrategy(process_group_backend="gloo",
                               start_method="spawn" if strategy == "ddp_spawn" else "popen")
    elif strategy == "ddp_spawn":
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(start_method="spawn")
    return {"accelerator": par.accelerator, "devices": par.devices, "num_nodes": par.num_nodes,
            "strategy": strategy, "precision": "32-true" if par.precision == "32" else par.precision}
