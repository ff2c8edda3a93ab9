"""Round 16b, step 1 (docs/training.md): would `--prefer-ridge` do better holding ridge on the pixels *and*
their wavelet moduli? No training: on each image of the semi-synthetic benchmark the default run's split
is rebuilt with the pipeline's own stages, pixel ridge and the candidate are fitted, and round 10c's
choice is replayed with the default benchmark's ViT validation R².

    python bench/probe_wavelet_ridge.py                      # nine images -> bench/results/wavelet_ridge.json
    python bench/probe_wavelet_ridge.py --seed 1 --default bench/results/semisynth_seed1.json \
        --out bench/results/wavelet_ridge_seed1.json         # round 16c, out of sample

Candidates: round 16b's ridge on pixels and wavelet moduli ("pixels+wavelets"), and round 16c's better of
that and pixel ridge per target on the validation blocks ("best").

The ViT's validation predictions were not kept, so the verdict's bootstrap margin is taken as 0 (ridge
when its validation R² is >= 0.5 and >= the ViT's). Where the default run already chose pixel ridge,
the ViT's own validation R² is not recorded either; pixel ridge had beaten it there, so the replay keeps
a ridge for that target and scores the candidate in its place. As a check that the split is the run's,
pixel ridge's test R² is compared with the benchmark's `ridge` figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_semisynth import runs  # noqa: E402  (the benchmark's images and sources)

from structattn.nets.wavelet import WaveletModulus  # noqa: E402
from structattn.pipeline import (PREFER_RIDGE_MIN_R2, RunConfig, load_stage, resolve_geometry,  # noqa: E402
                                 split_stage, targets_stage, validation_groups)
from structattn.train.uncertainty import calibration_groups, fit_calibration, interval_coverage  # noqa: E402
from structattn.train.baselines import ridge_fit_select, ridge_predict  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = (RESULTS / "semisynth_stemavg.json", RESULTS / "semisynth_stem5.json")
IMAGES = ("BTFO_DSO_pfm", "PTO_110_Virgin0001", *(f"PTO_Funakubo000{i}" for i in range(1, 8)))


def r2(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 1.0 - ((y - p) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def wavelet_features(patches: np.ndarray, patch: int, batch: int = 256) -> np.ndarray:
    """(N, C, w, w) -> (N, C J L g g): each token cell's mean wavelet moduli (the cell means left out: the
    pixels already hold them linearly)."""
    c = patches.shape[1]
    m = WaveletModulus(c, patch=patch)
    out = []
    with torch.no_grad():
        for i in range(0, len(patches), batch):
            out.append(m(torch.as_tensor(patches[i:i + batch]))[:, c:].flatten(1).numpy())
    return np.concatenate(out)


def fit_both(source: str, seed: int = 0) -> dict:
    cfg = RunConfig(source=source, progress=False, seed=seed)
    sample, checksum = load_stage(cfg, None, lambda *_: None)
    geo = resolve_geometry(sample, cfg)
    usable, split = split_stage(cfg, sample, geo)
    d = targets_stage(cfg, sample, checksum, geo, usable, split, lambda *_: None)
    x = d.source.take(np.arange(sample.n_points))  # (N, C, w, w) standardised, as the model sees them
    y = d.y.astype(np.float64)
    ys = (y - y[d.train].mean(0)) / np.maximum(y[d.train].std(0), 1e-8)
    feats = {"pixels": x.reshape(len(x), -1).astype(np.float64)}
    feats["pixels+wavelets"] = np.concatenate([feats["pixels"], wavelet_features(x, geo["patch"])], axis=1)
    out = {"targets": list(d.targets.names), "n": [len(d.train), len(d.val), len(d.test)]}
    for name, f in feats.items():
        fit = ridge_fit_select(f, ys, train=d.train, val=d.val)
        pred = ridge_predict(f, np.arange(len(f)), fit, fit["chosen"])
        # a held ridge's intervals, as the run makes them: one width per target (constant spread), the
        # split-conformal quantiles of its validation residuals per validation block, the larger kept
        groups, _ = calibration_groups(*validation_groups(split, usable, sample.n_points, d.val), "conformal")
        ones = np.ones_like(ys)
        cal = fit_calibration(ys[d.val], pred[d.val], ones[d.val], constant=np.ones(ys.shape[1], bool), groups=groups)
        cov95 = interval_coverage(ys[d.test], pred[d.test], ones[d.test], cal, 0.95)
        out[name] = {"val": r2(ys[d.val], pred[d.val]).tolist(), "test": r2(ys[d.test], pred[d.test]).tolist(),
                     "coverage_95": np.asarray(cov95, float).tolist(), "features": f.shape[1]}
    pick = [int(w > p) for p, w in zip(out["pixels"]["val"], out["pixels+wavelets"]["val"])]  # ties: pixels
    keys = ("pixels", "pixels+wavelets")
    out["best"] = {part: [out[keys[c]][part][k] for k, c in enumerate(pick)] for part in ("val", "test", "coverage_95")}
    out["best"]["uses"] = [keys[c] for c in pick]
    return out


def replay(probe: dict, default: dict, ridge_key: str) -> dict:
    """Per rule: (predictor, its test R²) after round 10c's choice with ridge `ridge_key`, margin 0."""
    out = {}
    for k, t in enumerate(probe["targets"]):
        run = default[t]
        rv, rt = probe[ridge_key]["val"][k], probe[ridge_key]["test"][k]
        if abs(run["vit"] - run["ridge"]) < 1e-6:  # the default run held pixel ridge: a ridge stays
            out[t] = ("ridge", rt)
        elif rv >= PREFER_RIDGE_MIN_R2 and rv >= run["vit_val"]:
            out[t] = ("ridge", rt)
        else:
            out[t] = ("vit", run["vit"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=",".join(IMAGES))
    ap.add_argument("--out", type=Path, default=RESULTS / "wavelet_ridge.json")
    ap.add_argument("--seed", type=int, default=0, help="the runs' seed (their blocks), as bench_semisynth.py --seed")
    ap.add_argument("--default", type=Path, nargs="+", default=list(DEFAULT),
                    help="the benchmark summaries with the ViT's figures for these runs")
    ap.add_argument("--candidate", default="pixels+wavelets", choices=("pixels+wavelets", "best"),
                    help="pixels+wavelets: round 16b; best: round 16c")
    a = ap.parse_args()
    torch.manual_seed(0)
    sources = runs("all", None)
    per_run = {}
    for f in a.default:
        for t, row in json.loads(f.read_text())["rules"].items():
            for image, r in row["per_run"].items():
                per_run.setdefault(image, {})[t] = r
    result = {"images": {}, "note": __doc__.split("\n\n")[0], "seed": a.seed, "candidate": a.candidate,
              "default": [str(p) for p in a.default]}
    for image in a.images.split(","):
        probe = fit_both(sources[image], a.seed)
        default = per_run[image]
        check = max(abs(probe["pixels"]["test"][k] - default[t]["ridge"]) for k, t in enumerate(probe["targets"]))
        base, cand = replay(probe, default, "pixels"), replay(probe, default, a.candidate)
        held = {t: probe[a.candidate]["coverage_95"][k] for k, t in enumerate(probe["targets"]) if cand[t][0] == "ridge"}
        result["images"][image] = {**probe, "split_check_max_abs_diff": check, "replay_pixels": base,
                                   "replay_candidate": cand, "coverage_95_held": held}
        print(f"  95 % coverage of the held ridges on the test blocks: "
              + ", ".join(f"{t} {c:.3f}" for t, c in held.items()), flush=True)
        print(f"{image}: split check {check:.4f}; " + ", ".join(
            f"{t} {base[t][0]} {base[t][1]:.2f} -> {cand[t][0]} {cand[t][1]:.2f}" for t in probe["targets"]), flush=True)
    rules = result["images"][next(iter(result["images"]))]["targets"]
    table = {}
    for t in rules:
        b = np.mean([v["replay_pixels"][t][1] for v in result["images"].values()])
        c = np.mean([v["replay_candidate"][t][1] for v in result["images"].values()])
        wav = np.mean([v[a.candidate]["test"][v["targets"].index(t)] for v in result["images"].values()])
        table[t] = {"pixels": float(b), "candidate": float(c), "difference": float(c - b), "wavelet_ridge_alone": float(wav),
                    "ridge_chosen": sum(v["replay_candidate"][t][0] == "ridge" for v in result["images"].values())}
    mean_b = float(np.mean([r["pixels"] for r in table.values()]))
    mean_c = float(np.mean([r["candidate"] for r in table.values()]))
    worst = min(r["difference"] for r in table.values())
    result["table"] = table
    result["verdict"] = {"mean_pixels": mean_b, "mean_candidate": mean_c, "mean_difference": mean_c - mean_b,
                         "worst_rule_difference": worst,
                         "passes": bool(mean_c - mean_b >= 0.01 and worst >= -0.02)}
    print(f"{'rule':16s} {'pixels':>7s} {'cand.':>7s} {'diff':>7s} {'wav ridge':>9s} {'ridge':>5s}")
    for t, r in table.items():
        print(f"{t:16s} {r['pixels']:7.3f} {r['candidate']:7.3f} {r['difference']:+7.3f} {r['wavelet_ridge_alone']:9.3f} "
              f"{r['ridge_chosen']:5d}")
    print(f"mean of the seven: {mean_b:.3f} -> {mean_c:.3f} ({mean_c - mean_b:+.3f}); worst rule {worst:+.3f}; "
          f"step 1 {'passes' if result['verdict']['passes'] else 'fails'}")
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
