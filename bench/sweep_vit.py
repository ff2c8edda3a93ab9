"""Choose the ViT's defaults by measurement on real textures (issue 12).

Each configuration trains on semi-synthetic samples (real PFM texture from ../shared/data,
rules of `structattn.data.semisynthetic`: off-centre, anisotropic, nonlinear) with the same
spatial split, and is scored on the *validation* blocks (the defaults are chosen there; the
test blocks are kept for the benchmark, bench/bench_semisynth.py). One process per
(configuration, texture) so the sweep parallelises over cores:

    python bench/sweep_vit.py --config stem16 --texture PTO_Funakubo0001 --out bench/results/sweep
    python bench/sweep_vit.py --summary bench/results/sweep     # table of mean validation R²

Results: one JSON per run; docs/training.md has the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from structattn.data.io import load_sample
from structattn.data.patches import extract_patches
from structattn.nets.vit import ViTConfig
from structattn.train.baselines import fit_baselines
from structattn.train.split import spatial_block_split
from structattn.train.trainer import TrainConfig, fit_vit, standardise_patches

import os

DATA = Path(os.environ.get("STRUCTATTN_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
TEXTURES = {p.stem: p for p in sorted((DATA / "pto_pfm_images").glob("*.h5"))}
TEXTURES.update({p.stem: p for p in sorted((DATA / "instrument").glob("*")) if p.suffix in (".gwy", ".ibw")})

# name -> (ViT options, train options)
CONFIGS = {  # round 2 (trainer with 5 warm-up epochs); round 1 is in docs/training.md
    "base": ({}, {}),  # the 0.1 model: linear 4 px tokens, dim 64, depth 4
    "stem16": ({"stem": 16}, {}),
    "stem16_lr1e3": ({"stem": 16}, {"lr": 1e-3}),
    "stem16_e120": ({"stem": 16}, {"epochs": 120, "patience": 30}),
    "stem16_lr1e3_e120": ({"stem": 16}, {"lr": 1e-3, "epochs": 120, "patience": 30}),
    "stem16_drop0": ({"stem": 16, "dropout": 0.0}, {}),
    "stem16_d6": ({"stem": 16, "depth": 6}, {}),
    "stem16_wd0.3": ({"stem": 16}, {"weight_decay": 0.3}),
    "stem16_b32": ({"stem": 16}, {"batch_size": 32}),
    "stem16_flips": ({"stem": 16}, {"augment": "flips"}),
    "stem16_dihedral": ({"stem": 16}, {"augment": "dihedral"}),
    "stem8": ({"stem": 8}, {}),
    "stem16_buf8": ({"stem": 16}, {}),
    "p8": ({"patch": 8}, {}),
    "stem16_p8": ({"stem": 16, "patch": 8}, {}),
    # round 3 (on the 2-core CPU): the 0.2 defaults (stem 16, weight decay 0.3, buffer w/4) with and
    # without a learned positional attention bias
    "default": ({"stem": 16}, {"weight_decay": 0.3, "buffer": 8}),
    "default_posbias": ({"stem": 16, "pos_bias": True}, {"weight_decay": 0.3, "buffer": 8}),
    "posbias_stem0": ({"stem": 0, "pos_bias": True}, {"weight_decay": 0.3, "buffer": 8}),
    "default_mim10": ({"stem": 16}, {"weight_decay": 0.3, "buffer": 8, "pretrain_epochs": 10}),
    # round 4 (2-core CPU, --epochs 80 as `structattn run`): early stopping (patience 15) against
    # none (the whole cosine schedule, best validation epoch kept). The learning-rate schedule is
    # the same, so both follow one trajectory; only where it ends differs.
    "default_p15": ({"stem": 16}, {"weight_decay": 0.3, "buffer": 8, "patience": 15}),
    "default_nostop": ({"stem": 16}, {"weight_decay": 0.3, "buffer": 8, "patience": 10_000}),
    # round 5 (2-core CPU, 80 epochs): a position-aware readout, one linear map of every final token
    # state instead of the [CLS] state alone
    "default_tokens": ({"stem": 16, "readout": "tokens"}, {"weight_decay": 0.3, "buffer": 8}),
    "default_spatial": ({"stem": 16, "readout": "spatial"}, {"weight_decay": 0.3, "buffer": 8}),
    "default_pool": ({"stem": 16, "readout": "pool"}, {"weight_decay": 0.3, "buffer": 8}),
    # round 6 (2-core CPU, 80 epochs): the early-stopping / best-epoch criterion. With the summed
    # validation MSE, the rules the model cannot learn (their MSE near 1 and rising) decided when the
    # learned ones stopped (best epochs 8 and 11 on two textures)
    "spatial_logmse": ({"stem": 16, "readout": "spatial"}, {"weight_decay": 0.3, "buffer": 8, "criterion": "log_mse"}),
    # round 7: log_mse, and each target's loss term is left out while its own validation MSE has not
    # improved for 10 epochs (TrainConfig.target_patience), so a target the model cannot learn stops
    # being fitted (and over-fitted) while the others go on. The first runs (sweep7/) patched the
    # trainer with the same rule before it was an option
    "spatial_logmse_freeze": ({"stem": 16, "readout": "spatial"},
                              {"weight_decay": 0.3, "buffer": 8, "criterion": "log_mse", "target_patience": 10}),
    # the same with a per-target patience of 20 epochs (product was frozen too early at 10)
    "spatial_logmse_freeze20": ({"stem": 16, "readout": "spatial"},
                                {"weight_decay": 0.3, "buffer": 8, "criterion": "log_mse", "target_patience": 20}),
    # round 8, exploratory: a linear patch embedding (no conv stem) under the spatial readout. The
    # stem loses part of a linear rule's extrapolation (bench/probe_extrapolation.py); with the
    # [CLS] readout the stem's own contribution was within noise (round 3)
    "spatial_stem0": ({"stem": 0, "readout": "spatial"}, {"weight_decay": 0.3, "buffer": 8}),
    # round 9: the spatial readout also reads each token's embedding (before the blocks) through the
    # same weighting, a linear path for rules linear in the pixels (ridge probes: 0.91 on the token
    # embeddings against 0.74 on the final states, PTO_Funakubo0003, bench/probe_extrapolation.py)
    # (spatial_embed and embed_logmse_freeze20 ran with the first version of the readout, whose linear path
    # shared the final states' token weighting: commit d0978c2; `spatial_embed_own` is today's readout)
    "spatial_embed": ({"stem": 16, "readout": "spatial_embed"}, {"weight_decay": 0.3, "buffer": 8}),
    "spatial_embed_own": ({"stem": 16, "readout": "spatial_embed"}, {"weight_decay": 0.3, "buffer": 8}),
    # the same readout with round 7's training (log_mse, per-target patience 20): on PTO_Funakubo0001
    # spatial_embed alone stopped at best epoch 14 by the summed validation MSE, as `spatial` had at 8
    "embed_logmse_freeze20": ({"stem": 16, "readout": "spatial_embed"},
                              {"weight_decay": 0.3, "buffer": 8, "criterion": "log_mse", "target_patience": 20}),
    # round 10: a closed-form ridge base fixed under the ViT (ViTConfig.linear_base), kept per target where
    # ridge's validation R² >= 0.5; the ViT learns what it leaves
    "spatial_linbase": ({"stem": 16, "readout": "spatial", "linear_base": True}, {"weight_decay": 0.3, "buffer": 8}),
    # round 11: validate and keep a moving average of the weights (TrainConfig.ema), decay per step
    "spatial_ema99": ({"stem": 16, "readout": "spatial"}, {"weight_decay": 0.3, "buffer": 8, "ema": 0.99}),
    "spatial_ema995": ({"stem": 16, "readout": "spatial"}, {"weight_decay": 0.3, "buffer": 8, "ema": 0.995}),
    # round 12: longer masked-token pretraining under the spatial readout (round 2 tried 10 epochs with [CLS])
    "spatial_mim40": ({"stem": 16, "readout": "spatial"}, {"weight_decay": 0.3, "buffer": 8, "pretrain_epochs": 40}),
    # round 13: two published small-data ViT recipes. Locality self-attention (Lee et al. 2021) and a
    # hybrid stem that pools the CNN baseline's first two blocks to the token grid (Dosovitskiy et al.'s hybrid)
    "spatial_lsa": ({"stem": 16, "readout": "spatial", "lsa": True}, {"weight_decay": 0.3, "buffer": 8}),
    "spatial_stempool": ({"stem": 16, "readout": "spatial", "stem_pool": "max"}, {"weight_decay": 0.3, "buffer": 8}),
    # round 13b: the same hybrid stem with average pooling (the rules are region means; max-pooling lost them)
    "spatial_stemavg": ({"stem": 16, "readout": "spatial", "stem_pool": "avg"}, {"weight_decay": 0.3, "buffer": 8}),
    # round 14: both pools concatenated at each pooling
    "spatial_stemavgmax": ({"stem": 16, "readout": "spatial", "stem_pool": "avgmax"}, {"weight_decay": 0.3, "buffer": 8}),
    # round 15: sharpness-aware minimisation (rho 0.05) around AdamW, the default model
    "spatial_stemavg_sam": ({"stem": 16, "readout": "spatial", "stem_pool": "avg"}, {"weight_decay": 0.3, "buffer": 8, "sam": 0.05}),
    # round 16: fixed wavelet-modulus features (first-order scattering, 2 scales x 8 orientations) added to each
    # token's embedding; the learned stem unchanged
    "spatial_stemavg_wav": ({"stem": 16, "readout": "spatial", "stem_pool": "avg", "wavelets": 8}, {"weight_decay": 0.3, "buffer": 8}),
    # round 18: today's default model with round 7's training (the mean of each target's log MSE decides the
    # stop; a target's term leaves the loss after 20 epochs without improving its own validation MSE)
    "spatial_stemavg_wav_logmse_freeze20": ({"stem": 16, "readout": "spatial", "stem_pool": "avg", "wavelets": 8},
                                            {"weight_decay": 0.3, "buffer": 8, "criterion": "log_mse",
                                             "target_patience": 20}),
    # round 19: today's default model, early stopping and the best epoch on each target's validation MSE capped
    # at the training mean's (a target predicted worse than the mean does not vote on when the others stop)
    "spatial_stemavg_wav_capped": ({"stem": 16, "readout": "spatial", "stem_pool": "avg", "wavelets": 8},
                                   {"weight_decay": 0.3, "buffer": 8, "criterion": "capped_mse"}),
    # round 20: today's default model trained in batches of 32 (twice the optimiser steps an epoch); nothing
    # else changed
    "spatial_stemavg_wav_b32": ({"stem": 16, "readout": "spatial", "stem_pool": "avg", "wavelets": 8},
                                {"weight_decay": 0.3, "buffer": 8, "batch_size": 32}),
    # round 21: today's default (batches of 32) without dropout in the ViT; nothing else changed
    "spatial_stemavg_wav_b32_drop0": ({"stem": 16, "readout": "spatial", "stem_pool": "avg", "wavelets": 8,
                                       "dropout": 0.0}, {"weight_decay": 0.3, "buffer": 8, "batch_size": 32}),
    # round 22: today's default (batches of 32) with a peak learning rate of 1e-3 instead of 3e-3; nothing else changed
    "spatial_stemavg_wav_b32_lr1e3": ({"stem": 16, "readout": "spatial", "stem_pool": "avg", "wavelets": 8},
                                      {"weight_decay": 0.3, "buffer": 8, "batch_size": 32, "lr": 1e-3}),
    # round 23: today's default, training stopped only once no target's own validation MSE has improved for the
    # patience (the best epoch is still the lowest mean validation MSE); nothing else changed
    "spatial_stemavg_wav_b32_stoptargets": ({"stem": 16, "readout": "spatial", "stem_pool": "avg", "wavelets": 8},
                                            {"weight_decay": 0.3, "buffer": 8, "batch_size": 32, "stopping": "targets"}),
    # round 25: today's default with each block's MLP 4x the token width (the ViT standard) instead of 2x
    "spatial_stemavg_wav_b32_mlp4": ({"stem": 16, "readout": "spatial", "stem_pool": "avg", "wavelets": 8, "mlp_ratio": 4.0},
                                     {"weight_decay": 0.3, "buffer": 8, "batch_size": 32}),
}

NONLINEAR = ("wall_density", "wall_direction", "threshold", "product")


def r2(t, p):
    return 1 - ((t - p) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0)


def run(config: str, texture: str, *, out: Path, epochs: int, baselines: bool, seed: int = 0, device: str = "cpu",
        train_seed: int | None = None) -> dict:
    """One configuration on one texture; `train_seed` (default `seed`) seeds only the weights, batches
    and dropout, so the data, split and rule noise stay those of `seed` (the screen's noise floor)."""
    vopt, topt = CONFIGS[config]
    topt = dict(topt)
    topt.setdefault("batch_size", 64)  # every configuration before round 20 trained in batches of 64 (the default then)
    buffer = topt.pop("buffer", 8 if "buf8" in config else 16)
    sample = load_sample(f"semisynthetic:image={TEXTURES[texture]},seed={seed}")
    window = 32
    split = spatial_block_split(sample.positions, shape=sample.shape, blocks=4, val_fraction=0.15,
                                test_fraction=0.2, buffer=buffer, seed=seed)
    patches = extract_patches(sample.image, sample.positions, window=window)
    x = standardise_patches(patches, sample.image.mean((1, 2)), sample.image.std((1, 2)))
    y = sample.targets
    ym, ys = y[split.train].mean(0), y[split.train].std(0)
    tcfg = TrainConfig(**{"epochs": epochs, "seed": seed if train_seed is None else train_seed, "progress": False, "device": device, **topt})
    vcfg = ViTConfig(**{"in_channels": x.shape[1], "window": window, "n_outputs": y.shape[1], **vopt})
    t0 = time.perf_counter()
    image = (sample.image - sample.image.mean((1, 2))[:, None, None]) / sample.image.std((1, 2))[:, None, None]
    model, hist = fit_vit(x, (y - ym) / ys, train_index=split.train, val_index=split.val, vit=vcfg, train=tcfg,
                          pretrain_image=image.astype(np.float32))
    secs = time.perf_counter() - t0
    with torch.no_grad():
        pred = model(torch.as_tensor(x)).numpy() * ys + ym
    res = {"config": config, "texture": texture, "targets": list(sample.target_names), "seconds": secs,
           "best_epoch": hist["best_epoch"], "stopped_epoch": hist["stopped_epoch"],
           "vit_val": r2(y[split.val], pred[split.val]).tolist(),
           "vit_test": r2(y[split.test], pred[split.test]).tolist(),
           "n": [len(split.train), len(split.val), len(split.test)]}
    if "linear_base" in hist:
        res["linear_base"] = hist["linear_base"]
    if baselines:
        t0 = time.perf_counter()
        b = fit_baselines(x, y, sample.positions, shape=sample.shape, train=split.train, val=split.val,
                          test=split.test, train_cfg=TrainConfig(**{"epochs": epochs, "seed": seed, "progress": False, "device": device}))
        res["baseline_seconds"] = time.perf_counter() - t0
        res["baselines_val"] = {k: r2(y[split.val], p[split.val]).tolist() for k, p in b.predictions.items()}
        res["baselines_test"] = {k: v.tolist() for k, v in b.r2.items()}
    out.mkdir(parents=True, exist_ok=True)
    if train_seed is not None:
        res["train_seed"] = train_seed
    tag = "" if train_seed is None else f"__seed{train_seed}"
    (out / f"{config}__{texture}{tag}.json").write_text(json.dumps(res, indent=1))
    return res


def summary(folder: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    if not rows:
        print("no results")
        return
    names = rows[0]["targets"]
    print(f"{'config':18s} {'n':>2s} {'sec':>6s} " + " ".join(f"{n[:10]:>10s}" for n in names) + "   mean")
    by = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    for cfg, rs in by.items():
        v = np.mean([r["vit_val"] for r in rs], 0)
        print(f"{cfg:18s} {len(rs):2d} {np.mean([r['seconds'] for r in rs]):6.0f} "
              + " ".join(f"{x:10.2f}" for x in v) + f"   {v.mean():.3f}")
    for key in ("ridge", "cnn", "position", "mean"):
        vals = [r["baselines_val"][key] for r in rows if "baselines_val" in r]
        if vals:
            v = np.mean(vals, 0)
            print(f"{'['+key+']':18s} {len(vals):2d} {'':6s} " + " ".join(f"{x:10.2f}" for x in v) + f"   {v.mean():.3f}")


def screen(new: Path, new_config: str, ref: Path, ref_config: str, *, floor: float = 0.1) -> dict:
    """The screen of rounds 15b-22: means over training seeds x images of the validation R², candidate
    against reference, on the images and seeds both have. Passes if the mean over the rules and the
    nonlinear mean rise by at least 0.01 and no rule falls by more than 0.02, where an image on which the
    reference's R² of a rule (mean over its seeds) is below `floor` is left out of that rule's check."""
    def load(folder: Path, config: str) -> dict:
        out = {}
        for p in sorted(folder.glob(f"{config}__*.json")):
            r = json.loads(p.read_text())
            if r["config"] == config:
                out[(r["texture"], r.get("train_seed", 0))] = r
        return out
    a, b = load(new, new_config), load(ref, ref_config)
    keys = sorted(set(a) & set(b))
    if not keys:
        raise SystemExit(f"screen: no image and seed in common between {new}/{new_config} and {ref}/{ref_config}")
    names = a[keys[0]]["targets"]
    res = {}
    for part in ("vit_val", "vit_test"):
        va, vb = (np.mean([x[k][part] for k in keys], 0) for x in (a, b))
        res[part] = {"candidate": va.tolist(), "reference": vb.tolist(), "difference": (va - vb).tolist()}
    nl = [names.index(n) for n in NONLINEAR if n in names]
    d = np.array(res["vit_val"]["difference"])
    falls = {}
    imgs = sorted({t for t, _ in keys})
    for j, n in enumerate(names):  # per rule, over the images the reference learns it on (seed means)
        per = []
        for t in imgs:
            ks = [k for k in keys if k[0] == t]
            ref_r2 = np.mean([b[k]["vit_val"][j] for k in ks])
            if ref_r2 >= floor:
                per.append(np.mean([a[k]["vit_val"][j] for k in ks]) - ref_r2)
        falls[n] = float(np.mean(per)) if per else None
    checked = [v for v in falls.values() if v is not None]
    res.update(names=names, keys=[list(k) for k in keys], mean_change=float(d.mean()), nonlinear_change=float(d[nl].mean()),
               no_fall_check=falls, passes=bool(d.mean() >= 0.01 and d[nl].mean() >= 0.01 and min(checked) >= -0.02),
               seconds={"candidate": [a[k]["seconds"] for k in keys], "reference": [b[k]["seconds"] for k in keys]},
               best_epochs={"candidate": [a[k]["best_epoch"] for k in keys], "reference": [b[k]["best_epoch"] for k in keys]})
    print(f"screen: {new_config} against {ref_config} on {len(keys)} image-seeds: {keys}")
    print(f"{'':22s} " + " ".join(f"{n[:12]:>12s}" for n in names) + f" {'mean':>7s} {'nonlinear':>9s}")
    for part in ("vit_val", "vit_test"):
        for row in ("reference", "candidate", "difference"):
            v = np.array(res[part][row])
            print(f"{part[4:]:4s} {row:17s} " + " ".join(f"{x:12.3f}" for x in v) + f" {v.mean():7.3f} {v[nl].mean():9.3f}")
    print("no-fall check (images the reference learns): " + ", ".join(
        f"{n} {v:+.3f}" if v is not None else f"{n} -" for n, v in falls.items()))
    print(f"mean {res['mean_change']:+.3f}, nonlinear mean {res['nonlinear_change']:+.3f}: "
          + ("PASSES" if res["passes"] else "fails"))
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS))
    ap.add_argument("--texture", choices=sorted(TEXTURES))
    ap.add_argument("--out", type=Path, default=Path("bench/results/sweep"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--baselines", action="store_true")
    ap.add_argument("--train-seed", type=int, default=None,
                    help="seed of the training alone (weights, batches, dropout); the data and split keep seed 0")
    ap.add_argument("--summary", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--screen", nargs=4, metavar=("NEW_DIR", "NEW_CONFIG", "REF_DIR", "REF_CONFIG"),
                    help="the screen's rule: candidate against reference, means over seeds x images")
    a = ap.parse_args()
    if a.screen:
        res = screen(Path(a.screen[0]), a.screen[1], Path(a.screen[2]), a.screen[3])
        (Path(a.screen[0]) / f"screen__{a.screen[1]}.json").write_text(json.dumps(res, indent=1))
    elif a.summary:
        summary(a.summary)
    else:
        torch.set_num_threads(int(__import__("os").environ.get("SWEEP_THREADS", "2")))
        r = run(a.config, a.texture, out=a.out, epochs=a.epochs, baselines=a.baselines, device=a.device,
                train_seed=a.train_seed)
        print(a.config, a.texture, f"{r['seconds']:.0f}s", np.round(r["vit_val"], 2))
