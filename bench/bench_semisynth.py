"""Semi-synthetic benchmark (issue 12): real PFM textures, rules we wrote, the default run.

For every shared real image (../shared/data/pto_pfm_images/*.h5 and the .gwy/.ibw files in
../shared/data/instrument) the *default* `structattn run` (no option changed, so augmentation,
window and model are what a user gets) learns the seven rules of
`structattn.data.semisynthetic` at once, next to its baselines (mean, ridge, position, CNN) on
the same spatial split, and explains 96 test points with the attention family; every map is
scored against the rule's known causal region (pixel AUROC) next to the centre prior. Two
extra runs: the off-centre linear rules at noise 0.5, and the two rules that structure does
not determine (``trend``, ``noise``), which a run must call "not learned".

    python bench/bench_semisynth.py --prepare            # textures -> bench/.textures/*.npz (needs the readers)
    python bench/bench_semisynth.py --jobs 2             # all runs (about 8 min a run on 2 CPU cores)
    python bench/bench_semisynth.py --summary            # table -> bench/results/semisynth.json

The same benchmark with another readout (sweep round 5), next to the default's figures:

    python bench/bench_semisynth.py --jobs 2 --threads 1 --readout cls --runs bench/.runs_cls \
        --result bench/results/semisynth_cls.json
    python bench/bench_semisynth.py --compare bench/results/semisynth_cls.json bench/results/semisynth.json

A subset that fits a shorter budget (issue 17: AttnLRP next to the attention family): the three
rules the ViT learns with R² >= 0.7 on the full benchmark, on chosen images only:

    python bench/bench_semisynth.py --subset learned --images PTO_Funakubo0001,BTFO_DSO_pfm \
        --runs bench/.runs_learned --result bench/results/semisynth_learned.json

Run folders go to bench/.runs/ (or --runs); the summary reads their metrics.json.
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
TEX = ROOT / "bench" / ".textures"
RUNS = ROOT / "bench" / ".runs"
RESULT = ROOT / "bench" / "results" / "semisynth.json"
ATTENTION = ("attention", "rollout", "gradattn")
METHODS = (*ATTENTION, "attnlrp")  # explained and scored in every run (attnlrp: one backward a target)
LEARNED_RULES = "amp_corner+phase_corner+threshold"  # ViT R² >= 0.7 on the full benchmark (README)


def sources() -> list[Path]:
    return sorted((DATA / "pto_pfm_images").glob("*.h5")) + sorted(
        p for p in (DATA / "instrument").glob("*") if p.suffix in (".gwy", ".ibw"))


def prepare() -> None:
    from structattn.data.semisynthetic import read_texture, save_texture

    TEX.mkdir(parents=True, exist_ok=True)
    for p in sources():
        img, ch, px = read_texture(p)
        save_texture(TEX / f"{p.stem}.npz", img, ch, px)
        print(f"{p.name}: {img.shape} {ch} pixel {px}")


def runs(subset: str = "all", images: list[str] | None = None) -> dict[str, str]:
    """run name -> source spec (``subset="learned"``: only the rules the ViT learns, no extra runs)."""
    out = {}
    if subset == "learned":
        for t in sorted(TEX.glob("*.npz")):
            if images is None or t.stem in images:
                out[t.stem] = f"semisynthetic:image={t},rules={LEARNED_RULES}"
        return out
    for t in sorted(TEX.glob("*.npz")):
        out[t.stem] = f"semisynthetic:image={t}"
    first = sorted(TEX.glob("*.npz"))[0]
    out["noise0.5"] = f"semisynthetic:image={first},rules=amp_corner+phase_corner+product,noise=0.5"
    out["no_structure"] = f"semisynthetic:image={first},rules=trend+noise+amp_corner"
    return out if images is None else {k: v for k, v in out.items() if k in images}


# run options the benchmark can set away from the default (RunConfig field = --flag with dashes)
CHANGEABLE = ("readout", "criterion", "stopping", "target_patience", "ema", "sam", "pretrain_epochs", "ensemble", "prefer_ridge", "seed",
              "stem_pool", "wavelets", "ridge_wavelets", "batch_size", "dropout", "lr")


def run_one(name: str, source: str, device: str, runs_dir: Path = RUNS, **changed) -> None:
    """One default run; `changed` (e.g. readout="cls") sets options away from the default."""
    from structattn.pipeline import RunConfig, run_pipeline

    t0 = time.perf_counter()
    opts = {k: v for k, v in changed.items() if v is not None}  # None: the default, no option changed
    res = run_pipeline(RunConfig(source=source, device=device, progress=False, domains=False, points="96",
                                 methods=METHODS, **opts), runs_dir / name, overwrite=True)
    print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return res


def _best_attention(row: dict) -> float:
    """The highest pixel AUROC among a run's attention-family maps (0 where none was scored)."""
    return max((row["auroc"].get(k) or 0) for k in ATTENTION)


def _nanmean(values) -> float:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def fixedness(run: Path) -> dict[str, dict[str, float]]:
    """target -> attention-family method -> mean Pearson r between each explained point's map and
    the mean map over the points. Near 1, the method shows one fixed map (where the model reads,
    the same for every point), not which structures matter at each point."""
    import h5py

    out: dict[str, dict[str, float]] = {}
    if not (run / "explanations.h5").is_file():  # runs copied back without their maps (the GPU runs)
        return out
    with h5py.File(run / "explanations.h5", "r") as f:
        for k in ATTENTION:
            for target in f[k] if k in f else ():
                a = f[f"{k}/{target}"][:].reshape(len(f[f"{k}/{target}"]), -1).astype(float)
                mean = a.mean(0)
                out.setdefault(target, {})[k] = float(np.nanmean([np.corrcoef(x, mean)[0, 1] for x in a]))
    return out


def validation_r2(run: Path) -> dict[str, float]:
    """target -> the ViT's R² on the run's validation blocks (where options are chosen; the
    benchmark's figures are the test blocks')."""
    if not (run / "predictions.npz").is_file():
        return {}
    from structattn.train.metrics import regression_scores

    p = np.load(run / "predictions.npz")
    val = p["split"] == 1
    names = tuple(str(n) for n in p["target_names"])
    return {n: s["r2"] for n, s in regression_scores(p["y_true"][val], p["y_pred"][val], names).items()}


def summary(runs_dir: Path = RUNS, result: Path = RESULT) -> None:
    rows, per_run = {}, {}
    for d in sorted(runs_dir.iterdir()):
        if d.name.startswith(".") or not (d / "metrics.json").is_file():  # staging folders of runs in progress
            continue
        m = json.loads((d / "metrics.json").read_text())
        kinds = {}
        per_run[d.name] = {"seconds_train": m["training"].get("seconds"), "best_epoch": m["training"]["best_epoch"]}
        scores = m.get("explanations", {}).get("scores", {})
        fixed = fixedness(d)
        val = validation_r2(d)
        for t, s in m["targets"].items():
            gt = scores.get(t, {})
            au = {k: gt[k].get("auroc") for k in (*METHODS, "centre") if k in gt}
            cost = {k: gt[k].get("seconds_per_point") for k in METHODS if k in gt}
            held = s.get("predicted_by") == "ridge"  # --prefer-ridge: the run's R² is the held ridge's
            rows.setdefault(t, []).append({"run": d.name, "vit": s["r2"], "vit_val": val.get(t), **s["baselines"], "learned": s["learned"],
                                           "vit_alone": s["choice"].get("vit_test_r2") if held else s["r2"],
                                           "predictor": (s["choice"].get("ridge_features", "pixels") + " ridge") if held else "vit",
                                           "auroc": au, "seconds_per_point": cost,
                                           "fixedness": fixed.get(t, {}) if au else {}})
    from structattn.data.semisynthetic import RULES

    table = {}
    print(f"{'rule':16s} {'kind':13s} {'n':>2s} {'ViT':>6s} {'CNN':>6s} {'ridge':>6s} {'pos':>6s} {'mean':>6s} "
          f"{'learned':>7s} {'attn':>5s} {'roll':>5s} {'grad':>5s} {'best':>5s} {'lrp':>5s} {'prior':>5s} "
          f"{'ms/pt grad':>10s} {'ms/pt lrp':>9s}")
    for t, rs in rows.items():
        main = [r for r in rs if r["run"] != "noise0.5"]
        for label, sel in ((t, main), (f"{t}@noise0.5", [r for r in rs if r["run"] == "noise0.5"])):
            if not sel:
                continue
            f = lambda k: float(np.nanmean([np.nan if r[k] is None else r[k] for r in sel]))  # noqa: E731
            au = {k: _nanmean([r["auroc"].get(k) for r in sel]) for k in (*METHODS, "centre")} if sel[0]["auroc"] else {}
            ms = {k: 1e3 * _nanmean([r["seconds_per_point"].get(k) for r in sel]) for k in METHODS}
            best = float(np.nanmean([_best_attention(r) for r in sel])) if au else None
            row = {"kind": RULES[t][0], "n_runs": len(sel), "vit": f("vit"), "vit_val": f("vit_val"), "cnn": f("cnn"), "ridge": f("ridge"),
                   "position": f("position"), "mean": f("mean"), "learned_share": float(np.mean([r["learned"] for r in sel])),
                   "auroc": au, "best_attention_auroc": best, "ms_per_point": ms,
                   "fixedness": {k: _nanmean([r["fixedness"].get(k) for r in sel]) for k in ATTENTION} if au else {},
                   "per_run": {r["run"]: {**{k: r[k] for k in ("vit", "vit_val", "cnn", "ridge", "position", "mean", "learned",
                                                               "vit_alone", "predictor")},
                                          "best_attention_auroc": _best_attention(r) if r["auroc"] else None}
                               for r in sel}}
            table[label] = row
            a = lambda k: f"{au[k]:5.2f}" if au and np.isfinite(au.get(k, np.nan)) else "    -"  # noqa: E731
            print(f"{label:16s} {row['kind']:13s} {len(sel):2d} {row['vit']:6.2f} {row['cnn']:6.2f} "
                  f"{row['ridge']:6.2f} {row['position']:6.2f} {row['mean']:6.2f} {row['learned_share']:7.2f} "
                  f"{a('attention')} {a('rollout')} {a('gradattn')} "
                  f"{(f'{best:5.2f}' if best is not None else '    -')} {a('attnlrp')} {a('centre')} "
                  f"{ms['gradattn']:10.2f} {ms['attnlrp']:9.2f}")
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps({"rules": table, "runs": per_run}, indent=1))
    print(f"-> {result}")


def compare(a: Path, b: Path) -> None:
    """Side by side, per rule: two summaries of the benchmark (e.g. two readouts) on the runs both
    have (same textures, rules and splits). R² and learned counts are over those runs; the
    attention AUROC columns are each summary's own means (the same runs once both are complete);
    "fix" is the attention family's mean `fixedness` (1: one map for every point)."""
    ta, tb = (json.loads(Path(p).read_text())["rules"] for p in (a, b))
    print(f"{'rule':22s} {'n':>2s} {'ViT A':>6s} {'ViT B':>6s} {'diff':>6s} {'CNN':>6s} {'ridge':>6s} {'lrn A':>5s} "
          f"{'lrn B':>5s} {'att A':>5s} {'att B':>5s} {'prior':>5s} {'fix A':>5s} {'fix B':>5s} {'val diff':>8s}")
    diffs, vdiffs = [], []
    for rule, ra in ta.items():
        rb = tb.get(rule)
        if rb is None:
            continue
        common = sorted(set(ra["per_run"]) & set(rb["per_run"]))
        if not common:
            continue
        m = lambda r, k: float(np.mean([r["per_run"][n][k] for n in common]))  # noqa: E731
        d = m(rb, "vit") - m(ra, "vit")
        has_val = all(r["per_run"][n].get("vit_val") is not None for r in (ra, rb) for n in common)
        dv = m(rb, "vit_val") - m(ra, "vit_val") if has_val else float("nan")
        if "@" not in rule and ra["kind"] != "no structure":
            diffs.append(d)
            vdiffs.append(dv)
        att = lambda r: f"{r['best_attention_auroc']:5.2f}" if r.get("best_attention_auroc") is not None else "    -"  # noqa: E731
        fix = lambda r: f"{_nanmean(list(r.get('fixedness', {}).values())):5.2f}"  # noqa: E731
        lrn = lambda r: f"{int(sum(r['per_run'][n]['learned'] for n in common)):2d}/{len(common):<2d}"  # noqa: E731
        print(f"{rule:22s} {len(common):2d} {m(ra, 'vit'):6.2f} {m(rb, 'vit'):6.2f} {d:+6.2f} {m(ra, 'cnn'):6.2f} "
              f"{m(ra, 'ridge'):6.2f} {lrn(ra)} {lrn(rb)} {att(ra)} {att(rb)} {ra['auroc'].get('centre', float('nan')):5.2f} "
              f"{fix(ra)} {fix(rb)} {dv:+8.2f}")
    print(f"mean R² difference over the seven structure rules (B - A): test {np.mean(diffs):+.3f}, "
          f"validation blocks {np.mean(vdiffs):+.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores / jobs threads)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (default: torch's choice)")
    ap.add_argument("--subset", default="all", choices=("all", "learned"),
                    help="all: every rule and the two extra runs; learned: only the rules with ViT R2 >= 0.7")
    ap.add_argument("--images", default=None, help="comma-separated texture names (default: all)")
    ap.add_argument("--runs", type=Path, default=RUNS, help="folder of the run folders")
    ap.add_argument("--result", type=Path, default=RESULT, help="summary JSON")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                    help="two summary JSONs side by side (e.g. semisynth_cls.json semisynth.json)")
    ap.add_argument("--readout", default=None,
                    help="run with this --readout instead of the default (sweep round 5, docs/training.md)")
    ap.add_argument("--criterion", default=None,
                    help="run with this --criterion instead of the default (sweep round 6, docs/training.md)")
    ap.add_argument("--stopping", default=None,
                    help="run with this --stopping instead of the default (round 23, docs/training.md)")
    ap.add_argument("--target-patience", type=int, default=None,
                    help="run with this --target-patience instead of the default (sweep round 7, docs/training.md)")
    ap.add_argument("--ema", type=float, default=None,
                    help="run with this --ema (moving average of the weights; sweep round 11, docs/training.md)")
    ap.add_argument("--sam", type=float, default=None,
                    help="run with this --sam (sharpness-aware minimisation; sweep round 15, docs/training.md)")
    ap.add_argument("--stem-pool", default=None,
                    help="run with this --stem-pool (a hybrid stem pooled to the token grid; sweep round 13, docs/training.md)")
    ap.add_argument("--wavelets", type=int, default=None,
                    help="run with this --wavelets (wavelet-modulus token features; sweep round 16, docs/training.md)")
    ap.add_argument("--ridge-wavelets", type=int, default=None,
                    help="run with this --ridge-wavelets (0: --prefer-ridge holds pixel ridge only, as before round 16c)")
    ap.add_argument("--pretrain-epochs", type=int, default=None,
                    help="run with this many epochs of masked-token pretraining (sweep round 12, docs/training.md)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="run with this --batch-size instead of the default (sweep round 20, docs/training.md)")
    ap.add_argument("--dropout", type=float, default=None,
                    help="run with this --dropout in the ViT instead of the default (sweep round 21, docs/training.md)")
    ap.add_argument("--lr", type=float, default=None,
                    help="run with this peak --lr instead of the default (sweep round 22, docs/training.md)")
    ap.add_argument("--ensemble", type=int, default=None,
                    help="ensemble size instead of the default 3. R², verdicts and explanations come from the "
                         "primary model, which the ensemble does not change; 1 saves about a third of a run")
    ap.add_argument("--seed", type=int, default=None,
                    help="run seed instead of the default 0 (other spatial blocks and weights; the rules' noise stays)")
    ap.add_argument("--prefer-ridge", nargs="?", const=True, default=None, type=lambda v: v.lower() in ("1", "true", "yes"),
                    help="run with --prefer-ridge (ridge where the ViT does not beat it on validation; round 10c, "
                         "docs/training.md)")
    a = ap.parse_args()
    images = a.images.split(",") if a.images else None
    if a.runs != RUNS and a.result == RESULT and not (a.compare or a.one or a.prepare):
        ap.error("--result: runs outside bench/.runs need their own summary file (the default is the default run's)")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.compare:
        compare(*a.compare)
    elif a.prepare:
        prepare()
    elif a.summary:
        summary(a.runs, a.result)
    elif a.one:
        run_one(a.one, runs(a.subset, images)[a.one], a.device, a.runs, **{k: getattr(a, k) for k in CHANGEABLE})
    else:
        names = list(runs(a.subset, images))
        procs: list[subprocess.Popen] = []
        for n in names:
            while len([p for p in procs if p.poll() is None]) >= a.jobs:
                time.sleep(1)
            procs.append(subprocess.Popen([sys.executable, __file__, "--one", n, "--device", a.device,
                                           "--threads", str(a.threads), "--subset", a.subset, "--runs", str(a.runs)]
                                          + (["--images", a.images] if a.images else [])
                                          + [arg for k in CHANGEABLE if getattr(a, k) is not None
                                             for arg in ("--" + k.replace("_", "-"), str(getattr(a, k)))]))
        for p in procs:
            p.wait()
        summary(a.runs, a.result)
