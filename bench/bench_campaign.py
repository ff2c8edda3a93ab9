"""Simulated measurement campaign (issue 15): does choosing where to measure beat random and a grid?

For each data set the product's own preparation (`structattn.pipeline`: geometry, spatial-block
split, targets, standardised patches) gives a fixed test part (the test blocks) and a *pool*
(the training and validation blocks): the points one could measure. A campaign starts from a
random 5 % of the pool and adds K = 5 % of the pool per round, up to 50 %, chosen by

* ``uncertainty``: the learner's ensemble spread (RMS over targets of spread / measured std),
  K picks spread out by `structattn.acquire.select_spread` (at least twice the point spacing
  apart, relaxed by 0.7x steps only when K do not fit);
* ``ei``: expected improvement toward the named goal (`structattn.acquire`), spread the same way;
* ``random``: K pool points at random;
* ``grid``: a regular grid refined coarse to fine (pool points on every 2^j-th lattice row and
  column first, j from coarse to fine, random order within a level);
* ``maxdet``: the K picks chosen jointly by greedy MaxDet (`structattn.acquire.select_maxdet`,
  Holzmüller et al. 2023) on the ensemble's last-layer features; run first on the held-out
  textures (``VALIDATION``), and on the benchmark only if it beats ``uncertainty`` there (it did not);
* ``lcmd``: the K picks by LCMD (`select_lcmd`, the same paper), representative and diverse in
  that feature space, no uncertainty; held-out textures only, for the same reason;
* ``density``: information density (Settles & Craven 2008): the uncertainty score times each
  candidate's mean RBF similarity to the whole pool on the 20 PCA components below (squared length scale
  the median squared pairwise distance, exponent 1), so outlying patches, where an ensemble disagrees
  most but which teach least about the rest, weigh less; spread as ``uncertainty``; held-out
  textures first;
* ``igs``: improved greedy sampling (iGS; Wu, Lin & Huang, Information Sciences 2019), a
  regression-specific method without uncertainty: each pick maximises, over the candidates, the
  smallest product over measured points of the distance in input space (the 20 PCA components
  below) and the distance in output space (the ensemble's mean prediction against the measured
  values, each target divided by its measured std); a pick joins the measured set with its
  predicted value, so the K picks of a round stay diverse; held-out textures first;
* ``uncertainty_small``: ``uncertainty`` in batches of about 1 % of the pool: each round's K points
  are chosen in SUB = 5 smaller batches (sizes differing by at most one), the ensemble retrained
  after each, so every pick uses the measurements made just before it; the curve is recorded at
  the same numbers of points as the others'. About seven times the training (the later retrainings
  see more points); held-out textures first;
* ``gp_uncertainty`` and ``gp_random``: the usual choice in automated microscopy, a Gaussian
  process (scikit-learn, constant x RBF + white noise, hyper-parameters by marginal likelihood)
  on a 20-component PCA of the patches (fitted on the pool's patches), choosing by its own
  predictive std or at random.

The learner inside the loop is NOT the ViT (a ViT ensemble per round is hours on 2 CPU cores):
it is a deep ensemble of 3 small CNNs (`structattn.nets.CNNRegressor`, the run's CNN baseline
architecture) trained from scratch each round for 20 epochs (at least 200, at most 800 steps
of 32 patches; AdamW 3e-3, cosine decay), on all measured points, without early stopping.
Every choice above was fixed before the first campaign ran; nothing was tuned on the test part.

After every round: test R² per target (and the mean), test RMSE of the goal's target, and the
goal regret (distance to the goal of the best point measured so far). The acceptance of issue
15: the ``uncertainty`` campaign reaches the mean test R² that ``random`` reaches at 50 % of
the pool with at most 35 % of it.

    python bench/bench_campaign.py --jobs 2          # every data set x seed (about 1-2 h on 2 cores)
    python bench/bench_campaign.py --summary         # bench/results/campaign.json + docs/img/campaign.png
    python bench/bench_campaign.py --one beps --seed 0 --quick   # a smoke test
    python bench/bench_campaign.py --jobs 2 --datasets semi_Funakubo0002,semi_Funakubo0005 --seeds 0,1 \
        --strategies maxdet,uncertainty,random                   # a new strategy on the held-out textures
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STRUCTATTN_DATA", ROOT / ".." / "shared" / "data"))
OUT = ROOT / "bench" / "results" / "campaign"
RESULT = ROOT / "bench" / "results" / "campaign.json"
FIGURE = ROOT / "docs" / "img" / "campaign.png"
SEEDS = (0, 1, 2)
START, STEP, STOP = 0.05, 0.05, 0.50
MEMBERS = 3

# name -> (source, --targets, goal). Real BEPS loops (structure from the loops, as im2spec
# does) and two real PFM textures with rules we wrote (structattn.data.semisynthetic).
DATASETS = {
    "beps": (str(DATA / "pto_beps_50x50.h5"), "V+,V-,imprint", "imprint=0"),
    "semi_Funakubo0001": (f"semisynthetic:image={DATA / 'pto_pfm_images' / 'PTO_Funakubo0001.h5'},"
                          "rules=amp_corner+threshold+wall_density", None, "amp_corner=max"),
    "semi_Funakubo0004": (f"semisynthetic:image={DATA / 'pto_pfm_images' / 'PTO_Funakubo0004.h5'},"
                          "rules=amp_corner+threshold+wall_density", None, "amp_corner=max"),
}
STRATEGIES = ("uncertainty", "ei", "random", "grid", "gp_uncertainty", "gp_random", "maxdet", "lcmd", "density",
              "igs", "uncertainty_small")
SUB = 5  # uncertainty_small: each round's K points in SUB smaller batches, the ensemble retrained after each
# Textures held out from the benchmark, on which a new strategy is checked before it runs on it.
VALIDATION = {
    f"semi_Funakubo000{i}": (f"semisynthetic:image={DATA / 'pto_pfm_images' / f'PTO_Funakubo000{i}.h5'},"
                             "rules=amp_corner+threshold+wall_density", None, "amp_corner=max")
    for i in (2, 5)
}
VAL_OUT = ROOT / "bench" / "results" / "campaign_validation"
ALL = {**DATASETS, **VALIDATION}


def prepare(name: str):
    """The product's preparation of a data set: Prepared (x, y, split) and geometry."""
    from structattn.data.io import load_sample, sample_checksum
    from structattn.pipeline import RunConfig, resolve_geometry, split_stage, targets_stage

    source, targets, _ = ALL[name]
    cfg = RunConfig(source=source, targets=targets, progress=False)
    sample = load_sample(source, structure_from=cfg.structure_from)
    geo = resolve_geometry(sample, cfg)
    usable, split = split_stage(cfg, sample, geo)
    d = targets_stage(cfg, sample, sample_checksum(sample), geo, usable, split, lambda _m: None)
    return d, geo


# ----------------------------------------------------------------------------- learners
def fit_cnn_ensemble(x, y, idx, *, seed: int, members: int = MEMBERS, quick: bool = False):
    """Deep ensemble of small CNNs on points `idx`; returns predict(index) -> (M, n, K) in target units."""
    import torch

    from structattn.nets.cnn import CNNConfig, CNNRegressor

    ym, ys = y[idx].mean(0), np.maximum(y[idx].std(0), 1e-8)
    xt = torch.as_tensor(x)
    yt = torch.as_tensor((y - ym) / ys, dtype=torch.float32)
    steps = 20 if quick else int(np.clip(20 * len(idx) / 32, 200, 800))
    models = []
    for m in range(members):
        torch.manual_seed(1000 * seed + m)
        rng = np.random.default_rng(1000 * seed + m)
        model = CNNRegressor(CNNConfig(in_channels=x.shape[1], window=x.shape[-1], n_outputs=y.shape[1]))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1.5e-4)
        model.train()
        for _ in range(steps):
            b = rng.choice(idx, size=min(32, len(idx)), replace=False)
            loss = torch.nn.functional.mse_loss(model(xt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        models.append(model.eval())

    def predict(index):
        with torch.no_grad():
            out = [torch.cat([mm(xt[index[i:i + 512]]) for i in range(0, len(index), 512)]).numpy() for mm in models]
        return np.stack(out) * ys + ym

    def features(index):
        """(n, members x hidden) last hidden layer of every member: the MaxDet kernel's features."""
        with torch.no_grad():
            return np.concatenate([torch.cat([mm.head[:3](mm.features(xt[index[i:i + 512]]))
                                              for i in range(0, len(index), 512)]).numpy() for mm in models], axis=1)

    predict.features = features
    return predict


def fit_gp(features, y, idx, *, seed: int):
    """GP on PCA features; returns predict(index) -> (mean (n, K), std (n, K))."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    d = features.shape[1]
    kernel = ConstantKernel(1.0) * RBF(length_scale=np.sqrt(d), length_scale_bounds=(1e-2, 1e3)) + WhiteKernel(0.1)
    ym, ys = y[idx].mean(0), np.maximum(y[idx].std(0), 1e-8)
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=seed)
    gp.fit(features[idx], (y[idx] - ym) / ys)

    def predict(index):
        mu, sd = gp.predict(features[index], return_std=True)
        mu, sd = mu.reshape(len(index), -1), sd.reshape(len(index), -1)
        return mu * ys + ym, sd * ys

    return predict


# ----------------------------------------------------------------------------- strategies
def grid_order(positions: np.ndarray, pool: np.ndarray, rng) -> np.ndarray:
    """Pool indices in coarse-to-fine regular-grid order (random within a level)."""
    pos = positions[pool]
    step = np.median(np.diff(np.unique(pos[:, 0]))) if len(np.unique(pos[:, 0])) > 1 else 1.0
    lat = np.rint((pos - pos.min(0)) / step).astype(int)  # lattice indices
    level = np.full(len(pool), 0)
    for j in range(1, 12):  # a point on every 2^j-th lattice line belongs to level >= j
        on = (lat % (2**j) == 0).all(1)
        level[on] = j
    keys = -level + rng.random(len(pool)) * 0.5  # coarse (high level) first
    return pool[np.argsort(keys)]


def select_lcmd(measured: np.ndarray, candidates: np.ndarray, *, n: int) -> np.ndarray:
    """Indices of `n` candidates by LCMD (largest cluster maximum distance; Holzmüller et al. 2023, TP mode).

    Every candidate belongs to its nearest centre (a measured point or one picked before) in the
    feature space; the cluster with the largest sum of squared distances gives its farthest
    member as the next pick, which becomes a centre. Representative and diverse, no uncertainty.
    """
    fm = np.asarray(measured, np.float64)
    fc = np.asarray(candidates, np.float64)
    sq_c = (fc**2).sum(1)
    dmin = np.full(len(fc), np.inf)
    owner = np.full(len(fc), -1)
    for a in range(0, len(fm), 256):  # nearest measured centre, in blocks
        blk = fm[a:a + 256]
        d2 = np.maximum(sq_c[:, None] + (blk**2).sum(1)[None] - 2 * fc @ blk.T, 0.0)
        j = d2.argmin(1)
        better = d2[np.arange(len(fc)), j] < dmin
        dmin[better], owner[better] = d2[np.arange(len(fc)), j][better], a + j[better]
    picked: list[int] = []
    alive = np.ones(len(fc), bool)
    for _ in range(n):
        sizes = np.bincount(owner[alive], weights=dmin[alive], minlength=owner.max() + 1)
        c = int(np.argmax(sizes))
        members = np.flatnonzero(alive & (owner == c))
        i = int(members[np.argmax(dmin[members])])
        picked.append(i)
        alive[i] = False
        d2 = np.maximum(sq_c + sq_c[i] - 2 * fc @ fc[i], 0.0)
        closer = d2 < dmin
        dmin[closer], owner[closer] = d2[closer], len(fm) + len(picked) - 1
    return np.array(picked, int)


def select_igs(fx_measured, y_measured, fx_cand, y_cand, *, n: int) -> np.ndarray:
    """Indices of `n` candidates by iGS (Wu, Lin & Huang 2019), greedily in batch mode.

    Candidate c's score is min over reference points m of ||fx_c - fx_m|| * ||y_c - y_m||: the
    references are the measured points (their measured outputs) and the picks so far (their
    predicted outputs). Inputs: (M, D) and (M, K) for the measured, (C, D) and (C, K) for the
    candidates, outputs already on a common scale.
    """
    fm, ym = np.asarray(fx_measured, np.float64), np.asarray(y_measured, np.float64)
    fc, yc = np.asarray(fx_cand, np.float64), np.asarray(y_cand, np.float64)

    def dist(a, b):  # (len(a), len(b)) Euclidean distances
        return np.sqrt(np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T, 0.0))

    score = np.full(len(fc), np.inf)
    for s in range(0, len(fm), 512):
        score = np.minimum(score, (dist(fc, fm[s:s + 512]) * dist(yc, ym[s:s + 512])).min(1))
    picked: list[int] = []
    for _ in range(n):
        i = int(np.argmax(score))
        picked.append(i)
        score = np.minimum(score, (dist(fc, fc[i:i + 1]) * dist(yc, yc[i:i + 1]))[:, 0])
        score[picked] = -np.inf
    return np.array(picked, int)


def pick_spread(positions, cand, score, k, min_distance):
    from structattn.acquire import select_spread

    d = min_distance
    while True:
        try:
            return cand[select_spread(positions[cand], score, n=k, min_distance=d)]
        except ValueError:
            d *= 0.7  # K do not fit at this distance: relax (a rule fixed in advance)


def uncertainty_picks(pred, y, idx, cand, positions, n, min_distance, weight=None):
    """`n` candidates by the ensemble's uncertainty (times `weight`, e.g. information density), spread apart."""
    from structattn.acquire import uncertainty_score

    p = pred(cand)
    score = uncertainty_score(p.std(0, ddof=1), np.maximum(y[idx].std(0), 1e-12))
    return pick_spread(positions, cand, score if weight is None else score * weight, n, min_distance)


def campaign(name: str, seed: int, *, quick: bool = False, strategies=STRATEGIES) -> dict:
    import torch

    from structattn.acquire import (expected_improvement, information_density, parse_goal, select_maxdet,
                                    uncertainty_score)
    from structattn.train.metrics import regression_scores

    torch.set_num_threads(int(os.environ.get("CAMPAIGN_THREADS", "1")))
    d, geo = prepare(name)
    names = list(d.targets.names)
    goal = parse_goal(ALL[name][2], names)
    gk = names.index(goal.target)
    x, y, pos = d.source.take(np.arange(d.sample.n_points)), d.y.astype(np.float64), d.sample.positions
    pool = np.sort(np.concatenate([d.train, d.val]))
    test = d.test
    n_pool = len(pool)
    k = max(1, int(round(STEP * n_pool)))
    n0 = max(2, int(round(START * n_pool)))
    rounds = int(round((STOP - START) / STEP))
    if quick:
        rounds = 2
    spacing = geo["point_spacing_px"]
    min_distance = 2 * spacing
    from sklearn.decomposition import PCA

    flat = x.reshape(len(x), -1)
    pca = PCA(n_components=20, random_state=0).fit(flat[pool])
    feats = pca.transform(flat)
    feats /= feats[pool].std(0)
    rng0 = np.random.default_rng(seed)
    start = rng0.choice(pool, size=n0, replace=False)
    # information density of every point among the pool's (Settles & Craven 2008; suggest --density)
    density = information_density(feats, feats[pool]) if "density" in strategies else None
    out = {"dataset": name, "seed": seed, "targets": names, "goal": ALL[name][2], "n_pool": int(n_pool),
           "n_test": int(len(test)), "k": k, "window": geo["window"], "spacing_px": spacing,
           "learner": f"deep ensemble of {MEMBERS} small CNNs, 20 epochs (200-800 steps) from scratch each round",
           "strategies": {}}
    for strat in strategies:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed * 7919 + STRATEGIES.index(strat))
        measured = list(start)
        order = grid_order(pos, pool, rng) if strat == "grid" else None
        curve = []
        for r in range(rounds + 1):
            idx = np.array(measured)
            if strat.startswith("gp"):
                pred = fit_gp(feats, y, idx, seed=seed)
                mean_test, _ = pred(test)
            else:
                pred = fit_cnn_ensemble(x, y, idx, seed=seed * 100 + r, quick=quick)
                mean_test = pred(test).mean(0)
            sc = regression_scores(y[test], mean_test, tuple(names))
            best = float(np.min(goal.distance(y[idx, gk])))
            curve.append({"n": len(idx), "fraction": len(idx) / n_pool,
                          "r2": {t: sc[t]["r2"] for t in names},
                          "r2_mean": float(np.mean([sc[t]["r2"] for t in names])),
                          "rmse_goal_target": float(np.sqrt(np.mean((y[test, gk] - mean_test[:, gk]) ** 2))),
                          "goal_regret": best - float(np.min(goal.distance(y[pool, gk])))})
            if r == rounds:
                break
            cand = np.setdiff1d(pool, idx)
            if strat == "uncertainty_small":  # the round's K picks in SUB batches, retraining between them
                for j, part in enumerate(np.array_split(np.arange(k), SUB)):
                    idx = np.array(measured)
                    sel = pred if j == 0 else fit_cnn_ensemble(x, y, idx, seed=seed * 100 + 50 + SUB * r + j,
                                                               quick=quick)
                    new = uncertainty_picks(sel, y, idx, np.setdiff1d(pool, idx), pos, len(part), min_distance)
                    measured.extend(int(i) for i in new)
                continue
            if strat in ("random", "gp_random"):
                new = rng.choice(cand, size=k, replace=False)
            elif strat == "grid":
                taken = set(measured)
                new = np.array([i for i in order if i not in taken][:k])
            elif strat == "maxdet":
                new = cand[select_maxdet(pred.features(idx), pred.features(cand), n=k)]
            elif strat == "lcmd":
                new = cand[select_lcmd(pred.features(idx), pred.features(cand), n=k)]
            elif strat == "igs":
                scale = np.maximum(y[idx].std(0), 1e-12)
                new = cand[select_igs(feats[idx], y[idx] / scale, feats[cand], pred(cand).mean(0) / scale, n=k)]
            elif strat in ("uncertainty", "density"):
                new = uncertainty_picks(pred, y, idx, cand, pos, k, min_distance,
                                        density[cand] if strat == "density" else None)
            else:  # gp_uncertainty, ei
                if strat == "gp_uncertainty":
                    mu, sd = pred(cand)
                else:
                    p = pred(cand)
                    mu, sd = p.mean(0), p.std(0, ddof=1)
                if strat == "ei":
                    score = expected_improvement(mu[:, gk], sd[:, gk], goal=goal, best=best)
                else:
                    score = uncertainty_score(sd, np.maximum(y[idx].std(0), 1e-12))
                new = pick_spread(pos, cand, score, k, min_distance)
            measured.extend(int(i) for i in new)
        out["strategies"][strat] = {"curve": curve, "seconds": time.perf_counter() - t0}
        print(f"{name} seed {seed} {strat}: " + " ".join(f"{c['fraction']:.2f}:{c['r2_mean']:.3f}" for c in curve)
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


# ----------------------------------------------------------------------------- summary
def _mean_curve(runs: list[dict], strat: str, key: str):
    curves = [r["strategies"][strat]["curve"] for r in runs if strat in r["strategies"]]
    frac = np.array([c["fraction"] for c in curves[0]])
    vals = np.array([[c[key] for c in cur] for cur in curves])
    return frac, vals.mean(0), vals.std(0)


def acceptance(runs: list[dict], strat: str = "uncertainty") -> dict:
    """Points the strategy needs to reach random's mean R² at 50 % of the pool (linear interpolation)."""
    frac_r, r2_r, _ = _mean_curve(runs, "random", "r2_mean")
    frac_a, r2_a, _ = _mean_curve(runs, strat, "r2_mean")
    target = float(r2_r[-1])
    reach = None
    for j in range(len(frac_a)):
        if r2_a[j] >= target:
            if j == 0:
                reach = float(frac_a[0])
            else:
                f0, f1, a0, a1 = frac_a[j - 1], frac_a[j], r2_a[j - 1], r2_a[j]
                reach = float(f0 + (f1 - f0) * (target - a0) / (a1 - a0)) if a1 != a0 else float(f1)
            break
    return {"random_r2_at_50": target, "strategy": strat, "fraction_needed": reach,
            "met": bool(reach is not None and reach <= 0.35 + 1e-9)}


def summary() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {}
    for f in sorted(OUT.glob("*.json")):
        r = json.loads(f.read_text())
        by.setdefault(r["dataset"], []).append(r)
    result = {"setup": {"start": START, "step": STEP, "stop": STOP, "members": MEMBERS, "strategies": STRATEGIES,
                        "doc": __doc__.split("\n\n")[0]}, "datasets": {}}
    styles = {"uncertainty": ("#c0392b", "-"), "ei": ("#8e44ad", "-."), "random": ("#333333", "--"),
              "grid": ("#2471a3", ":"), "gp_uncertainty": ("#27ae60", "-"), "gp_random": ("#27ae60", "--"),
              "density": ("#e67e22", "-"), "igs": ("#16a085", "-."), "uncertainty_small": ("#c0392b", ":")}
    fig, axes = plt.subplots(2, len(by), figsize=(4.6 * len(by), 7.2), squeeze=False)
    for col, (name, runs) in enumerate(by.items()):
        acc = acceptance(runs)
        acc_gp = acceptance(runs, "gp_uncertainty")
        table = {}
        for strat in STRATEGIES:
            if not all(strat in r["strategies"] for r in runs):
                continue
            frac, m, s = _mean_curve(runs, strat, "r2_mean")
            _, reg, _ = _mean_curve(runs, strat, "goal_regret")
            table[strat] = {"fraction": frac.tolist(), "r2_mean": m.tolist(), "r2_sd_over_seeds": s.tolist(),
                            "goal_regret": reg.tolist()}
            c, ls = styles[strat]
            axes[0, col].plot(100 * frac, m, ls, color=c, lw=1.6, label=strat)
            axes[0, col].fill_between(100 * frac, m - s, m + s, color=c, alpha=0.08)
            axes[1, col].plot(100 * frac, reg, ls, color=c, lw=1.6, label=strat)
        axes[0, col].axhline(acc["random_r2_at_50"], color="#999", lw=0.8)
        axes[0, col].axvline(35, color="#999", lw=0.8, ls=":")
        verdict = "met" if acc["met"] else "not met"
        need = "never" if acc["fraction_needed"] is None else f"{100 * acc['fraction_needed']:.0f} %"
        axes[0, col].set_title(f"{name}\nuncertainty reaches random@50 % R² at {need} ({verdict})", fontsize=9)
        axes[0, col].set_xlabel("points measured (% of the pool)")
        axes[0, col].set_ylabel("test R² (mean over targets)")
        axes[1, col].set_xlabel("points measured (% of the pool)")
        axes[1, col].set_ylabel(f"goal regret ({runs[0]['goal']})")
        axes[0, col].legend(fontsize=7)
        result["datasets"][name] = {"seeds": [r["seed"] for r in runs], "targets": runs[0]["targets"],
                                    "goal": runs[0]["goal"], "n_pool": runs[0]["n_pool"], "n_test": runs[0]["n_test"],
                                    "k": runs[0]["k"], "acceptance": acc, "acceptance_gp_uncertainty": acc_gp,
                                    "curves": table,
                                    "per_target_r2_at_end": {s: {t: float(np.mean([r["strategies"][s]["curve"][-1]["r2"][t]
                                                                                  for r in runs]))
                                                                 for t in runs[0]["targets"]}
                                                             for s in table},
                                    "seconds": {s: float(np.mean([r["strategies"][s]["seconds"] for r in runs]))
                                                for s in table}}
        need_gp = "never" if acc_gp["fraction_needed"] is None else f"{100 * acc_gp['fraction_needed']:.0f} %"
        print(f"{name}: random R² at 50 % = {acc['random_r2_at_50']:.3f}; uncertainty needs {need} -> {verdict}; "
              f"GP-uncertainty needs {need_gp}")
    # The held-out textures: where a new strategy is checked before it may run on the benchmark.
    val = {}
    for f in sorted(VAL_OUT.glob("*.json")):
        r = json.loads(f.read_text())
        val.setdefault(r["dataset"], []).append(r)
    for name, runs in val.items():
        strats = [s for s in STRATEGIES if all(s in r["strategies"] for r in runs)]
        entry = {"seeds": [r["seed"] for r in runs], "curves": {}, "acceptance": {}}
        for strat in strats:
            frac, m, s = _mean_curve(runs, strat, "r2_mean")
            entry["curves"][strat] = {"fraction": frac.tolist(), "r2_mean": m.tolist(), "r2_sd_over_seeds": s.tolist()}
            if strat != "random" and "random" in strats:
                entry["acceptance"][strat] = acceptance(runs, strat)
        result.setdefault("validation", {})[name] = entry
        print(f"held out {name}: " + "; ".join(f"{s} needs {a['fraction_needed']}" for s, a in entry["acceptance"].items()))
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=90)
    RESULT.write_text(json.dumps(result, indent=1))
    print(f"-> {RESULT}, {FIGURE}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", choices=sorted(ALL), help="one data set (with --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2 rounds, 20 steps: a smoke test (results not saved)")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="campaigns in parallel, one torch thread each")
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help=f"comma-separated; the held-out textures {', '.join(VALIDATION)} write to {VAL_OUT.name}/")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds to run")
    ap.add_argument("--strategies", default=",".join(STRATEGIES),
                    help="comma-separated; strategies already in a result file are kept, missing ones are added")
    a = ap.parse_args()
    wanted = tuple(s for s in a.strategies.split(",") if s)
    if unknown := [s for s in wanted if s not in STRATEGIES]:
        ap.error(f"--strategies: unknown {unknown}; expected some of {', '.join(STRATEGIES)}")

    def result_path(name: str, seed: int) -> Path:
        return (VAL_OUT if name in VALIDATION else OUT) / f"{name}_seed{seed}.json"

    def missing(name: str, seed: int) -> tuple:
        f = result_path(name, seed)
        have = json.loads(f.read_text())["strategies"] if f.is_file() else {}
        return tuple(s for s in wanted if s not in have)

    if a.summary:
        summary()
    elif a.one:
        todo = missing(a.one, a.seed) if not a.quick else wanted
        res = campaign(a.one, a.seed, quick=a.quick, strategies=todo)
        if not a.quick:
            f = result_path(a.one, a.seed)
            if f.is_file():  # add the new strategies to the earlier ones (same start set, same seeds)
                old = json.loads(f.read_text())
                old["strategies"].update(res["strategies"])
                res = old
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps(res, indent=1))
            tmp.replace(f)
    else:
        procs: list[subprocess.Popen] = []
        for name in a.datasets.split(","):
            for seed in (int(v) for v in a.seeds.split(",")):
                if not missing(name, seed):
                    continue
                while len([p for p in procs if p.poll() is None]) >= a.jobs:
                    time.sleep(2)
                procs.append(subprocess.Popen([sys.executable, __file__, "--one", name, "--seed", str(seed),
                                               "--strategies", a.strategies]))
        for p in procs:
            p.wait()
        summary()
