"""Probe: would each target taken at its own best validation epoch lift the ViT's lead over the CNN?

Today one epoch serves every target: the one with the lowest mean validation MSE over all targets,
training stopped after 15 epochs without improving it (`TrainConfig.patience`). Rounds 18-19 and the
probe after round 17 (docs/training.md) found that this epoch can come too early for threshold (a rule
the model cannot learn starts over-fitting and stops training) and too late for product (its own
validation MSE bottoms out long before the others').

This probe trains the sweep's default configuration (`bench/sweep_vit.py`'s split and data) and the CNN
baseline with the same trainer, options and training seed, with early stopping switched off, and records
after every epoch each target's validation MSE and the test-block predictions. Both selections are then
replayed from the one trajectory (the learning-rate schedule does not depend on when training stops):

- ``joint`` (today): the epoch of the lowest mean validation MSE, training stopped after `patience`
  epochs without improving it; replaying it must reproduce `bench/sweep_vit.py`'s test R²;
- ``per_target``: each target at the epoch of its own lowest validation MSE, training stopped once no
  target's own validation MSE has improved for `patience` epochs (or at the last epoch).

    python bench/probe_target_epochs.py --one PTO_Funakubo0001 --train-seed 0 --out bench/results/probe_target_epochs
    python bench/probe_target_epochs.py --summary bench/results/probe_target_epochs

The rule that reads it is written in docs/training.md ("Round 23").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_vit  # noqa: E402

from structattn.data.io import load_sample  # noqa: E402
from structattn.data.patches import extract_patches  # noqa: E402
from structattn.nets.cnn import CNNConfig, CNNRegressor  # noqa: E402
from structattn.nets.vit import ViTConfig  # noqa: E402
from structattn.train import trainer as trainer_mod  # noqa: E402
from structattn.train.split import spatial_block_split  # noqa: E402
from structattn.train.trainer import TrainConfig, epochs_since_best, fit_model, fit_vit, standardise_patches  # noqa: E402

CONFIG = "spatial_stemavg_wav_b32"  # today's default model and training (round 20)
PATIENCE = 15  # TrainConfig.patience, replayed


class _Record(Callback):
    """Stands in for EarlyStopping: never stops; after each validation records the criterion, each
    target's validation MSE and the evaluated weights' test predictions (no random stream is touched)."""

    x_test: torch.Tensor | None = None
    rows: list[dict] = []

    def __init__(self, *_, **__) -> None:
        super().__init__()
        type(self).rows = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        net = pl_module.evaluated
        was = net.training
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(self.x_test[i:i + 256]) for i in range(0, len(self.x_test), 256)]).numpy()
        net.train(was)
        type(self).rows.append({"epoch": int(trainer.current_epoch),
                                "val_score": float(trainer.callback_metrics["val_score"]),
                                "val_mse": list(pl_module.val_mse), "test_pred": pred.tolist()})


def _data(texture: str, window: int = 32):
    """The sweep's sample, split, standardised patches and standardised targets of one texture."""
    buffer = sweep_vit.CONFIGS[CONFIG][1]["buffer"]
    sample = load_sample(f"semisynthetic:image={sweep_vit.TEXTURES[texture]},seed=0")
    split = spatial_block_split(sample.positions, shape=sample.shape, blocks=4, val_fraction=0.15,
                                test_fraction=0.2, buffer=buffer, seed=0)
    patches = extract_patches(sample.image, sample.positions, window=window)
    x = standardise_patches(patches, sample.image.mean((1, 2)), sample.image.std((1, 2)))
    y = sample.targets
    ym, ys = y[split.train].mean(0), y[split.train].std(0)
    return sample, split, x, (y - ym) / ys


def _train(kind: str, texture: str, train_seed: int, epochs: int) -> dict:
    vopt, topt = sweep_vit.CONFIGS[CONFIG]
    topt = {k: v for k, v in topt.items() if k != "buffer"}
    window = 32
    sample, split, x, z = _data(texture, window)
    tcfg = TrainConfig(**{"epochs": epochs, "seed": train_seed, "progress": False, "device": "cpu", **topt})
    _Record.x_test = torch.as_tensor(x[split.test])
    saved = trainer_mod.EarlyStopping
    trainer_mod.EarlyStopping = _Record
    t0 = time.perf_counter()
    try:
        if kind == "vit":
            vcfg = ViTConfig(**{"in_channels": x.shape[1], "window": window, "n_outputs": z.shape[1], **vopt})
            fit_vit(x, z, train_index=split.train, val_index=split.val, vit=vcfg, train=tcfg)
        else:  # the run's CNN baseline (structattn.train.baselines.fit_cnn), same trainer and options
            import lightning as L

            L.seed_everything(train_seed, workers=True, verbose=False)
            cnn = CNNRegressor(CNNConfig(in_channels=x.shape[1], window=window, n_outputs=z.shape[1]))
            fit_model(cnn, x, z, train_index=split.train, val_index=split.val, train=tcfg)
    finally:
        trainer_mod.EarlyStopping = saved
    return {"model": kind, "texture": texture, "train_seed": train_seed, "seconds": time.perf_counter() - t0,
            "targets": list(sample.target_names), "test_z": z[split.test].tolist(),
            "val_mse0": (z[split.val] ** 2).mean(0).tolist(),  # the training mean's (0 in these units)
            "epochs": _Record.rows}


def _r2(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 1 - ((t - p) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0)


def _stop_joint(score: np.ndarray, patience: int) -> int:
    """Index of the epoch Lightning's EarlyStopping ends on (strict improvement, `patience` epochs)."""
    best, wait = np.inf, 0
    for i, v in enumerate(score):
        if v < best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return i
    return len(score) - 1


def _stop_targets(mse: np.ndarray, patience: int) -> int:
    """Index of the epoch at which no target's own validation MSE has improved for `patience` epochs: the
    trainer's own bookkeeping (`epochs_since_best`, as `--stopping targets` uses it)."""
    best = since = None
    for i, row in enumerate(mse):
        best, since = epochs_since_best(best, since, [float(v) for v in row])
        if all(s >= patience for s in since):
            return i
    return len(mse) - 1


def _score(mse: np.ndarray, criterion: str, mse0: np.ndarray | None) -> np.ndarray:
    """Per-epoch criterion as the trainer logs it (float32): `structattn.train.trainer.validation_score`."""
    if criterion == "mse":
        v = mse.mean(1)
    elif criterion == "log_mse":
        v = np.log(np.maximum(mse, 1e-12)).mean(1)
    else:  # capped_mse
        v = np.minimum(mse, mse0).mean(1)
    return v.astype(np.float32)


def select(res: dict, criterion: str = "mse", stop: str = "joint", patience: int = PATIENCE) -> dict:
    """Replay one selection: `criterion` "per_target" (each target at its own best epoch) or a single-model
    criterion ("mse", "log_mse", "capped_mse"), training stopped by `stop` "joint" (patience on the
    criterion) or "targets" (no target's own MSE improved for `patience` epochs)."""
    ep = res["epochs"]
    t = np.asarray(res["test_z"])
    mse = np.asarray([e["val_mse"] for e in ep])
    pred = np.asarray([e["test_pred"] for e in ep])
    k = mse.shape[1]
    if criterion == "per_target":
        end = _stop_targets(mse, patience)
        jk = np.argmin(mse[:end + 1], axis=0)
        p = pred[jk, :, np.arange(k)].T  # (n_test, K): target k from epoch jk[k]
        return {"r2": _r2(t, p).tolist(), "epochs": [int(ep[i]["epoch"]) for i in jk], "stop": int(ep[end]["epoch"])}
    if criterion == "mse" and stop == "joint":
        score = np.asarray([e["val_score"] for e in ep], np.float32)  # as logged, as EarlyStopping read it
    else:
        score = _score(mse, criterion, np.asarray(res["val_mse0"]) if "val_mse0" in res else None)
    end = _stop_joint(score, patience) if stop == "joint" else _stop_targets(mse, patience)
    j = int(np.argmin(score[:end + 1]))  # first minimum, as _KeepBest keeps it
    return {"r2": _r2(t, pred[j]).tolist(), "epochs": [int(ep[j]["epoch"])] * k, "stop": int(ep[end]["epoch"])}


def replay(res: dict, patience: int = PATIENCE) -> dict:
    """Test R² per target under the joint and the per-target selection (round 23's rule), and the epochs."""
    j, p = select(res, "mse", "joint", patience), select(res, "per_target", "targets", patience)
    return {"joint": j["r2"], "joint_epoch": j["epochs"][0], "joint_stop": j["stop"],
            "per_target": p["r2"], "per_target_epochs": p["epochs"], "per_target_stop": p["stop"],
            "joint_val_epochs_run": j["stop"] + 1, "per_target_epochs_run": p["stop"] + 1}


def summary(folder: Path, explore: bool = False) -> dict:
    runs, raws = {}, {}
    for p in sorted(folder.glob("*.json")):
        r = json.loads(p.read_text())
        runs[(r["model"], r["texture"], r["train_seed"])] = (r["targets"], replay(r))
        raws[(r["model"], r["texture"], r["train_seed"])] = r
    keys = sorted({(t, s) for (_, t, s) in runs if ("vit", t, s) in runs and ("cnn", t, s) in runs})
    if not keys:
        print("no (ViT, CNN) pairs yet")
        return {}
    names = runs[("vit", *keys[0])][0]
    out = {"pairs": [f"{t} seed {s}" for t, s in keys], "targets": names}
    print(f"{len(keys)} pairs: {', '.join(out['pairs'])}")
    print(f"{'':34s}" + "".join(f"{n[:12]:>13s}" for n in names) + f"{'mean':>9s}")
    for model in ("vit", "cnn"):
        for sel in ("joint", "per_target"):
            m = np.mean([runs[(model, t, s)][1][sel] for t, s in keys], axis=0)
            out[f"{model}_{sel}"] = m.tolist()
            print(f"{model + ' ' + sel + ', test R²':34s}" + "".join(f"{v:13.3f}" for v in m) + f"{m.mean():9.3f}")
    for sel in ("joint", "per_target"):
        lead = np.asarray(out[f"vit_{sel}"]) - np.asarray(out[f"cnn_{sel}"])
        out[f"lead_{sel}"] = lead.tolist()
        print(f"{'ViT − CNN, ' + sel:34s}" + "".join(f"{v:+13.3f}" for v in lead))
    d = np.asarray(out["lead_per_target"]) - np.asarray(out["lead_joint"])
    out["lead_change"] = d.tolist()
    print(f"{'lead change (per_target − joint)':34s}" + "".join(f"{v:+13.3f}" for v in d))
    if explore:  # single-model criteria replayed from the same trajectories (not part of round 23's rule)
        mse0 = {}
        for (model, t, s), _ in runs.items():
            raw = raws[(model, t, s)]
            if "val_mse0" not in raw:
                if t not in mse0:
                    _, split, _, z = _data(t)
                    mse0[t] = (z[split.val] ** 2).mean(0).tolist()
                raw["val_mse0"] = mse0[t]
        out["explore"] = {}
        print("exploratory, single model (criterion / stop): ViT test R², ViT − CNN lead")
        for crit, stop in (("mse", "targets"), ("log_mse", "joint"), ("log_mse", "targets"),
                           ("capped_mse", "joint"), ("capped_mse", "targets")):
            v = np.mean([select(raws[("vit", t, s)], crit, stop)["r2"] for t, s in keys], axis=0)
            c = np.mean([select(raws[("cnn", t, s)], crit, stop)["r2"] for t, s in keys], axis=0)
            out["explore"][f"{crit}/{stop}"] = {"vit": v.tolist(), "cnn": c.tolist()}
            print(f"{'vit ' + crit + ' / ' + stop:34s}" + "".join(f"{x:13.3f}" for x in v) + f"{v.mean():9.3f}")
            print(f"{'  lead':34s}" + "".join(f"{x:+13.3f}" for x in v - c))
    for model in ("vit", "cnn"):
        print(f"{model} epochs run, joint / per target: " + ", ".join(
            f"{runs[(model, t, s)][1]['joint_val_epochs_run']}/{runs[(model, t, s)][1]['per_target_epochs_run']}" for t, s in keys))
    return out


def as_sweep(folder: Path, out: Path, criterion: str = "mse", stop: str = "targets") -> None:
    """Write each ViT trajectory's replayed selection as a `bench/sweep_vit.py` result file (config
    `spatial_stemavg_wav_b32_stoptargets` for mse / targets), validation R² included, so `sweep_vit.py --screen`
    reads it like a run of that configuration (the trajectory is the one that configuration trains)."""
    config = {("mse", "targets"): "spatial_stemavg_wav_b32_stoptargets"}[(criterion, stop)]
    out.mkdir(parents=True, exist_ok=True)
    data = {}
    for p in sorted(folder.glob("vit__*.json")):
        r = json.loads(p.read_text())
        if r["texture"] not in data:
            data[r["texture"]] = _data(r["texture"])
        _, split, _, z = data[r["texture"]]
        sel = select(r, criterion, stop)
        j = sel["epochs"][0]
        mse = np.asarray(next(e["val_mse"] for e in r["epochs"] if e["epoch"] == j))
        val = 1 - mse / z[split.val].var(0)
        res = {"config": config, "texture": r["texture"], "targets": r["targets"], "seconds": None,
               "best_epoch": j, "stopped_epoch": sel["stop"], "vit_val": val.tolist(), "vit_test": sel["r2"],
               "n": [len(split.train), len(split.val), len(split.test)], "train_seed": r["train_seed"],
               "replayed_from": p.name}
        (out / f"{config}__{r['texture']}__seed{r['train_seed']}.json").write_text(json.dumps(res, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", metavar="TEXTURE")
    ap.add_argument("--model", choices=("vit", "cnn", "both"), default="both")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--out", type=Path, default=Path("bench/results/probe_target_epochs"))
    ap.add_argument("--summary", type=Path)
    ap.add_argument("--explore", action="store_true", help="with --summary: also replay single-model criteria")
    ap.add_argument("--as-sweep", type=Path, metavar="DIR",
                    help="with --summary: write the ViT runs' mse / targets replay as sweep_vit.py result files in DIR")
    a = ap.parse_args()
    if a.summary:
        out = summary(a.summary, a.explore)
        if out:
            (a.summary.parent / f"{a.summary.name}.json").write_text(json.dumps(out, indent=1))
        if a.as_sweep:
            as_sweep(a.summary, a.as_sweep)
        return
    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "1")))
    a.out.mkdir(parents=True, exist_ok=True)
    for kind in (("vit", "cnn") if a.model == "both" else (a.model,)):
        res = _train(kind, a.one, a.train_seed, a.epochs)
        res["replay"] = replay(res)
        path = a.out / f"{kind}__{a.one}__seed{a.train_seed}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res))
        tmp.replace(path)
        print(f"{kind} {a.one} seed {a.train_seed}: {res['seconds']:.0f} s, joint epoch {res['replay']['joint_epoch']}, "
              f"test R² joint {np.round(res['replay']['joint'], 3).tolist()} per-target {np.round(res['replay']['per_target'], 3).tolist()}",
              flush=True)


if __name__ == "__main__":
    main()
