"""Does the trained ViT's head under-use its own final states? (issue 12, exploratory)

For every run folder of the semi-synthetic benchmark (default: bench/.runs, the default run on
the nine shared images), take the trained ViT, compute the final layer-normed token states of
every point, and fit a ridge read-out on them (all tokens flattened; training points only,
penalty chosen per target on the validation blocks). Per rule, next to the ViT's own test R²:
the refit's test R², and "chosen": per target whichever of the two has the higher validation
R² (what a run could do without looking at the test blocks). Ridge on pixels and the CNN are
the run's own baselines.

    python bench/probe_readout.py [--runs bench/.runs] [--out bench/results/probe_readout.json]
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

ALPHAS = np.logspace(-1, 5, 13)


def r2(t: np.ndarray, p: np.ndarray, names: list[str]) -> np.ndarray:
    s = regression_scores(t, p, names)
    return np.array([s[n]["r2"] for n in names])


def one_run(run: Path) -> dict:
    tm = TrainedModel.load(run / "model.pt")
    p = np.load(run / "predictions.npz")
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    sample = load_sample(cfg.get("source") or cfg["run"]["source"])
    names = [str(n) for n in p["target_names"]]
    split, y = p["split"], p["y_true"].astype(float)
    x = tm.standardise(extract_patches(sample.image, p["positions"], window=tm.window))
    model = tm.model.eval()
    with torch.no_grad():
        z = torch.cat([model.norm(model.encode(x[i:i + 256])[0]) for i in range(0, len(x), 256)])
    f = z.reshape(len(z), -1).numpy().astype(np.float64)
    tr, va, te = (split == k for k in (0, 1, 2))
    mu, sd = f[tr].mean(0), f[tr].std(0) + 1e-8
    f = (f - mu) / sd
    best_val = np.full(len(names), -np.inf)
    refit_val, refit_test = np.zeros(len(names)), np.zeros(len(names))
    for alpha in ALPHAS:  # all targets at once; the penalty is then chosen per target
        reg = Ridge(alpha=alpha * len(f[tr])).fit(f[tr], y[tr])
        v = r2(y[va], reg.predict(f[va]), names)
        t = r2(y[te], reg.predict(f[te]), names)
        better = v > best_val
        best_val[better], refit_val[better], refit_test[better] = v[better], v[better], t[better]
    vit_val = r2(y[va], p["y_pred"][va], names)
    vit_test = np.array([m["targets"][n]["r2"] for n in names])
    chosen = np.where(refit_val > vit_val, refit_test, vit_test)
    return {n: {"vit": float(vit_test[k]), "vit_val": float(vit_val[k]), "refit": float(refit_test[k]),
                "refit_val": float(refit_val[k]), "chosen": float(chosen[k]),
                "ridge": m["targets"][n]["baselines"]["ridge"], "cnn": m["targets"][n]["baselines"]["cnn"]}
            for k, n in enumerate(names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("bench/.runs"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/probe_readout.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    runs = sorted(r for r in a.runs.iterdir() if (r / "model.pt").is_file() and r.name.startswith(("PTO", "BTFO")))
    per = {}
    for r in runs:
        per[r.name] = one_run(r)
        print(r.name, {n: round(v["chosen"] - v["vit"], 3) for n, v in per[r.name].items()}, flush=True)
    rules = list(next(iter(per.values())))
    cols = ("vit", "refit", "chosen", "ridge", "cnn", "vit_val", "refit_val")
    print(f"{'rule':16s}" + "".join(f"{c:>10s}" for c in cols))
    summary = {}
    for rule in rules:
        summary[rule] = {c: float(np.mean([per[r][rule][c] for r in per])) for c in cols}
        print(f"{rule:16s}" + "".join(f"{summary[rule][c]:10.3f}" for c in cols))
    a.out.write_text(json.dumps({"runs": per, "rules": summary}, indent=1))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
