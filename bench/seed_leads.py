"""How much of a lead over the CNN is the training seed's luck? (issue 12; measures, changes nothing)

The nine-image benchmark compares one ViT (member 0, seed 0) with one CNN (seed 0). Round 17 found that
the CNN's seed moves a lead as much as the ViT's, with batches of 64. This script measures it for
today's default from finished default runs (`bench_semisynth.py --one IMAGE`, default 3-member
ensemble), without training any ViT again: it rebuilds each run's split and targets from its
config.json (checked against the run's data checksum and test points), predicts the test points with
the run's three saved ViTs (model.pt and ensemble/member_1.pt, member_2.pt; member 0's predictions are
checked against the run's own), and trains the CNN baseline again with the members' seeds (seed + 1,
seed + 2: the same trainer, options and split as the run's CNN, whose seed-0 predictions come from the
run). Per rule it reports, over the images, one ViT's expected R² (mean over its 3 seeds) against one
CNN's (mean over its 3 seeds) and the lead between them with its standard error over the images, and
the ensembles' means (3 ViTs against 3 CNNs).

    python bench/seed_leads.py --one RUN            # one run folder -> bench/results/seed_leads/IMAGE.npz
    python bench/seed_leads.py --summary            # -> bench/results/seed_leads_b32.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import r2_score

ROOT = Path(__file__).resolve().parents[1]
TEX = ROOT / "bench" / ".textures"
OUT = ROOT / "bench" / "results" / "seed_leads"
RESULT = ROOT / "bench" / "results" / "seed_leads_b32.json"
NONLINEAR = ("wall_density", "threshold", "product")


def r2(y: np.ndarray, p: np.ndarray) -> float:
    return float(r2_score(y, p))


def one(run: Path, out: Path = OUT) -> Path:
    import torch

    from structattn.pipeline import RunConfig, load_stage, resolve_geometry, split_stage, targets_stage
    from structattn.runfolder import RunFolder
    from structattn.train.baselines import fit_cnn
    from structattn.train.ensemble import member_seed
    from structattn.train.trainer import TrainConfig

    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "1")))
    t0 = time.perf_counter()
    folder = RunFolder(run)
    conf = folder.config
    rc = dict(conf["run"])
    texture = Path(rc["source"].split("image=", 1)[1].split(",", 1)[0]).name  # the run's worktree may be gone
    image = Path(texture).stem
    rc.update(source=f"semisynthetic:image={TEX / texture}", progress=False, device="cpu", domains=False)
    rc["methods"] = tuple(rc["methods"])
    cfg = RunConfig(**rc)
    say = lambda msg: print(f"{image}: {msg}", flush=True)  # noqa: E731
    sample, checksum = load_stage(cfg, None, say)
    if checksum != conf["data"]["checksum"]:
        raise SystemExit(f"{run}: the texture's data checksum differs from the run's ({checksum[:12]} vs "
                         f"{conf['data']['checksum'][:12]})")
    geo = resolve_geometry(sample, cfg)
    usable, split = split_stage(cfg, sample, geo)
    d = targets_stage(cfg, sample, checksum, geo, usable, split, say)
    p = folder.predictions
    row_of = {int(i): r for r, i in enumerate(p["point_index"])}
    rows = np.array([row_of[int(i)] for i in d.test])
    if not (np.all(p["split"][rows] == 2) and (p["split"] == 2).sum() == len(d.test)):
        raise SystemExit(f"{run}: the rebuilt test points are not the run's")
    y = d.y[d.test]
    if not np.allclose(y, p["y_true"][rows], atol=1e-5):
        raise SystemExit(f"{run}: the rebuilt targets are not the run's")
    names = [str(n) for n in p["target_names"]]
    metrics = folder.metrics
    predicted_by = [metrics["targets"][n].get("predicted_by", "vit") for n in names]
    by_vit = [k for k, b in enumerate(predicted_by) if b == "vit"]
    members = folder.members  # model.pt, then ensemble/member_<k>.pt
    vits = np.stack([m.predict_points(d.source, d.test) for m in members])
    if by_vit and not np.allclose(vits[0][:, by_vit], p["y_pred"][rows][:, by_vit], atol=1e-4):
        raise SystemExit(f"{run}: member 0's predictions differ from the run's")
    tcfg = TrainConfig(**conf["train"])
    cnns = [p["y_pred_cnn"][rows]]
    t1 = time.perf_counter()
    for k in range(1, len(members)):
        pred, _ = fit_cnn(d.source, d.y, train=d.train, val=d.val,
                          train_cfg=dataclasses.replace(tcfg, seed=member_seed(tcfg.seed, k)))
        cnns.append(pred[d.test])
        say(f"CNN seed {member_seed(tcfg.seed, k)}: " + ", ".join(f"{n} {r2(y[:, j], pred[d.test][:, j]):.3f}"
                                                                for j, n in enumerate(names)))
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{image}.npz"
    np.savez(dest, names=np.array(names), y=y, vit=vits, cnn=np.stack(cnns),
             predicted_by=np.array(predicted_by),
             seconds=json.dumps({"all": time.perf_counter() - t0, "cnns": time.perf_counter() - t1}))
    say(f"-> {dest} ({time.perf_counter() - t0:.0f} s)")
    return dest


def summary(src: Path = OUT, result: Path = RESULT) -> dict:
    per: dict = {}
    for f in sorted(src.glob("*.npz")):
        z = np.load(f)
        for k, name in enumerate(z["names"].tolist()):
            y = z["y"][:, k]
            vit = [r2(y, v[:, k]) for v in z["vit"]]
            cnn = [r2(y, c[:, k]) for c in z["cnn"]]
            per.setdefault(name, {})[f.stem] = {
                "vit_each": vit, "cnn_each": cnn, "predicted_by": str(z["predicted_by"][k]),
                "vit_seed_mean": float(np.mean(vit)), "cnn_seed_mean": float(np.mean(cnn)),
                "lead_seeds": float(np.mean(vit) - np.mean(cnn)), "lead_seed0": vit[0] - cnn[0],
                "lead_member0_vs_cnn_seeds": vit[0] - float(np.mean(cnn)),
                "vit_ensemble": r2(y, z["vit"][:, :, k].mean(0)), "cnn_ensemble": r2(y, z["cnn"][:, :, k].mean(0))}
    rules = {}
    for name, rows in per.items():
        col = lambda key: np.array([r[key] for r in rows.values()])  # noqa: E731
        se = lambda a: float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else None  # noqa: E731
        lead = col("lead_seeds")
        # spread of one model's R² from seed to seed (mean over images of the per-image std over seeds)
        spread = {m: float(np.mean([np.std(r[f"{m}_each"], ddof=1) for r in rows.values()])) for m in ("vit", "cnn")}
        rules[name] = {"n": len(rows), "vit_seed_mean": float(col("vit_seed_mean").mean()),
                       "cnn_seed_mean": float(col("cnn_seed_mean").mean()),
                       "lead_seeds": float(lead.mean()), "lead_seeds_se": se(lead),
                       "lead_seed0": float(col("lead_seed0").mean()), "lead_seed0_se": se(col("lead_seed0")),
                       "vit_ensemble": float(col("vit_ensemble").mean()), "cnn_ensemble": float(col("cnn_ensemble").mean()),
                       "lead_ensembles": float((col("vit_ensemble") - col("cnn_ensemble")).mean()),
                       "seed_std": spread, "per_image": rows}
    out = {"rules": rules, "images": sorted({i for rows in per.values() for i in rows})}
    result.write_text(json.dumps(out, indent=1))
    print(f"{'rule':15s} {'ViT (3 seeds)':>13s} {'CNN (3 seeds)':>13s} {'lead ± s.e.':>15s} {'seed 0 lead':>15s} "
          f"{'ViT/CNN ens.':>14s} {'seed std ViT/CNN':>17s}")
    for name, r in rules.items():
        print(f"{name:15s} {r['vit_seed_mean']:13.3f} {r['cnn_seed_mean']:13.3f} {r['lead_seeds']:+8.3f} ± "
              f"{r['lead_seeds_se'] or float('nan'):.3f} {r['lead_seed0']:+8.3f} ± {r['lead_seed0_se'] or float('nan'):.3f} "
              f"{r['vit_ensemble']:6.3f}/{r['cnn_ensemble']:.3f} {r['seed_std']['vit']:8.3f}/{r['seed_std']['cnn']:.3f}")
    for name in (n for n in NONLINEAR if n in rules):  # issue 12 asks the ViT to lead the CNN by 0.1 on these
        r = rules[name]
        print(f"{name}: one ViT leads one CNN by {r['lead_seeds']:+.3f} ± {r['lead_seeds_se'] or float('nan'):.3f} "
              f"(seed means; {'at least' if r['lead_seeds'] >= 0.1 else 'below'} the issue's 0.1)")
    print(f"images ({len(out['images'])}): {', '.join(out['images'])} -> {result}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", type=Path, nargs="+", metavar="RUN", help="finished default run folder(s)")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the per-run prediction files")
    ap.add_argument("--result", type=Path, default=RESULT)
    a = ap.parse_args(argv)
    for run in a.one or []:
        one(run, a.out)
    if a.summary:
        summary(a.out, a.result)


if __name__ == "__main__":
    main()
