"""Round 17: should the verdict judge the deep ensemble's mean against a CNN ensemble of the same size?

The default run trains 3 ViTs (issue 15's deep ensemble) and `structattn predict` / `suggest` centre
their maps on the ensemble mean, yet the run's test R² and its verdict are member 0's, against one
CNN. This benchmark runs, per real texture, the default run's own stages (load, geometry, split,
targets, fit, ridge choice, uncertainty, baselines; no explanations), trains the CNN baseline again
with the ensemble members' seeds (seed + 1, seed + 2: the same trainer, options and split) and saves
every test prediction:

    python bench/bench_ensemble_verdict.py --image PTO_Funakubo0001        # one texture (one process)
    python bench/bench_ensemble_verdict.py --summary                       # -> bench/results/ensemble_verdict.json
                                                                           #    (keeps the rows of images run before)

The rule, written before any of these runs (docs/training.md, round 17): the change (run R² and
verdict from the ensemble mean, the CNN baseline an ensemble of the same size) is adopted if, on
the nine images, the mean lead over the best baseline does not fall by more than 0.02 on any of the
three nonlinear rules the ViT carries (wall_density, threshold, product) and rises on at least one.
Step 1 screens the first three textures in alphabetical order; step 2 runs the other six.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEX = ROOT / "bench" / ".textures"
OUT = ROOT / "bench" / "results" / "ensemble_verdict"
RESULT = ROOT / "bench" / "results" / "ensemble_verdict.json"
NONLINEAR = ("wall_density", "threshold", "product")


def one(image: str, out: Path = OUT, **changed) -> None:
    """`changed`: options away from the default (a quick check only, e.g. epochs=1)."""
    import torch

    from structattn.pipeline import (RunConfig, baselines_stage, fit_stage, load_stage, resolve_geometry,
                                     ridge_choice_stage, split_stage, targets_stage, uncertainty_stage)
    from structattn.train.baselines import fit_cnn
    from structattn.train.ensemble import member_seed

    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "1")))
    t0 = time.perf_counter()
    cfg = RunConfig(source=f"semisynthetic:image={TEX / (image + '.npz')}", device="cpu", progress=False,
                    domains=False, **changed)  # every other option the default's, as bench_semisynth's runs
    say = lambda msg: print(f"{image}: {msg}", flush=True)  # noqa: E731
    sample, checksum = load_stage(cfg, None, say)
    geo = resolve_geometry(sample, cfg)
    usable, split = split_stage(cfg, sample, geo)
    d = targets_stage(cfg, sample, checksum, geo, usable, split, say)
    f = fit_stage(cfg, d, usable, say)
    ridge_choice_stage(cfg, d, f, usable, say)
    uncertainty_stage(cfg, d, f, usable, say)
    baselines_stage(cfg, d, f, say)
    seconds = {"run_stages": time.perf_counter() - t0}
    t1 = time.perf_counter()
    cnns = [f.baselines.predictions["cnn"][d.test]]
    for k in range(1, cfg.ensemble):
        pred, _ = fit_cnn(d.source, d.y, train=d.train, val=d.val,  # the CNN alone: ridge and position need no refit
                          train_cfg=dataclasses.replace(f.train_cfg, seed=member_seed(cfg.seed, k)))
        cnns.append(pred[d.test])
    seconds["cnn_members"] = time.perf_counter() - t1
    names = list(d.targets.names)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"{image}.npz", names=np.array(names), y=d.y[d.test], run=f.pred[d.test], ensemble=f.y_mean[d.test],
             cnn=np.stack(cnns), **{b: f.baselines.predictions[b][d.test] for b in ("mean", "ridge", "position")},
             vit_alone=np.array([f.scores[n]["choice"]["vit_test_r2"] if f.scores[n].get("predicted_by") == "ridge"
                                 else f.scores[n]["r2"] for n in names], dtype=float),
             predicted_by=np.array([f.scores[n].get("predicted_by", "vit") for n in names]),
             std=f.y_std[d.test], coverage_95=np.array([f.scores[n]["coverage_95"] for n in names], dtype=float),
             coverage_68=np.array([f.scores[n]["coverage_68"] for n in names], dtype=float),
             seconds=json.dumps(seconds))
    say(f"done in {time.perf_counter() - t0:.0f} s")


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    return float(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def summary(src: Path = OUT, result: Path = RESULT) -> dict:
    """Per image and rule: the current verdict's figures (member 0 against one CNN) and the proposed
    one's (the ensemble mean against the mean of as many CNNs); the lead over the best baseline.
    An image already in `result` whose prediction file is not in `src` keeps its row there (the files
    are not committed); an image with a file is computed afresh."""
    per: dict = {}
    files = sorted(src.glob("*.npz"))
    fresh = {p.stem for p in files}
    if result.exists():  # the npz files are not committed (bench/results/.gitignore): keep the rows of earlier ones
        for name, rule in json.loads(result.read_text())["rules"].items():
            for image, row in rule["per_image"].items():
                if image not in fresh:
                    per.setdefault(name, {})[image] = row
    for p in files:
        z = np.load(p)
        for k, name in enumerate(z["names"].tolist()):
            y = z["y"][:, k]
            base = {b: _r2(y, z[b][:, k]) for b in ("mean", "ridge", "position")}
            now = {"run": _r2(y, z["run"][:, k]), "cnn": _r2(y, z["cnn"][0][:, k])}
            new = {"run": _r2(y, z["ensemble"][:, k]), "cnn": _r2(y, z["cnn"][:, :, k].mean(0))}
            row = {"predicted_by": str(z["predicted_by"][k]), **base,
                   # one CNN's expected R² (the mean over the seeds' CNNs): the single CNN without its seed's luck
                   "cnn_each": [_r2(y, c[:, k]) for c in z["cnn"]]}
            row["lead_cnn_seeds"] = now["run"] - float(np.mean(row["cnn_each"]))
            for label, fig in (("now", now), ("ensemble", new)):
                best = max(fig["cnn"], *base.values())
                row[label] = {**fig, "lead": fig["run"] - best, "lead_cnn": fig["run"] - fig["cnn"]}
            per.setdefault(name, {})[p.stem] = row
    rules = {}
    for name, rows in per.items():
        mean = lambda key, sub: float(np.mean([r[key][sub] for r in rows.values()]))  # noqa: E731
        seeds = np.array([r["lead_cnn_seeds"] for r in rows.values()])
        rules[name] = {"n": len(rows), **{f"{label}_{sub}": mean(label, sub) for label in ("now", "ensemble")
                                          for sub in ("run", "cnn", "lead", "lead_cnn")},
                       "now_lead_cnn_seeds": float(seeds.mean()),
                       # how far the mean over these images is from the mean over textures like them
                       "now_lead_cnn_seeds_se": float(seeds.std(ddof=1) / np.sqrt(len(seeds))) if len(seeds) > 1 else None,
                       "per_image": rows}
    nonlinear = {r: rules[r]["ensemble_lead"] - rules[r]["now_lead"] for r in NONLINEAR if r in rules}
    out = {"rules": rules, "lead_change": nonlinear,
           "rule_met": bool(nonlinear) and min(nonlinear.values()) >= -0.02 and max(nonlinear.values()) > 0,
           "images": sorted({i for rows in per.values() for i in rows})}
    result.write_text(json.dumps(out, indent=1))
    print(f"{'rule':16s} {'run now':>8s} {'CNN':>6s} {'lead':>7s} | {'ens.':>6s} {'CNN ens':>7s} {'lead':>7s} | "
          f"{'run - mean CNN seed (± s.e.)':>28s}")
    for name, r in rules.items():
        print(f"{name:16s} {r['now_run']:8.3f} {r['now_cnn']:6.3f} {r['now_lead']:+7.3f} | {r['ensemble_run']:6.3f} "
              f"{r['ensemble_cnn']:7.3f} {r['ensemble_lead']:+7.3f} | {r['now_lead_cnn_seeds']:+19.3f} "
              f"± {r['now_lead_cnn_seeds_se'] or float('nan'):.3f}")
    print(f"images: {', '.join(out['images'])}; lead change on the nonlinear rules: "
          + ", ".join(f"{r} {v:+.3f}" for r, v in nonlinear.items()) + f"; rule met: {out['rule_met']}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", help="texture name (bench/.textures/NAME.npz)")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the per-image predictions")
    ap.add_argument("--result", type=Path, default=RESULT)
    a = ap.parse_args(argv)
    if a.summary:
        summary(a.out, a.result)
    elif a.image:
        one(a.image, a.out)
    else:
        ap.error("give --image NAME or --summary")


if __name__ == "__main__":
    sys.exit(main())
