"""Does a deep ensemble help the ViT more than the CNN baseline? (issue 12 lead)

For each real texture (rules of `structattn.data.semisynthetic`, the split and options of
`bench/sweep_vit.py`'s round-3/4 default: stem 16, weight decay 0.3, buffer 8, 80 epochs) and
each seed, one process trains the ViT and the CNN baseline (same trainer, options and seed) and
saves their test predictions. `--summary` averages the seeds' predictions and prints the test R²
of one model and of the mean of all seeds, for the ViT and the CNN, per rule.

    python bench/bench_ensemble.py --texture PTO_Funakubo0004 --seed 1     # one process
    python bench/bench_ensemble.py --summary                               # -> bench/results/ensemble.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT = Path(__file__).resolve().parent / "results" / "ensemble"
RESULT = Path(__file__).resolve().parent / "results" / "ensemble.json"


def one(texture: str, seed: int) -> None:
    import torch

    from structattn.data.io import load_sample
    from structattn.data.patches import extract_patches
    from structattn.nets.vit import ViTConfig
    from structattn.train.baselines import fit_baselines
    from structattn.train.split import spatial_block_split
    from structattn.train.trainer import TrainConfig, fit_vit, standardise_patches
    from sweep_vit import TEXTURES

    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "1")))
    sample = load_sample(f"semisynthetic:image={TEXTURES[texture]},seed=0")  # the rules' noise: fixed
    split = spatial_block_split(sample.positions, shape=sample.shape, blocks=4, val_fraction=0.15, test_fraction=0.2,
                                buffer=8, seed=0)  # the split: fixed; only the models' seed varies
    x = standardise_patches(extract_patches(sample.image, sample.positions, window=32),
                            sample.image.mean((1, 2)), sample.image.std((1, 2)))
    y = sample.targets
    ym, ys = y[split.train].mean(0), y[split.train].std(0)
    tcfg = TrainConfig(epochs=80, seed=seed, progress=False)  # weight decay 0.3: the default, as the CNN's
    vcfg = ViTConfig(in_channels=x.shape[1], window=32, n_outputs=y.shape[1], stem=16)
    model, _ = fit_vit(x, (y - ym) / ys, train_index=split.train, val_index=split.val, vit=vcfg, train=tcfg)
    with torch.no_grad():
        vit = model(torch.as_tensor(x[split.test])).numpy() * ys + ym
    b = fit_baselines(x, y, sample.positions, shape=sample.shape, train=split.train, val=split.val, test=split.test,
                      train_cfg=tcfg)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / f"{texture}_seed{seed}.npz", y=y[split.test], vit=vit, cnn=b.predictions["cnn"][split.test],
             ridge=b.predictions["ridge"][split.test], names=np.array(sample.target_names))


def summary() -> None:
    from sweep_vit import r2

    by: dict = {}
    for f in sorted(OUT.glob("*.npz")):
        by.setdefault(f.stem.rsplit("_seed", 1)[0], []).append(np.load(f))
    res = {}
    for tex, runs in by.items():
        names = [str(n) for n in runs[0]["names"]]
        y = runs[0]["y"]
        row = {"seeds": len(runs)}
        for m in ("vit", "cnn"):
            row[m] = dict(zip(names, np.mean([r2(y, r[m]) for r in runs], 0).round(4).tolist()))
            row[f"{m}_mean_of_{len(runs)}"] = dict(zip(names, r2(y, np.mean([r[m] for r in runs], 0)).round(4).tolist()))
        row["ridge"] = dict(zip(names, r2(y, runs[0]["ridge"]).round(4).tolist()))
        res[tex] = row
        print(tex, f"({len(runs)} seeds)")
        for t in names:
            print(f"  {t:15s} ViT {row['vit'][t]:6.3f} -> {row[f'vit_mean_of_{len(runs)}'][t]:6.3f}   "
                  f"CNN {row['cnn'][t]:6.3f} -> {row[f'cnn_mean_of_{len(runs)}'][t]:6.3f}   ridge {row['ridge'][t]:6.3f}")
    RESULT.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texture")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    summary() if a.summary else one(a.texture, a.seed)
