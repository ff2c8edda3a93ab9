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
from structattn.train.trainer import TrainConfig, fit_model, fit_vit, standardise_patches  # noqa: E402

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


def _train(kind: str, texture: str, train_seed: int, epochs: int) -> dict:
    vopt, topt = sweep_vit.CONFIGS[CONFIG]
    topt = dict(topt)
    buffer = topt.pop("buffer")
    sample = load_sample(f"semisynthetic:image={sweep_vit.TEXTURES[texture]},seed=0")
    window = 32
    split = spatial_block_split(sample.positions, shape=sample.shape, blocks=4, val_fraction=0.15,
                                test_fraction=0.2, buffer=buffer, seed=0)
    patches = extract_patches(sample.image, sample.positions, window=window)
    x = standardise_patches(patches, sample.image.mean((1, 2)), sample.image.std((1, 2)))
    y = sample.targets
    ym, ys = y[split.train].mean(0), y[split.train].std(0)
    z = (y - ym) / ys
    tcfg = TrainConfig(**{"epochs": epochs, "seed": train_seed, "progress": False, "device": "cpu", **topt})
    _Record.x_test = torch.as_tensor(x[split.test])
    saved = trainer_mod.EarlyStopping
    trainer_mod.EarlyStopping = _Record
    t0 = time.perf_counter()
    try:
        if kind == "vit":
            vcfg = ViTConfig(**{"in_channels": x.shape[1], "window": window, "n_outputs": y.shape[1], **vopt})
            fit_vit(x, z, train_index=split.train, val_index=split.val, vit=vcfg, train=tcfg)
        else:  # the run's CNN baseline (structattn.train.baselines.fit_cnn), same trainer and options
            import lightning as L

            L.seed_everything(train_seed, workers=True, verbose=False)
            cnn = CNNRegressor(CNNConfig(in_channels=x.shape[1], window=window, n_outputs=y.shape[1]))
            fit_model(cnn, x, z, train_index=split.train, val_index=split.val, train=tcfg)
    finally:
        trainer_mod.EarlyStopping = saved
    return {"model": kind, "texture": texture, "train_seed": train_seed, "seconds": time.perf_counter() - t0,
            "targets": list(sample.target_names), "test_z": z[split.test].tolist(), "epochs": _Record.rows}


def _r2(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 1 - ((t - p) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0)


def replay(res: dict, patience: int = PATIENCE) -> dict:
    """Test R² per target under the joint and the per-target selection, and the epochs they chose."""
    ep = res["epochs"]
    t = np.asarray(res["test_z"])
    score = np.asarray([e["val_score"] for e in ep], np.float32)  # as logged (float32), as EarlyStopping reads it
    mse = np.asarray([e["val_mse"] for e in ep])
    pred = np.asarray([e["test_pred"] for e in ep])
    # joint: Lightning's EarlyStopping (strict improvement, stop when `patience` epochs did not improve)
    best, wait, stop = np.inf, 0, len(ep) - 1
    for i, s in enumerate(score):
        if s < best:
            best, wait = s, 0
        else:
            wait += 1
            if wait >= patience:
                stop = i
                break
    j = int(np.argmin(score[:stop + 1]))  # first minimum, as _KeepBest keeps it
    # per target: stop once no target's own MSE improved for `patience` epochs
    k = mse.shape[1]
    best_k, since = np.full(k, np.inf), np.zeros(k, int)
    stop_t = len(ep) - 1
    for i in range(len(ep)):
        better = mse[i] < best_k
        best_k = np.where(better, mse[i], best_k)
        since = np.where(better, 0, since + 1)
        if (since >= patience).all():
            stop_t = i
            break
    jk = np.argmin(mse[:stop_t + 1], axis=0)
    per = pred[jk, :, np.arange(k)].T  # (n_test, K): target k from epoch jk[k]
    return {"joint": _r2(t, pred[j]).tolist(), "joint_epoch": int(ep[j]["epoch"]), "joint_stop": int(ep[stop]["epoch"]),
            "per_target": _r2(t, per).tolist(), "per_target_epochs": [int(ep[i]["epoch"]) for i in jk],
            "per_target_stop": int(ep[stop_t]["epoch"]), "joint_val_epochs_run": stop + 1,
            "per_target_epochs_run": stop_t + 1}


def summary(folder: Path) -> dict:
    runs = {}
    for p in sorted(folder.glob("*.json")):
        r = json.loads(p.read_text())
        runs[(r["model"], r["texture"], r["train_seed"])] = (r["targets"], replay(r))
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
    for model in ("vit", "cnn"):
        print(f"{model} epochs run, joint / per target: " + ", ".join(
            f"{runs[(model, t, s)][1]['joint_val_epochs_run']}/{runs[(model, t, s)][1]['per_target_epochs_run']}" for t, s in keys))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", metavar="TEXTURE")
    ap.add_argument("--model", choices=("vit", "cnn", "both"), default="both")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--out", type=Path, default=Path("bench/results/probe_target_epochs"))
    ap.add_argument("--summary", type=Path)
    a = ap.parse_args()
    if a.summary:
        out = summary(a.summary)
        if out:
            (a.summary.parent / f"{a.summary.name}.json").write_text(json.dumps(out, indent=1))
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
