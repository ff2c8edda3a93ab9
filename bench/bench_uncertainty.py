"""Uncertainty of finished runs (issue 15): ensemble calibration, MC dropout beside it, dense maps.

For each run folder given (trained with the default deep ensemble):

1. the test-block coverage of the calibrated ensemble, as the run recorded it, next to the
   same numbers for a scale-only calibration (recomputed from predictions.npz and the
   members), and next to **MC dropout** on the primary model (20 stochastic passes,
   the same calibration fitted on the same validation blocks): is the ensemble needed?
2. dense prediction of the whole structure image at step 1 (`structattn predict`, in a fresh
   process): wall time and peak resident memory (the process's ru_maxrss), and the maps
   figure copied to docs/img/.

    python bench/bench_uncertainty.py RUN [RUN ...]      # -> bench/results/uncertainty.json

Runs used for the README (2 shared CPU cores):
    structattn run ../shared/data/pto_beps_50x50.h5 --targets V+,V-,imprint --window 16 --out runs/beps
    structattn run semisynthetic:image=../shared/data/pto_pfm_images/PTO_Funakubo0001.h5 --out runs/semi1
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "uncertainty.json"
PASSES = 20


def mc_dropout(model, patches, *, passes: int = PASSES, seed: int = 0, batch: int = 256) -> np.ndarray:
    """(passes, N, K) predictions with dropout active (target units)."""
    import torch

    x = model.standardise(patches)
    outs = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model.model.train()  # LayerNorm only, so train() changes nothing but dropout
        try:
            with torch.no_grad():
                for _ in range(passes):
                    outs.append(torch.cat([model.model(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy())
        finally:
            model.model.eval()
    return np.stack(outs) * model.target_std + model.target_mean


def calibration_table(run_dir: Path) -> dict:
    from structattn.data.patches import extract_patches
    from structattn.runfolder import RunFolder
    from structattn.train.uncertainty import ensemble_stats, fit_calibration, uncertainty_scores

    run = RunFolder(run_dir)
    p, m = run.predictions, run.metrics
    names = [str(t) for t in p["target_names"]]
    val, test = np.flatnonzero(p["split"] == 1), np.flatnonzero(p["split"] == 2)
    s = run.sample
    cfg = run.config["run"]
    pad = "edge" if cfg["pad_mode"] == "exclude" else cfg["pad_mode"]
    idx = np.concatenate([val, test])
    patches = extract_patches(s.image, s.positions[idx], window=int(cfg["window"]), pad_mode=pad)
    y = p["y_true"][idx]
    nv = len(val)
    out = {"run": str(run_dir), "source": run.config["data"]["source"], "n_val": nv, "n_test": len(test),
           "ensemble_recorded": {t: {k: m["targets"][t].get(k) for k in ("coverage_68", "coverage_95", "r2",
                                                                          "r2_ensemble")} for t in names},
           "uncertainty_seconds": m["uncertainty"].get("seconds"),
           "primary_training_seconds": m["training"].get("seconds")}
    members = run.members
    preds = np.stack([mm.predict(patches) for mm in members])
    mean, spread = ensemble_stats(preds)
    for method in ("conformal", "scale+floor", "scale"):
        cal = fit_calibration(y[:nv], mean[:nv], spread[:nv], method=method)
        out[f"ensemble_{method}"] = uncertainty_scores(y[nv:], mean[nv:], spread[nv:], cal, names)
    t0 = time.perf_counter()
    mc = mc_dropout(run.model, patches)
    out["mc_dropout_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run.model.predict(patches)
    out["one_pass_seconds"] = time.perf_counter() - t0
    mean, spread = ensemble_stats(mc)
    for method in ("conformal", "scale+floor", "scale"):
        cal = fit_calibration(y[:nv], mean[:nv], spread[:nv], method=method)
        out[f"mc_dropout_{method}"] = uncertainty_scores(y[nv:], mean[nv:], spread[nv:], cal, names)
    return out


def dense(run_dir: Path, name: str) -> dict:
    out = Path("/tmp") / f"structattn_dense_{name}.h5"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "structattn.cli", "predict", str(run_dir), "--step", "1", "--out",
                           str(out), "--overwrite"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    import h5py

    with h5py.File(out, "r") as f:
        info = {"positions": int(f["rows"].shape[0] * f["cols"].shape[0]), "members": int(f.attrs["members"]),
                "seconds_predict": float(f.attrs["seconds"]), "peak_rss_mb": float(f.attrs["peak_rss_mb"]),
                "batch": int(f.attrs["batch"]), "file_mb": out.stat().st_size / 2**20}
    info["seconds_command"] = wall
    img = ROOT / "docs" / "img" / f"maps_{name}.png"
    shutil.copy(out.with_suffix(".png"), img)
    info["figure"] = str(img.relative_to(ROOT))
    return info


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--no-dense", action="store_true")
    a = ap.parse_args()
    result = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    for r in a.runs:
        name = Path(r).name
        res = calibration_table(Path(r))
        if not a.no_dense:
            res["dense_step1"] = dense(Path(r), name)
        result[name] = res
        print(json.dumps(res, indent=1))
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(result, indent=1))
