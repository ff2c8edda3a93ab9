"""Cost vs size (issue 16): wall time and peak resident memory of train, explain and dense
predict at N = 1k, 4k, 16k, 65k points, each measured in a fresh process.

Data: a real PFM texture (PTO_Funakubo0001, amplitude + phase, standardised) tiled with
mirror flips to a square image holding a grid of N points every 4 px (65k points -> a
1024 x 1024 image), two targets from a known off-centre rule. The model: the default ViT
(window 32, 4 px tokens, dim 64, depth 4, conv stem 16).

Stages (each its own subprocess; peak RSS = that process's ru_maxrss, torch, Lightning and
the imports included):
  train    fit_vit on patches cut on the fly (PatchSource), ONE epoch over all N points
           (a fixed amount of work per point, not a converged model), batch 64
  explain  attention, rollout, gradattn for both targets on all N points, 64 at a time,
           streamed into a chunked gzip explanations.h5 (structattn.scale.explain_points)
  occlusion  one perturbation method on N/64 points (every 64th), same streaming
  predict  dense prediction at N grid positions (scale.predict.predict_batches, 256 at a time) into a
           chunked gzip HDF5 dataset, as `structattn predict` writes it
  run      the whole `structattn run` (run_pipeline) on the N points with the two targets:
           spatial split, ViT (1 epoch), a deep ensemble of 2, the four baselines (ridge by
           streamed normal equations, the CNN 1 epoch), attention/rollout/gradattn of every
           test point (about N/5), scores, domains, report

    PYTHONPATH=src .venv/bin/python bench/bench_scale.py              # all sizes -> bench/results/scale.json
    PYTHONPATH=src .venv/bin/python bench/bench_scale.py --sizes 1024,4096
One torch thread (the 2-core machine is shared); one heavy process at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEXTURE = REPO.parent / "shared" / "data" / "pto_pfm_images" / "PTO_Funakubo0001.h5"
SPACING = 4
WINDOW = 32
STAGES = ("train", "explain", "occlusion", "predict", "run")


def make_image(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(2, S, S) tiled real texture and (N, 2) grid positions every SPACING px, N = side^2."""
    from structattn.data.pfm import read_pfm

    side = int(round(np.sqrt(n)))
    size = side * SPACING
    pfm = read_pfm(TEXTURE)
    img = np.asarray(pfm.image, np.float32)[:2]
    img = (img - img.mean(axis=(1, 2), keepdims=True)) / img.std(axis=(1, 2), keepdims=True)
    h, w = img.shape[1:]
    reps = (-(-size // h), -(-size // w))
    rows = [np.concatenate([img[:, ::(1 if j % 2 == 0 else -1), ::(1 if i % 2 == 0 else -1)] for i in range(reps[1])],
                           axis=2) for j in range(reps[0])]
    tiled = np.ascontiguousarray(np.concatenate(rows, axis=1)[:, :size, :size])
    g = np.arange(side) * SPACING + SPACING // 2
    rr, cc = np.meshgrid(g, g, indexing="ij")
    return tiled, np.stack([rr.ravel(), cc.ravel()], 1).astype(float)


def targets(src, n: int) -> np.ndarray:
    """Known rule: mean amplitude of an off-centre 8 x 8 region and a centre phase contrast."""
    y = np.empty((n, 2), np.float32)
    for a in range(0, n, 4096):
        x = src.take(np.arange(a, min(n, a + 4096)))
        y[a:a + len(x), 0] = x[:, 0, 4:12, 4:12].mean((1, 2))
        y[a:a + len(x), 1] = x[:, 1, 12:20, 12:20].mean((1, 2)) - x[:, 1].mean((1, 2))
    return (y - y.mean(0)) / y.std(0)


def child(stage: str, n: int, workdir: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from structattn.nets.vit import ViTConfig, ViTRegressor
    from structattn.scale import PatchSource, explain_points

    img, pos = make_image(n)
    src = PatchSource(img, pos, window=WINDOW)
    cfg = ViTConfig(in_channels=2, window=WINDOW, patch=4, dim=64, depth=4, heads=4, stem=16, n_outputs=2)
    weights = workdir / f"model_{n}.pt"
    t0 = time.perf_counter()
    info: dict = {}
    if stage == "run":
        from structattn.data.sample import Sample
        from structattn.pipeline import RunConfig, run_pipeline

        sample = Sample(image=img, positions=pos, channels=("amplitude", "phase"), targets=targets(src, n),
                        target_names=("a", "b"))
        t0 = time.perf_counter()
        res = run_pipeline(RunConfig(epochs=1, ensemble=2, patience=1, seed=0, progress=False), workdir / f"run_{n}",
                           sample=sample, overwrite=True)
        m = res.metrics
        info = {"epochs": 1, "members": 2, "n_train": m["split"]["n_train"], "n_test": m["split"]["n_test"],
                "explained": m["split"]["n_test"], "r2": {t: m["targets"][t]["r2"] for t in ("a", "b")}}
    elif stage == "train":
        from structattn.train.trainer import TrainConfig, fit_vit

        y = targets(src, n)
        t0 = time.perf_counter()  # the rule's targets are data preparation, not training
        val = np.arange(0, n, max(1, n // 256))
        train = np.setdiff1d(np.arange(n), val)
        model, hist = fit_vit(src, y, train_index=train, val_index=val, vit=cfg,
                              train=TrainConfig(epochs=1, warmup=0, progress=False, seed=0))
        torch.save(model.state_dict(), weights)
        info = {"epochs": 1, "train_points": int(len(train)), "val_loss": hist["best_val_loss"]}
    else:
        model = ViTRegressor(cfg)
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
        out = workdir / f"{stage}_{n}.h5"
        if stage == "explain":
            explain_points(model, src, out, methods=["attention", "rollout", "gradattn"], target_names=["a", "b"],
                           batch=64)
            info = {"points": n, "methods": ["attention", "rollout", "gradattn"], "targets": 2}
        elif stage == "occlusion":
            idx = np.arange(0, n, 64)
            explain_points(model, src, out, methods=["occlusion"], target_names=["a", "b"], index=idx, batch=64)
            info = {"points": int(len(idx)), "methods": ["occlusion"], "targets": 2}
        elif stage == "predict":
            import h5py

            from structattn.scale.predict import predict_batches
            from structattn.train.trainer import TrainedModel

            tm = TrainedModel(model=model, target_names=("a", "b"), channel_mean=np.zeros(2, np.float32),
                              channel_std=np.ones(2, np.float32), target_mean=np.zeros(2, np.float32),
                              target_std=np.ones(2, np.float32))
            with h5py.File(out, "w") as f:
                ds = f.create_dataset("mean", shape=(n, 2), dtype="f4", chunks=(min(n, 4096), 2), compression="gzip")
                for start, m, _ in predict_batches([tm], None, img, pos, window=WINDOW, pad_mode="reflect",
                                                   batch=256):
                    ds[start:start + len(m)] = m
            info = {"positions": n, "members": 1}
        info["file_mb"] = out.stat().st_size / 2**20
    seconds = time.perf_counter() - t0
    return {"stage": stage, "n": n, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **info}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,4096,16384,65536")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    ap.add_argument("--child", nargs=3, metavar=("STAGE", "N", "WORKDIR"))
    ap.add_argument("--plot", action="store_true", help="only draw docs/img/scale.png from --out")
    a = ap.parse_args()
    if a.plot:
        plot(Path(a.out), REPO / "docs" / "img" / "scale.png")
        return
    if a.child:
        print("RESULT " + json.dumps(child(a.child[0], int(a.child[1]), Path(a.child[2]))), flush=True)
        return
    sizes = [int(s) for s in a.sizes.split(",")]
    stages = a.stages.split(",")
    out = Path(a.out)
    results = json.loads(out.read_text())["runs"] if out.exists() else []
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as work:
        for n in sizes:
            for stage in stages:
                t = time.perf_counter()
                p = subprocess.run([sys.executable, __file__, "--child", stage, str(n), work], env=env,
                                   capture_output=True, text=True)
                line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                if p.returncode or not line:
                    print(p.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{stage} at N={n} failed")
                r = json.loads(line[0][7:])
                r["process_seconds"] = time.perf_counter() - t
                results = [x for x in results if not (x["stage"] == stage and x["n"] == n)] + [r]
                print(f"{stage:9s} N={n:6d}: {r['seconds']:8.1f} s, peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
                write(out, results)
    write(out, results)


def growth(results: list[dict]) -> dict:
    """Per stage: time and memory ratio between consecutive sizes (each 4x more points)."""
    g = {}
    for stage in STAGES:
        rs = sorted((r for r in results if r["stage"] == stage), key=lambda r: r["n"])
        g[stage] = [{"from": a["n"], "to": b["n"], "time_ratio": b["seconds"] / a["seconds"],
                     "rss_ratio": b["peak_rss_mb"] / a["peak_rss_mb"]} for a, b in zip(rs, rs[1:])]
    return g


def write(out: Path, results: list[dict]) -> None:
    import platform

    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"what": __doc__.split("\n\n")[0], "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
           "shared with another job; torch 1 thread; no GPU in this task", "torch": torch.__version__,
           "runs": sorted(results, key=lambda r: (STAGES.index(r["stage"]), r["n"])), "growth": growth(results)}
    out.write_text(json.dumps(doc, indent=1))


def plot(src: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = json.loads(src.read_text())["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    label = {"train": "train (1 epoch)", "explain": "explain: attention, rollout, gradattn",
             "occlusion": "occlusion (N/64 points)", "predict": "dense predict",
             "run": "whole structattn run (1 epoch, ensemble 2)"}
    for stage in STAGES:
        rs = sorted((r for r in runs if r["stage"] == stage), key=lambda r: r["n"])
        if not rs:
            continue
        n = [r["n"] for r in rs]
        axes[0].loglog(n, [r["seconds"] for r in rs], "o-", label=label[stage])
        axes[1].semilogx(n, [r["peak_rss_mb"] / 1024 for r in rs], "o-", label=label[stage])
    ns = sorted({r["n"] for r in runs})
    if ns:
        ref = [r for r in runs if r["stage"] == "explain" and r["n"] == ns[0]]
        if ref:
            axes[0].loglog(ns, [ref[0]["seconds"] * n / ns[0] for n in ns], "k:", label="linear in N")
    axes[1].axhline(2.0, color="r", ls="--", label="2 GB")
    axes[0].set(xlabel="points N", ylabel="wall time (s)", title="time (2-core CPU, 1 torch thread)")
    axes[1].set(xlabel="points N", ylabel="peak RSS (GB)", title="peak resident memory per process", ylim=(0, 2.2))
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
