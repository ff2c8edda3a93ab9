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
    python bench/bench_uncertainty.py --candidates RUN ...   # only the calibration candidates (seconds)
    python bench/bench_uncertainty.py --candidates --result bench/results/uncertainty_b32.json RUN ...

``--candidates`` refits four conformal calibrations from each run's predictions.npz on its
validation blocks and scores them on its test blocks: pooled (the default before 2026-11-27),
a regularised normaliser, per-block quantiles with the larger kept (the default since), and
per-block quantiles averaged; docs/uncertainty.md gives the rules that chose between them,
written before the runs.

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
    blocks = block_of_points(run)[val]
    for method in ("conformal", "conformal-pooled", "scale+floor", "scale"):  # --calibration choices
        cal = fit_calibration(y[:nv], mean[:nv], spread[:nv], method=method.removesuffix("-pooled"),
                              groups=blocks if method == "conformal" else None)
        out[f"ensemble_{method}"] = uncertainty_scores(y[nv:], mean[nv:], spread[nv:], cal, names)
    t0 = time.perf_counter()
    mc = mc_dropout(run.model, patches)
    out["mc_dropout_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run.model.predict(patches)
    out["one_pass_seconds"] = time.perf_counter() - t0
    mean, spread = ensemble_stats(mc)
    for method in ("conformal", "scale+floor", "scale"):
        cal = fit_calibration(y[:nv], mean[:nv], spread[:nv], method=method,
                              groups=blocks if method == "conformal" else None)
        out[f"mc_dropout_{method}"] = uncertainty_scores(y[nv:], mean[nv:], spread[nv:], cal, names)
    return out


CANDIDATES = {  # name -> fit_calibration options (docs/uncertainty.md, both rules)
    "pooled": {},  # the default before 2026-11-27 (--calibration conformal-pooled)
    "regularised": {"normaliser": "spread+median"},  # measured, not adopted
    "block": {"groups": True},  # the default since (--calibration conformal)
    "block-mean": {"groups": True, "combine": "mean"},  # the second rule of docs/uncertainty.md
}


def block_of_points(run) -> np.ndarray:
    """(N,) spatial block of each point of predictions.npz: the run's split, rebuilt from config.json."""
    from structattn.train.split import point_bounds, spatial_block_split

    p, cfg = run.predictions, run.config
    pos, shape = np.asarray(p["positions"], float), run.sample.shape
    sp = spatial_block_split(pos, shape=shape, blocks=cfg["run"]["blocks"], val_fraction=cfg["run"]["val_fraction"],
                             test_fraction=cfg["run"]["test_fraction"], buffer=cfg["geometry"]["buffer"],
                             seed=cfg["run"]["seed"], bounds=point_bounds(pos, shape))
    kept = p["split"] >= 0  # points the targets dropped after the split are -1 in predictions.npz
    if not np.array_equal(sp.labels(len(pos))[kept], p["split"][kept]):
        raise RuntimeError(f"{run.path}: the rebuilt split does not match the run's")
    return sp.block_of_point


def calibration_candidates(run_dir: Path) -> dict:
    """Test coverage of the block-robust calibration candidates, from predictions.npz alone.

    The run stored the ensemble mean and the calibrated std; with a conformal calibration
    (pooled or per block) std = q_0.6827 * spread, so the members' spread is std / scale (1 for
    a target ridge predicts). Each candidate is then fitted on the validation blocks and scored
    on the test blocks, exactly as the run's own calibration was.
    """
    from structattn.runfolder import RunFolder
    from structattn.train.uncertainty import fit_calibration, uncertainty_scores

    run = RunFolder(run_dir)
    p = run.predictions
    names = [str(t) for t in p["target_names"]]
    cal = run.calibration
    if cal is None or cal.method != "conformal" or cal.offset is not None:
        raise ValueError(f"{run_dir}: needs a run with the default conformal calibration")
    const = np.zeros(len(names), bool) if cal.constant is None else cal.constant
    mean, std = p["y_mean"].astype(np.float64), p["y_std"].astype(np.float64)
    spread = np.where(const, 1.0, std / cal.scale)
    val, test = p["split"] == 1, p["split"] == 2
    y = p["y_true"].astype(np.float64)
    block = block_of_points(run)
    refits = [fit_calibration(y[val], mean[val], spread[val], constant=const, groups=g) for g in (None, block[val])]
    if not any(np.allclose(r.quantiles, cal.quantiles, rtol=1e-4) for r in refits):
        raise RuntimeError(f"{run_dir}: the run's calibration refitted from predictions.npz differs from the run's")
    out = {"run": str(run_dir), "source": run.config["data"]["source"], "n_val": int(val.sum()),
           "n_test": int(test.sum()), "val_blocks": int(len(np.unique(block[val]))),
           "test_blocks": int(len(np.unique(block[test]))),
           "r2": {n: run.metrics["targets"][n].get("r2") for n in names},
           "learned": {n: run.metrics["targets"][n].get("learned") for n in names}}
    for name, opts in CANDIDATES.items():
        opts = dict(opts)
        if opts.pop("groups", False):
            opts["groups"] = block[val]
        c = fit_calibration(y[val], mean[val], spread[val], constant=const, **opts)
        out[name] = uncertainty_scores(y[test], mean[test], spread[test], c, names)
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
    ap.add_argument("--result", type=Path, default=RESULT, help=f"result JSON (default {RESULT.relative_to(ROOT)})")
    ap.add_argument("--candidates", action="store_true",
                    help="only the block-robust calibration candidates, from predictions.npz (-> --result's "
                         "'calibration_candidates')")
    a = ap.parse_args()
    result = json.loads(a.result.read_text()) if a.result.is_file() else {}
    if a.candidates:
        table = result.setdefault("calibration_candidates", {})
        for r in a.runs:
            table[Path(r).name] = res = calibration_candidates(Path(r))
            for t in res["r2"]:
                print(f"{Path(r).name:>10} {t:>15} R2 {res['r2'][t]:6.3f}  " + "  ".join(
                    f"{c} {res[c][t]['coverage_68']:.2f}/{res[c][t]['coverage_95']:.2f}" for c in CANDIDATES))
        from structattn.train.uncertainty import COVERAGE_95_RANGE, coverage_warnings

        scored = [res for k, res in table.items() if k in {Path(r).name for r in a.runs}]
        for c in CANDIDATES:  # the rules of docs/uncertainty.md, over the runs given
            cov = [res[c][t]["coverage_95"] for res in scored for t in res["r2"]]
            outside = sum(len(coverage_warnings(res[c], res["n_test"])) for res in scored)  # a run's own verdict
            print(f"{c:>12}: mean |coverage_95 - 0.95| {np.mean(np.abs(np.subtract(cov, 0.95))):.4f}, "
                  f"{len(cov) - outside} of {len(cov)} targets in {list(COVERAGE_95_RANGE)}")
        a.result.write_text(json.dumps(result, indent=1))
        sys.exit(0)
    for r in a.runs:
        name = Path(r).name
        res = calibration_table(Path(r))
        if not a.no_dense:
            res["dense_step1"] = dense(Path(r), name)
        result[name] = res
        print(json.dumps(res, indent=1))
        a.result.parent.mkdir(parents=True, exist_ok=True)
        a.result.write_text(json.dumps(result, indent=1))
