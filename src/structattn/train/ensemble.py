"""Deep-ensemble members: the same ViT trained again from other seeds.

The run's primary model (``model.pt``, seed ``s``) is member 0; `fit_members` trains members
1..M-1 with seeds ``s + 1, s + 2, ...`` on the same split, targets and options, one after the
other in this process (``jobs=1``) or in ``jobs`` worker processes with ``torch threads =
cores // jobs`` each (spawned, so no OpenMP state is forked). Each member checkpoints into
its own folder, so ``--resume`` continues an interrupted ensemble too.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..nets.vit import ViTConfig, ViTRegressor
from .trainer import TrainConfig, fit_vit


def member_seed(seed: int, k: int) -> int:
    """Seed of member k (member 0 is the primary model, trained with `seed` itself)."""
    return int(seed) + int(k)


def _fit_one(args: dict) -> tuple[dict, dict]:
    """Train one member; runs in this process or in a worker. Returns (numpy state dict, history)."""
    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    t0 = time.perf_counter()
    train = TrainConfig(**args["train"])
    model, history = fit_vit(args["x"], args["y"], train_index=args["train_index"], val_index=args["val_index"],
                             vit=ViTConfig(**args["vit"]), train=train, pretrain_image=args["pretrain_image"],
                             checkpoint_dir=args["checkpoint_dir"])
    history["seconds"] = time.perf_counter() - t0
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, history


def fit_members(
    x: np.ndarray,
    y: np.ndarray,
    *,
    train_index: np.ndarray,
    val_index: np.ndarray,
    vit: ViTConfig,
    train: TrainConfig,
    members: int,
    jobs: int = 1,
    pretrain_image: np.ndarray | None = None,
    checkpoint_dir: Path | None = None,
    on_member=None,
) -> list[tuple[ViTRegressor, dict]]:
    """Train ensemble members 1..members-1 (member 0, the primary model, is trained elsewhere).

    Args:
        x: (N, C, w, w) standardised patches; y: (N, K) standardised targets.
        train_index, val_index: the split, as for `fit_vit`.
        vit, train: the primary model's options; only the seed changes (`member_seed`).
        members: ensemble size including the primary model (>= 2).
        jobs: members trained at once; > 1 spawns that many worker processes.
        pretrain_image: as for `fit_vit` (each member pretrains from its own seed).
        checkpoint_dir: per-member checkpoints go to ``member_<k>/`` below it.
        on_member: called with (k, history) as each member finishes.

    Returns:
        [(model in eval mode, history)] for members 1..members-1, in order.
    """
    if members < 2:
        raise ValueError(f"members: expected >= 2 (the primary model and at least one more), got {members}")
    if jobs < 1:
        raise ValueError(f"jobs: expected >= 1, got {jobs}")
    jobs = min(jobs, members - 1)
    tasks = []
    for k in range(1, members):
        tcfg = asdict(train)
        tcfg.update(seed=member_seed(train.seed, k), progress=False if jobs > 1 else train.progress)
        tasks.append({"x": x, "y": y, "train_index": train_index, "val_index": val_index, "vit": vit.to_dict(),
                      "train": tcfg, "pretrain_image": pretrain_image,
                      "checkpoint_dir": None if checkpoint_dir is None else Path(checkpoint_dir) / f"member_{k}",
                      "threads": None})
    results: list[tuple[dict, dict]] = []
    if jobs == 1:
        for k, task in enumerate(tasks, start=1):
            results.append(_fit_one(task))
            if on_member is not None:
                on_member(k, results[-1][1])
    else:
        results = _fit_parallel(tasks, jobs, on_member)
    out = []
    for state, history in results:
        model = ViTRegressor(vit)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        out.append((model.eval(), history))
    return out


def _worker(task: dict, result_path: str) -> None:
    """Worker-process entry: train one member and save (state dict, history) to `result_path`."""
    state, history = _fit_one(task)
    tmp = result_path + ".tmp"
    torch.save({"state": state, "history": history}, tmp)
    os.replace(tmp, result_path)


def _fit_parallel(tasks: list[dict], jobs: int, on_member) -> list[tuple[dict, dict]]:
    """Members in at most `jobs` spawned processes at a time, each with cores // jobs torch threads.

    Plain processes, not a pool: a worker that dies (killed, out of memory, a script without
    ``if __name__ == "__main__":``) is an error here, not a hang; on any error or signal the
    running workers are terminated.
    """
    import multiprocessing as mp
    import tempfile

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    running: dict[int, mp.Process] = {}
    done: dict[int, tuple[dict, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="structattn-ensemble-") as tmp:
        paths = {k: os.path.join(tmp, f"member_{k}.pt") for k in range(1, len(tasks) + 1)}
        queue = list(range(1, len(tasks) + 1))
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    k = queue.pop(0)
                    running[k] = ctx.Process(target=_worker, args=(dict(tasks[k - 1], threads=threads), paths[k]),
                                             daemon=True)
                    running[k].start()
                for k, proc in list(running.items()):
                    proc.join(timeout=0.2)  # short waits keep the main thread responsive to SIGTERM/SIGINT
                    if proc.exitcode is None:
                        continue
                    del running[k]
                    if proc.exitcode != 0 or not os.path.isfile(paths[k]):
                        raise RuntimeError(
                            f"--ensemble-jobs: the worker training ensemble member {k} ended with status "
                            f"{proc.exitcode}; use --ensemble-jobs 1 (from a Python script, call run_pipeline "
                            "under `if __name__ == \"__main__\":`, which spawned workers need)")
                    payload = torch.load(paths[k], map_location="cpu", weights_only=False)
                    done[k] = (payload["state"], payload["history"])
                    if on_member is not None:
                        on_member(k, done[k][1])
        except BaseException:
            for proc in running.values():
                proc.terminate()
            for proc in running.values():
                proc.join()
            raise
    return [done[k] for k in range(1, len(tasks) + 1)]
