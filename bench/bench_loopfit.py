"""Batched torch loop fit vs per-loop scipy ``least_squares`` (the BGlib way).

Both fit the same 9-parameter model (Jesse, Lee & Kalinin 2006) to the same
spike-repaired real loops (``../shared/data/pto_beps_50x50.h5``, 2500 PbTiO3 BEPS
loops), in the same normalised units, from the same starts, inside the same
bounds, keeping each loop's best start. Only the optimiser differs:

* batched: all loops x starts at once, bounded Levenberg-Marquardt in torch
  (:class:`structattn.loops.LoopFitter` internals, its defaults: 12 starts, active-set
  bounds, floored Marquardt damping, successive halving of the starts);
* per-loop: ``scipy.optimize.least_squares(method="trf", bounds=...)`` per loop
  and start, finite-difference Jacobian, as BGlib's loop fitter does.

Prints wall times, the time ratio and the median-RMSE ratio, and writes them to
``bench/results/loopfit.json``. Run on 2 CPU threads::

    PYTHONPATH=src python bench/bench_loopfit.py            # all 2500 loops, 12 starts
    PYTHONPATH=src python bench/bench_loopfit.py --n-loops 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.optimize import least_squares

from structattn.loops.fit import _lm_batched, make_problem
from structattn.loops.model import loop_model_np
from structattn.loops.preprocess import preprocess_loops
from structattn.loops.waveform import split_branches

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "pto_beps_50x50.h5"


def rmse_r2(x: np.ndarray, fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-loop RMSE and R^2 of (N, V) fits."""
    ss_res = ((x - fitted) ** 2).sum(1)
    ss_tot = ((x - x.mean(1, keepdims=True)) ** 2).sum(1)
    return np.sqrt(ss_res / x.shape[1]), np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-loops", type=int, default=2500, help="first N loops of the file (default all 2500)")
    ap.add_argument("--n-starts", type=int, default=12, help="starts per loop, same for both fits (LoopFitter's default)")
    ap.add_argument("--max-iter", type=int, default=200, help="LM iterations at most (batched)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="batched precision")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "loopfit.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with h5py.File(DATA, "r") as f:
        loops = f["Channel_000/generic/generic"][()].reshape(-1, 64)[: args.n_loops]  # (N, 64)
        voltage = f["Channel_000/generic/Voltage"][()]
    clean = preprocess_loops(loops, voltage).clean
    branches = split_branches(voltage)
    problem = make_problem(clean, voltage, branches=branches, n_starts=args.n_starts, seed=0)
    n, s, _ = problem.starts.shape
    rising = branches.rising_mask
    dtype = torch.float64 if args.dtype == "float64" else torch.float32

    # warm-up (first torch call pays one-off costs), not timed
    _lm_batched(make_problem(clean[:8], voltage, branches=branches, n_starts=2), max_iter=3, tol=1e-7, device="cpu", dtype=dtype)

    def batched(threads: int):
        torch.set_num_threads(threads)
        w0, c0 = time.perf_counter(), time.process_time()
        p, _, it = _lm_batched(problem, max_iter=args.max_iter, tol=1e-7, device="cpu", dtype=dtype)
        return p, it, time.perf_counter() - w0, time.process_time() - c0

    # The asked-for setting (2 threads) first; 1 thread as well, because on a
    # shared 2-core machine the second thread often waits more than it works.
    p_batched, n_iter, t_batched, cpu_batched = batched(args.threads)
    p_batched1, _, t_batched1, cpu_batched1 = batched(1)
    assert np.allclose(p_batched, p_batched1, atol=1e-6), "thread count changed the fit"
    torch.set_num_threads(args.threads)

    t0, c0 = time.perf_counter(), time.process_time()
    p_scipy = np.empty((n, 9))
    for i in range(n):
        yi = problem.y[i]
        best, best_cost = None, np.inf
        for k in range(s):
            res = least_squares(
                lambda q: loop_model_np(voltage, q[None], rising=rising)[0] - yi,
                problem.starts[i, k],
                bounds=(problem.lower, problem.upper),
                method="trf",
            )
            if res.cost < best_cost:
                best, best_cost = res.x, res.cost
        p_scipy[i] = best
    t_scipy, cpu_scipy = time.perf_counter() - t0, time.process_time() - c0

    fit_b = loop_model_np(voltage, problem.denormalise(p_batched), rising=rising)
    fit_s = loop_model_np(voltage, problem.denormalise(p_scipy), rising=rising)
    rmse_b, r2_b = rmse_r2(clean, fit_b)
    rmse_s, r2_s = rmse_r2(clean, fit_s)
    out = {
        "data": "pto_beps_50x50.h5 (real PbTiO3 BEPS, spike-repaired)",
        "n_loops": int(n),
        "n_starts": int(s),
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "batched_dtype": args.dtype,
        "batched_iterations": int(n_iter),
        "batched_seconds": round(t_batched, 3),
        "batched_cpu_seconds": round(cpu_batched, 3),
        "batched_seconds_1_thread": round(t_batched1, 3),
        "scipy_seconds": round(t_scipy, 3),
        "scipy_cpu_seconds": round(cpu_scipy, 3),
        "time_ratio_scipy_over_batched": round(t_scipy / t_batched, 1),
        "time_ratio_scipy_over_batched_1_thread": round(t_scipy / t_batched1, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "median_rmse_batched": float(np.median(rmse_b)),
        "median_rmse_scipy": float(np.median(rmse_s)),
        "median_rmse_ratio_batched_over_scipy": round(float(np.median(rmse_b) / np.median(rmse_s)), 6),
        "median_r2_batched": round(float(np.median(r2_b)), 4),
        "median_r2_scipy": round(float(np.median(r2_s)), 4),
        "share_loops_batched_rmse_le_scipy_x1.01": round(float(np.mean(rmse_b <= 1.01 * rmse_s)), 4),
        "share_loops_batched_rmse_lt_scipy_x0.99": round(float(np.mean(rmse_b < 0.99 * rmse_s)), 4),
        "share_loops_batched_rmse_gt_scipy_x1.05": round(float(np.mean(rmse_b > 1.05 * rmse_s)), 4),
        "per_loop_rmse_ratio_quantiles_50_90_99": [round(float(x), 4) for x in np.quantile(rmse_b / rmse_s, [0.5, 0.9, 0.99])],
    }
    for k, v in out.items():
        print(f"{k:>42}: {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
