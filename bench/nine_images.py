"""The nine-image table of the semi-synthetic benchmark from several summaries of `bench_semisynth.py`
(each a set of images run with the same options), per rule: means over the images of the run's test R²
(its predictor: the ViT or a ridge `--prefer-ridge` held), the ViT's own test R², the small CNN, pixel
ridge, the run's lead over the CNN and over ridge, how many images call the rule learned (and on how many the
verdict is unknown, "?", because the choice was replayed), and the best attention-family pixel AUROC.

    python bench/nine_images.py bench/results/semisynth_wav5.json bench/results/semisynth_wav16.json \
        --replay bench/results/wavelet_ridge.json

`--replay`: for images whose runs had `--ridge-wavelets 0`, the choice of the wavelet ridge is replayed
from `probe_wavelet_ridge.py`'s figures on the same split (validation R² at least 0.5, above pixel
ridge's and above the ViT's; the margin taken as 0, as the ViT's validation predictions were not
kept). Replayed image-rules are counted and marked. Runs from before the summaries recorded each rule's
predictor are replayed always; runs that recorded it (the pixel-ridge choice) but ran with
`--ridge-wavelets 0` are named by their summary with `--no-wavelet-ridge`:

    python bench/nine_images.py bench/results/semisynth_b32_step2.json bench/results/semisynth_b32.json \
        bench/results/semisynth_b32_rest.json --replay bench/results/wavelet_ridge.json \
        --no-wavelet-ridge semisynth_b32_step2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MIN_R2 = 0.5  # structattn.pipeline.PREFER_RIDGE_MIN_R2


def merged(paths: list[Path]) -> dict:
    """rule -> image -> that run's row (the first summary that has the image wins)."""
    out: dict = {}
    for p in paths:
        for rule, row in json.loads(p.read_text())["rules"].items():
            for image, r in row["per_run"].items():
                out.setdefault(rule, {}).setdefault(image, {**r, "summary": p.name})
    return out


def replayed(rows: dict, probe: dict, no_wavelet_ridge: frozenset = frozenset()) -> int:
    """Name each row's predictor where its run did not record it (runs before the summary kept it: pixel
    ridge where the run's R² is ridge's, else the ViT), and apply the wavelet ridge's choice where such a
    run could not hold it; returns how many image-rules the replay changed. A replayed row's verdict is
    unknown (its margin needs the ViT's validation predictions): `learned` becomes None. Rows of the summaries
    named in `no_wavelet_ridge` kept their recorded predictor, and only the wavelet ridge's choice is replayed."""
    n = 0
    for rule, per in rows.items():
        for image, r in per.items():
            if "predictor" in r and r["summary"] not in no_wavelet_ridge:
                continue  # the run had the choice itself
            if "predictor" in r:  # the run chose pixel ridge itself, without the wavelet ridge
                pixel = r["predictor"] != "vit"
            else:
                pixel = abs(r["vit"] - r["ridge"]) < 1e-6  # as probe_wavelet_ridge.py tells a held pixel ridge
                r.update(predictor="pixels ridge" if pixel else "vit", vit_alone=None if pixel else r["vit"])
            p = probe.get(image)
            if p is None or rule not in p["targets"]:
                continue
            k = p["targets"].index(rule)
            wv, pv = p["pixels+wavelets"]["val"][k], p["pixels"]["val"][k]
            beats_vit = pixel or (r.get("vit_val") is not None and wv > r["vit_val"])  # pixel ridge had beaten it
            if wv >= MIN_R2 and wv > pv and beats_vit:
                r.update(vit=p["pixels+wavelets"]["test"][k], predictor="pixels+wavelets ridge (replayed)",
                         learned=None)
                n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--replay", type=Path, default=None, help="probe_wavelet_ridge.py's result on the same splits")
    ap.add_argument("--no-wavelet-ridge", nargs="+", default=[], metavar="SUMMARY",
                    help="file names of summaries whose runs had --ridge-wavelets 0 (replayed with --replay)")
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    a = ap.parse_args()
    rows = merged(a.summaries)
    n_rep = replayed(rows, json.loads(a.replay.read_text())["images"] if a.replay else {},
                     frozenset(a.no_wavelet_ridge))
    m = lambda vals: float(np.nanmean([np.nan if v is None else v for v in vals]))  # noqa: E731
    table = {}
    print(f"{'rule':16s} {'n':>2s} {'run':>6s} {'ViT':>6s} {'CNN':>6s} {'ridge':>6s} {'-CNN':>6s} {'-ridge':>6s} "
          f"{'learned':>7s} {'?':>2s} {'attn':>5s}  predictors")
    for rule, per in rows.items():
        rs = list(per.values())
        run, cnn, ridge = m(r["vit"] for r in rs), m(r["cnn"] for r in rs), m(r["ridge"] for r in rs)
        vit = m(r.get("vit_alone", r["vit"]) for r in rs)  # the ViT's own test R², where known
        preds = {}
        for r in rs:
            preds[r.get("predictor", "vit")] = preds.get(r.get("predictor", "vit"), 0) + 1
        row = {"n": len(rs), "run": run, "vit_alone": vit, "cnn": cnn, "ridge": ridge, "lead_over_cnn": run - cnn,
               "lead_over_ridge": run - ridge, "learned": int(sum(r["learned"] is True for r in rs)),
               "verdict_unknown": int(sum(r["learned"] is None for r in rs)),
               "best_attention_auroc": m(r.get("best_attention_auroc") for r in rs), "predictors": preds,
               "images": sorted(per)}
        table[rule] = row
        print(f"{rule:16s} {len(rs):2d} {run:6.3f} {vit:6.3f} {cnn:6.3f} {ridge:6.3f} {run - cnn:+6.3f} "
              f"{run - ridge:+6.3f} {row['learned']:7d} {row['verdict_unknown']:2d} {row['best_attention_auroc']:5.2f}  "
              + ", ".join(f"{k} {v}" for k, v in preds.items()))
    main7 = [r for k, r in table.items() if "@" not in k]
    print(f"mean of the seven rules: run {np.mean([r['run'] for r in main7]):.3f}, ViT alone "
          f"{np.mean([r['vit_alone'] for r in main7]):.3f}; replayed image-rules: {n_rep}")
    if a.out:
        a.out.write_text(json.dumps({"summaries": [str(p) for p in a.summaries], "replay": str(a.replay),
                                     "replayed": n_rep, "rules": table}, indent=1))


if __name__ == "__main__":
    main()
