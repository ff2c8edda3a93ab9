"""Benchmark: attention vs rollout vs gradient attention vs SHAP vs IG vs AttnLRP (and occlusion).

Trains one ViT on the synthetic default with the production pipeline (`run_pipeline`:
spatial block split, Lightning trainer, early stopping), explains the same
test points with every method for every target in one run, scores everything with
`structattn.evaluate.evaluate_methods` and prints per target and method: ground-truth
AUROC, mass ratio, deletion/insertion AUC (and the random order's), agreement with SHAP,
the randomisation similarity, passes and seconds per point, and the throughput ratio
vs SHAP. Writes ``bench/results/explain.json`` (and a side-by-side maps figure).

Run: ``PYTHONPATH=src python bench/bench_explain.py [--points 64] [--epochs 80]``.
The paper's claim being checked: attention explains at >= 100x SHAP's throughput with
no worse ground-truth AUROC.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from structattn.data.patches import extract_patches
from structattn.data.synthetic import causal_masks
from structattn.evaluate import evaluate_methods
from structattn.explain import attnlrp_relevance
from structattn.pipeline import RunConfig, run_pipeline
from structattn.runfolder import RunFolder

METHODS = ["attention", "rollout", "gradattn", "shap", "ig", "occlusion", "attnlrp"]
HERE = Path(__file__).resolve().parent


def train(*, epochs: int, seed: int, window: int, tmp: Path):
    """The production path: `run_pipeline` on the synthetic default (spatial block split,
    Lightning trainer, early stopping), attention only, no domain step. No ensemble and no CNN
    baseline: the primary model, the one explained, is the same without them."""
    cfg = RunConfig(source="synthetic", window=window, epochs=epochs, seed=seed, methods=("attention",),
                    domains=False, progress=False, ensemble=1, cnn_baseline=False)
    run_pipeline(cfg, tmp / "run")
    return RunFolder(tmp / "run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=64, help="test points explained")
    ap.add_argument("--epochs", type=int, default=80, help="maximum epochs (early stopping), as `structattn run`")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--shap-evals", type=int, default=None, help="SHAP max_evals (default 4 permutations)")
    ap.add_argument("--ig-steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "explain.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rf = train(epochs=args.epochs, seed=0, window=args.window, tmp=Path(tmp))
        trained, sample, split = rf.model, rf.sample, rf.predictions["split"]
        r2 = np.array([rf.metrics["targets"][n]["r2"] for n in trained.target_names])
    train_s = time.perf_counter() - t0
    model = trained.model.eval()
    test = np.flatnonzero(split == 2)
    patches = trained.standardise(extract_patches(sample.image, sample.positions, window=args.window,
                                                  pad_mode=trained.pad_mode))
    rng = np.random.default_rng(0)
    pts = np.sort(rng.choice(test, size=min(args.points, len(test)), replace=False))
    names = list(sample.target_names)
    masks = {n: causal_masks(sample, target=n, window=args.window, index=pts) for n in names}
    r = sample.truth["radius"]
    yy, xx = np.mgrid[0 : args.window, 0 : args.window] - args.window // 2
    disk = (yy**2 + xx**2) <= r**2  # where the rule reads: AUROC inside it ignores distance
    within = {n: disk for n in names}
    options = {"ig": {"n_steps": args.ig_steps}}
    if args.shap_evals:
        options["shap"] = {"max_evals": args.shap_evals}
    t0 = time.perf_counter()
    scores, maps = evaluate_methods(
        model, patches[pts], methods=METHODS, targets=list(range(len(names))), target_names=names,
        masks=masks, within=within, options=options, on_step=lambda s: print(f"  explaining {s}", flush=True),
    )
    explain_s = time.perf_counter() - t0
    # AttnLRP conservation on the trained model: share of y_k that reaches the pixels (the rest
    # goes to biases, [CLS], position embeddings and the softmax rule's bias term)
    conservation = {}
    with torch.no_grad():
        y = model(patches[pts])
    for k, n in enumerate(names):
        rel = attnlrp_relevance(model, patches[pts], target=k).sum((1, 2, 3))
        share = (rel / y[:, k]).numpy()
        conservation[n] = {"median_share": float(np.median(share)), "q25": float(np.quantile(share, 0.25)),
                           "q75": float(np.quantile(share, 0.75)),
                           "batch_share": float(rel.sum() / y[:, k].sum())}
    print("AttnLRP: sum of pixel relevance / y_k (median, quartiles):",
          {n: f"{c['median_share']:.2f} [{c['q25']:.2f}, {c['q75']:.2f}]" for n, c in conservation.items()})

    rows = []
    print(f"\nmodel: test R2 {dict(zip(names, np.round(r2, 3)))}, trained in {train_s:.0f} s; "
          f"{len(pts)} points, {args.threads} thread(s)\n")
    hdr = f"{'target':8} {'method':10} {'AUROC':>6} {'in-disk':>7} {'mass':>5} {'del':>5} {'ins':>5} {'rho_shap':>8} {'rand_rho':>8} {'fwd/pt':>7} {'bwd/pt':>6} {'s/pt':>8} {'x SHAP':>8}"
    print(hdr)
    for n in names:
        s = scores[n]
        shap_pps = s["shap"]["points_per_second"]
        for m in METHODS + ["centre"]:
            r = s[m]
            ratio = r["points_per_second"] / shap_pps
            rows.append({"target": n, "method": m, "throughput_vs_shap": ratio,
                         **{k: v for k, v in r.items() if k not in ("curves", "agreement_spearman", "agreement_topk")},
                         "spearman_vs_shap": r["agreement_spearman"]["shap"],
                         "topk_vs_shap": r["agreement_topk"]["shap"]})
            print(f"{n:8} {m:10} {r['auroc']:6.3f} {r['auroc_within']:7.3f} {r['mass_ratio']:5.2f} {r['deletion_auc']:5.3f} "
                  f"{r['insertion_auc']:5.3f} {r['agreement_spearman']['shap']:8.2f} {r['randomisation_spearman']:8.2f} "
                  f"{r['forwards_per_point']:7.1f} {r['backwards_per_point']:6.1f} {r['seconds_per_point']:8.5f} {ratio:8.1f}")
        print(f"{n:8} {'(random)':10} {'':6} {'':7} {'':5} {s['_random']['deletion_auc']:5.3f} {s['_random']['insertion_auc']:5.3f}")
    print("\nthroughput vs SHAP (mean over targets) and mean AUROC:")
    summary = {}
    for m in METHODS + ["centre"]:
        rr = [r for r in rows if r["method"] == m]
        summary[m] = {"throughput_vs_shap": float(np.mean([r["throughput_vs_shap"] for r in rr])),
                      "auroc": float(np.mean([r["auroc"] for r in rr])),
                      "auroc_within": float(np.mean([r["auroc_within"] for r in rr])),
                      "points_per_second": float(np.mean([r["points_per_second"] for r in rr]))}
        print(f"  {m:10} {summary[m]['throughput_vs_shap']:9.1f}x   AUROC {summary[m]['auroc']:.3f}   in-disk {summary[m]['auroc_within']:.3f}   "
              f"{summary[m]['points_per_second']:.1f} points/s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "model": model.cfg.to_dict(), "torch": torch.__version__, "python": platform.python_version(),
                   "machine": platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "model_test_r2": dict(zip(names, map(float, r2))),
        "train_seconds": train_s, "explain_seconds": explain_s, "points": pts.tolist(),
        "summary": summary, "rows": rows, "attnlrp_conservation": conservation,
        "random_order": {n: {k: scores[n]["_random"][k] for k in ("deletion_auc", "insertion_auc")} for n in names},
        "agreement": {n: scores[n]["_agreement"] for n in names},
    }
    args.out.write_text(json.dumps(result, indent=1))
    np.savez_compressed(args.out.with_suffix(".maps.npz"), patches=patches[pts].numpy(), points=pts,
                        **{f"{n}/{m}": maps[n][m] for n in names for m in maps[n]},
                        **{f"mask/{n}": masks[n] for n in names})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
