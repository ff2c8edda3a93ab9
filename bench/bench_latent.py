"""Figures of docs/latent.md: factor recovery and reconstruction errors, synthetic and real.

Run: PYTHONPATH=src python bench/bench_latent.py [--out runs/bench_latent] [--seeds 0 1 2]
Writes latent_bench.json and PNG figures into --out. Takes ~1-2 min on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_score

from structattn.data.synthetic import make_synthetic
from structattn.latent import fit_latents, traverse
from structattn.loops.preprocess import preprocess_loops
from structattn.report import latent_figures as lf

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pto_beps_50x50.h5"
FACTORS = ("V+", "V-", "height")


def synthetic(out: Path, seeds: list[int], n_latent: int) -> dict:
    s = make_synthetic(seed=0)
    res: dict = {}
    for kind in ("vae", "pca", "nmf"):
        for seed in seeds if kind == "vae" else seeds[:1]:
            t = time.perf_counter()
            r = fit_latents(s.loops, s.voltage, kind=kind, n_latent=n_latent, seed=seed)
            row = {"fit_s": round(time.perf_counter() - t, 2), "recon_mse": r.recon_error, "recon_rel": r.recon_error_rel}
            for name in FACTORS:
                y = s.targets[:, s.target_names.index(name)]
                rho = [abs(float(spearmanr(y, r.latents[:, j])[0])) for j in range(n_latent)]
                row[name] = {
                    "best_latent": int(np.argmax(rho)),
                    "abs_spearman": round(max(rho), 3),
                    "probe_r2": round(float(cross_val_score(LinearRegression(), r.latents, y, cv=5).mean()), 3),
                }
            if kind == "vae":
                row["kl_per_latent"] = [round(float(k), 4) for k in r.model.kl_per_latent_]
            res[f"{kind}_seed{seed}"] = row
            if seed == seeds[0]:
                lf.plot_latent_maps(r.latents, s.positions, names=r.names).savefig(out / f"synthetic_{kind}_maps.png", dpi=90)
                import matplotlib.pyplot as plt

                fig, axes = plt.subplots(1, n_latent, figsize=(3.8 * n_latent, 3.0))
                for j in range(n_latent):
                    loops, vals = traverse(r.model, latent=j, n_steps=7, return_values=True)
                    lf.plot_traversal(s.voltage, loops, vals, name=r.names[j], ax=axes[j])
                fig.tight_layout()
                fig.savefig(out / f"synthetic_{kind}_traversals.png", dpi=90)
                plt.close("all")
    return res


def real(out: Path, n_latent: int) -> dict:
    with h5py.File(REAL, "r") as f:
        raw = f["Channel_000/generic/generic"][()].reshape(-1, 64)  # (2500, 64), X-major
        voltage = f["Channel_000/generic/Voltage"][()]
    # the loop module's preprocessing (spike and NaN repair), as `structattn run --targets latent` does
    loops = preprocess_loops(raw, voltage).clean
    res: dict = {"n_loops": int(loops.shape[0]), "preprocessing": "structattn.loops.preprocess_loops",
                 "changed_by_preprocessing": float((loops != raw).any(axis=1).mean())}
    # hold out every 5th 10x10 block column-wise for a held-out error (a spatial split)
    rr, cc = np.divmod(np.arange(2500), 50)
    held = ((rr // 10) * 5 + cc // 10) % 5 == 0
    for kind in ("vae", "pca", "nmf"):
        t = time.perf_counter()
        r_all = fit_latents(loops, voltage, kind=kind, n_latent=n_latent, seed=0)
        r_split = fit_latents(loops, voltage, kind=kind, n_latent=n_latent, seed=0, train_index=~held)
        res[kind] = {
            "fit_s": round(time.perf_counter() - t, 2),
            "recon_mse_all": r_all.recon_error,
            "recon_rel_all": r_all.recon_error_rel,
            "recon_mse_heldout_blocks": r_split.recon_error_heldout,
        }
        if kind == "vae":
            res[kind]["kl_per_latent"] = [round(float(k), 4) for k in r_all.model.kl_per_latent_]
        pos = np.stack([rr, cc], axis=1).astype(float)
        lf.plot_latent_maps(r_all.latents, pos, names=r_all.names).savefig(out / f"real_{kind}_maps.png", dpi=90)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_latent"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-latent", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"synthetic": synthetic(args.out, args.seeds, args.n_latent), "real": real(args.out, args.n_latent)}
    (args.out / "latent_bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
