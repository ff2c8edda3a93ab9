"""Where does the ViT lose a linear rule's extrapolation? (issue 12, PTO_Funakubo0003)

On PTO_Funakubo0003 the test blocks hold amp_corner values up to 4.6 while the training maximum
is 1.7; ridge on the pixels extrapolates (R² 0.99), the ViT and the CNN do not (0.71, 0.66). This
probe takes the benchmark's trained ViT (bench/.runs/<texture>/model.pt) and fits a ridge read-out
(penalty chosen on the validation blocks) on the training points from each stage of the network,
then scores it on the test blocks: a stage whose probe extrapolates still carries the rule
linearly; where the probe stops extrapolating, that stage lost it.

    python bench/probe_extrapolation.py [--run bench/.runs/PTO_Funakubo0003] [--target amp_corner]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import Ridge

from structattn.data import load_sample
from structattn.data.patches import extract_patches
from structattn.train.metrics import regression_scores
from structattn.train.trainer import TrainedModel


def probe(f: np.ndarray, y: np.ndarray, split: np.ndarray) -> tuple[float, float]:
    """Ridge from features to y: penalty by validation R², then (test R², slope of prediction on truth)."""
    f = f.reshape(len(f), -1)
    mu, sd = f[split == 0].mean(0), f[split == 0].std(0) + 1e-8
    f = (f - mu) / sd
    best = None
    for alpha in np.logspace(-2, 5, 15):
        r = Ridge(alpha=alpha).fit(f[split == 0], y[split == 0])
        v = regression_scores(y[split == 1, None], r.predict(f[split == 1])[:, None], ["y"])["y"]["r2"]
        if best is None or v > best[0]:
            best = (v, r)
    pred = best[1].predict(f[split == 2])
    t = y[split == 2]
    return regression_scores(t[:, None], pred[:, None], ["y"])["y"]["r2"], float(np.polyfit(t, pred, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("bench/.runs/PTO_Funakubo0003"))
    ap.add_argument("--target", default="amp_corner")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tm = TrainedModel.load(a.run / "model.pt")
    p = np.load(a.run / "predictions.npz")
    cfg = json.loads((a.run / "config.json").read_text())
    sample = load_sample(cfg.get("source") or cfg["run"]["source"])
    k = [str(n) for n in p["target_names"]].index(a.target)
    split, y = p["split"], p["y_true"][:, k].astype(float)
    x = tm.standardise(extract_patches(sample.image, p["positions"], window=tm.window))
    m = tm.model.eval()
    with torch.no_grad():
        emb = torch.cat([m.tokens(x[i:i + 256]) for i in range(0, len(x), 256)])
        h = torch.cat([m.encode(x[i:i + 256])[0] for i in range(0, len(x), 256)])
        z = m.norm(h)
    print(f"{a.run.name}, {a.target}: training max {y[split == 0].max():.2f}, test max {y[split == 2].max():.2f}")
    t = y[split == 2]
    pred = p["y_pred"][split == 2, k]
    r2 = regression_scores(t[:, None], pred[:, None], ["y"])["y"]["r2"]
    print(f"{'the ViT itself':34s} test R² {r2:6.3f}  slope {np.polyfit(t, pred, 1)[0]:.2f}")
    for label, f in (("pixels (standardised)", x.numpy()), ("token embeddings (after the stem)", emb.numpy()),
                     ("final states before LayerNorm", h.numpy()), ("final states after LayerNorm", z.numpy())):
        r2, slope = probe(f, y, split)
        print(f"{label:34s} test R² {r2:6.3f}  slope {slope:.2f}")


if __name__ == "__main__":
    main()
