"""Two defaults of the semi-synthetic benchmark side by side, per rule, on the images both have: the ViT's
own test R², the small CNN's (each run trains its own, with the run's trainer), the run's lead over its CNN.

    python bench/compare_nine.py --old bench/results/semisynth_wav5.json bench/results/semisynth_wav16.json \
        --new bench/results/semisynth_b32_step2.json bench/results/semisynth_b32.json

Each side merges its summaries of `bench_semisynth.py` (the first one that has an image wins). The run's
lead uses the run's own predictor; where a run held ridge for a rule, the "ViT" column is the ViT alone
where the summary kept it, else the held ridge's (runs before `vit_alone` existed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from nine_images import merged  # the same merge of summaries (first one with an image wins)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", nargs="+", type=Path, required=True)
    ap.add_argument("--new", nargs="+", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    a = ap.parse_args()
    old, new = merged(a.old), merged(a.new)
    images = sorted(set.intersection(*(set(old[r]) & set(new[r]) for r in new)))
    alone = lambda r: r["vit_alone"] if r.get("vit_alone") is not None else r["vit"]  # noqa: E731
    print(f"{len(images)} images: {', '.join(images)}")
    print(f"{'rule':16s} {'ViT old':>8s} {'ViT new':>8s} {'CNN old':>8s} {'CNN new':>8s} {'lead old':>9s} {'lead new':>9s}")
    table = {}
    for rule in new:
        o, n = [old[rule][i] for i in images], [new[rule][i] for i in images]
        m = lambda rows, f: float(np.mean([f(r) for r in rows]))  # noqa: E731
        row = {"vit_old": m(o, alone), "vit_new": m(n, alone), "cnn_old": m(o, lambda r: r["cnn"]),
               "cnn_new": m(n, lambda r: r["cnn"]), "lead_old": m(o, lambda r: r["vit"] - r["cnn"]),
               "lead_new": m(n, lambda r: r["vit"] - r["cnn"]),
               "per_image_lead": {i: [old[rule][i]["vit"] - old[rule][i]["cnn"], new[rule][i]["vit"] - new[rule][i]["cnn"]]
                                  for i in images}}
        table[rule] = row
        print(f"{rule:16s} {row['vit_old']:8.3f} {row['vit_new']:8.3f} {row['cnn_old']:8.3f} {row['cnn_new']:8.3f} "
              f"{row['lead_old']:+9.3f} {row['lead_new']:+9.3f}")
    if a.out:
        a.out.write_text(json.dumps({"images": images, "rules": table}, indent=1))
        print(f"-> {a.out}")


if __name__ == "__main__":
    main()
