"""`--prefer-ridge` (docs/training.md, round 10c) applied to finished benchmark runs, without retraining.

The ViT of a `--prefer-ridge` run is the default run's ViT (same seed, same training: the choice is
made after it). So for each run folder of `bench_semisynth.py` this script does what the run's
`ridge_choice_stage` would have done: choose the targets by `structattn.pipeline.ridge_choice` on
the validation blocks, hold ridge for them in the saved model (`predict_linearly`, ridge fitted by
`pixel_ridge` on the run's own patches and split), update the predictions and test scores, and
re-explain the same points with the same methods (`structattn.explain_run`). The copies go to
--out, ready for `bench_semisynth.py --summary --runs OUT` and `--compare`:

    python bench/prefer_ridge_posthoc.py --runs bench/.runs --out bench/.runs_ridge
    python bench/bench_semisynth.py --summary --runs bench/.runs_ridge --result bench/results/semisynth_ridge.json
    python bench/bench_semisynth.py --compare bench/results/semisynth.json bench/results/semisynth_ridge.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from bench_semisynth import METHODS


def apply(run: Path, out: Path) -> list[str]:
    from structattn.explain_run import explain_run
    from structattn.nets.vit import predict_linearly
    from structattn.pipeline import ridge_choice
    from structattn.runfolder import RunFolder, atomic_write_json
    from structattn.scale.patches import PatchSource
    from structattn.train.baselines import learned_verdict, r2_margin
    from structattn.train.metrics import regression_scores
    from structattn.train.trainer import pixel_ridge

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoints"))
    rf = RunFolder(out)
    p = dict(np.load(out / "predictions.npz"))
    split, names = p["split"], [str(n) for n in p["target_names"]]
    val, test = np.flatnonzero(split == 1), np.flatnonzero(split == 2)
    choice = ridge_choice(p["y_true"][val], p["y_pred"][val], p["y_pred_ridge"][val], seed=0)
    chosen = [k for k, c in enumerate(choice) if c["predicted_by"] == "ridge"]
    metrics = json.loads((out / "metrics.json").read_text())
    for name, c in zip(names, choice):
        metrics["targets"][name].update(predicted_by=c["predicted_by"], choice=c)
    if chosen:
        tm = rf.model
        s = rf.sample
        source = PatchSource(s.image, s.positions, window=tm.window, pad_mode=tm.pad_mode, mean=tm.channel_mean,
                             std=tm.channel_std)
        r = pixel_ridge(source, (p["y_true"] - tm.target_mean) / tm.target_std, train_index=np.flatnonzero(split == 0),
                        val_index=val)
        ridge_val = r["val_pred"] * tm.target_std + tm.target_mean
        gap = np.abs(ridge_val[:, chosen] - p["y_pred_ridge"][val][:, chosen]).max()
        assert gap <= 1e-3 * p["y_true"][:, chosen].std(), f"{run.name}: pixel_ridge differs from the run's ridge by {gap}"
        tm.model = predict_linearly(tm.model, chosen, r["weight"], r["bias"])
        tm.save(out / "model.pt")
        usable = np.flatnonzero(split >= 0)
        pred = tm.predict_points(source, usable)
        p["y_pred"][usable[:, None], np.array(chosen)[None]] = pred[:, chosen]
        np.savez_compressed(out / "predictions.npz", **p)
        sc = regression_scores(p["y_true"][test], p["y_pred"][test], names)
        for k in chosen:
            t = metrics["targets"][names[k]]
            t.update(sc[names[k]])
            best = t["best_baseline"]
            margin = r2_margin(p["y_true"][test, k], p["y_pred"][test, k], p[f"y_pred_{best}"][test, k], seed=0)
            learned, _, verdict = learned_verdict(names[k], t["r2"], t["baselines"], margin=margin)
            t.update(learned=bool(learned), margin=margin, verdict=verdict + " Predicted by ridge (--prefer-ridge).")
    atomic_write_json(out / "metrics.json", metrics)
    explain_run(out, methods=METHODS, points="96", seed=0)
    return [names[k] for k in chosen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="folder of finished bench_semisynth run folders")
    ap.add_argument("--out", type=Path, required=True, help="folder for the changed copies")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for run in sorted(d for d in a.runs.iterdir() if (d / "metrics.json").is_file()):
        t0 = time.perf_counter()
        chosen = apply(run, a.out / run.name)
        print(f"{run.name}: ridge predicts {', '.join(chosen) or 'nothing'} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
