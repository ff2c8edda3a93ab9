"""Is the linear readout what holds threshold and product back? (issue 12, a probe; no default changes)

The default `spatial` readout is linear in the final token states: y_k = head(cls)_k + w_k . v_k with
v_k = sum_t s_kt z_t, a learned weighting s_k of the layer-normed patch-token states z_t. A steep
sigmoid of one region's mean (`threshold`) or the product of two regions' means (`product`) then has to
be formed inside the blocks. This probe freezes a trained run's ViT and, per target k, reads the features
[z_cls, v_k] of every point. On the training points it fits

* ``linear``: ridge on those features (penalty on the validation blocks): a linear refit, the control;
* ``mlp``: scikit-learn's MLPRegressor (one hidden layer of 64 ReLU units, Adam, seed 0, at most 2000
  iterations; L2 penalty ``alpha`` from 1e-4 .. 1e-1 chosen on the validation blocks),

both on features (and, for the MLP, targets) standardised on the training points, and prints validation and test R² next to the
model's own. Rule, written before the run it reads (docs/training.md, after round 17): a round 18 (a
nonlinear head on the pooled readout) is motivated only if ``mlp`` beats ``linear`` by at least 0.03
test R² on threshold or product and by a positive margin on the validation blocks of the same rule.

    python bench/probe_nonlinear_head.py RUN [RUN ...] [--out bench/results/probe_nonlinear_head.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPRegressor

from structattn.data import load_sample
from structattn.data.patches import extract_patches
from structattn.train.trainer import TrainedModel

RIDGE_ALPHAS = np.logspace(-3, 4, 15)
MLP_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1)


def pooled_features(tm: TrainedModel, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, K, 2 dim): per point and output k, the [CLS] state and v_k = sum_t s_kt z_t (normed states)."""
    model = tm.model.eval()
    d = model.cfg.dim
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            h, _ = model.encode(torch.as_tensor(x[i:i + batch]))
            z = model.norm(h[..., :d])
            v = torch.einsum("btd,kt->bkd", z[:, 1:], model.read_where)
            out.append(torch.cat([z[:, :1].expand(-1, v.shape[1], -1), v], -1).numpy())
    return np.concatenate(out).astype(np.float64)


def _best(fits, va, te, y):
    """Fit each candidate on the training points; keep the one with the highest validation R²."""
    best = (-np.inf, np.nan)
    for fit in fits:
        p = fit()
        v = r2_score(y[va], p[va])
        if v > best[0]:
            best = (v, r2_score(y[te], p[te]))
    return best


def one_run(run: Path) -> dict:
    tm = TrainedModel.load(run / "model.pt")
    if tm.model.cfg.readout != "spatial":
        raise SystemExit(f"{run}: the probe reads the `spatial` readout, this model has {tm.model.cfg.readout!r}")
    p = np.load(run / "predictions.npz")
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    sample = load_sample(cfg["run"]["source"])
    names = [str(n) for n in p["target_names"]]
    split, y_all = p["split"], p["y_true"].astype(float)
    tr, va, te = (split == k for k in (0, 1, 2))
    x = tm.standardise(extract_patches(sample.image, p["positions"], window=tm.window))
    feats = pooled_features(tm, x)
    res = {}
    for k, name in enumerate(names):
        y = y_all[:, k]
        f = feats[:, k]
        f = (f - f[tr].mean(0)) / (f[tr].std(0) + 1e-8)
        lin = _best([lambda a=a: Ridge(alpha=a).fit(f[tr], y[tr]).predict(f) for a in RIDGE_ALPHAS], va, te, y)
        mu, sd = y[tr].mean(), y[tr].std() or 1.0  # Adam's default step suits unit-scale targets
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp = _best([lambda a=a: mu + sd * MLPRegressor(hidden_layer_sizes=(64,), alpha=a, max_iter=2000,
                                                            random_state=0).fit(f[tr], (y[tr] - mu) / sd).predict(f)
                         for a in MLP_ALPHAS], va, te, y)
        res[name] = {"model_val": r2_score(y[va], p["y_pred"][va, k]), "model_test": r2_score(y[te], p["y_pred"][te, k]),
                     "linear_val": lin[0], "linear_test": lin[1], "mlp_val": mlp[0], "mlp_test": mlp[1],
                     "predicted_by": m["targets"][name].get("predicted_by", "vit"),
                     "cnn": m["targets"][name]["baselines"]["cnn"]}
        r = res[name]
        print(f"{run.name} {name:15s} ({r['predicted_by']:5s}) model {r['model_val']:.3f}/{r['model_test']:.3f}  "
              f"linear {r['linear_val']:.3f}/{r['linear_test']:.3f}  mlp {r['mlp_val']:.3f}/{r['mlp_test']:.3f}  "
              f"(val/test; CNN test {r['cnn']:.3f})", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path("bench/results/probe_nonlinear_head.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    per = {r.name: one_run(r) for r in a.runs}
    verdict = {}
    for rule in ("threshold", "product"):
        rows = [v[rule] for v in per.values() if rule in v]
        dt = float(np.mean([r["mlp_test"] - r["linear_test"] for r in rows]))
        dv = float(np.mean([r["mlp_val"] - r["linear_val"] for r in rows]))
        verdict[rule] = {"mlp_minus_linear_test": dt, "mlp_minus_linear_val": dv, "motivates": dt >= 0.03 and dv > 0}
    print(json.dumps(verdict, indent=1))
    a.out.write_text(json.dumps({"runs": per, "verdict": verdict}, indent=1))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
