"""Size and opening time of the report of a 2000-point run, and the explorer screenshot (issue 17).

The run: the shared PFM image PTO_Funakubo0001 with the seven rules of
`structattn.data.semisynthetic` (2025 points, seven targets), the default options except
``--epochs 3`` (the file's size and opening time do not depend on how well the model
learned), methods attention, rollout, gradattn and attnlrp scored on 64 test points. Then
the maps of every method (and the centre prior) for *all* 2025 points are written to
explanations.h5, as ``structattn explain RUN --points all`` would store them (without the
scores, which would take an hour here), so every point of the explorer has its maps: the
largest report such a run writes. The report is re-rendered, its size measured, and it is
opened ``--repeat`` times in headless Chromium (a fresh browser each time), timing
navigation start -> the explorer ready (plots drawn, first point selected). A click on a
point then gives docs/img/explorer.png.

    python bench/bench_semisynth.py --prepare          # once: the textures
    PYTHONPATH=src python bench/measure_report.py      # -> bench/results/report.json, docs/img/explorer.png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the selenium helpers the browser test uses

METHODS = ("attention", "rollout", "gradattn", "attnlrp")


def build_run(out: Path, texture: Path, epochs: int) -> float:
    from structattn.pipeline import RunConfig, run_pipeline

    t0 = time.perf_counter()
    run_pipeline(RunConfig(source=f"semisynthetic:image={texture}", epochs=epochs, methods=METHODS, points="64",
                           cnn_baseline=False, domains=False, progress=False), out, overwrite=True)
    return time.perf_counter() - t0


def explain_all_points(out: Path) -> float:
    """Maps of every method for every point, written to explanations.h5 (no scores)."""
    from structattn.data.patches import extract_patches
    from structattn.explain import make_explainer
    from structattn.runfolder import RunFolder, write_explanations

    t0 = time.perf_counter()
    rf = RunFolder(out)
    trained, s = rf.model, rf.sample
    pad = "edge" if trained.pad_mode == "exclude" else trained.pad_mode
    idx = np.arange(s.n_points)
    x = trained.standardise(extract_patches(s.image, s.positions, window=trained.window, pad_mode=pad))
    maps = {}
    for m in (*METHODS, "centre"):
        ex = make_explainer(m, trained.model)
        maps[m] = {}
        for k, t in enumerate(trained.target_names):
            if not ex.needs_target and k:
                maps[m][t] = maps[m][trained.target_names[0]]
                continue
            maps[m][t] = torch.cat([ex.attribute(x[i: i + 256], target=k if ex.needs_target else None)
                                    for i in range(0, len(x), 256)]).numpy()
    write_explanations(out / "explanations.h5", point_index=idx, maps=maps,
                       attrs={"window": trained.window, "patch": trained.model.cfg.patch, "pad_mode": trained.pad_mode})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texture", type=Path, default=ROOT / "bench" / ".textures" / "PTO_Funakubo0001.npz")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / ".runs_report" / "run2000")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="keep an existing run folder (re-render the report only)")
    ap.add_argument("--no-screenshot", action="store_true", help="measure only")
    ap.add_argument("--channel", type=int, default=1, help="structure channel shown in the screenshot")
    ap.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "img" / "explorer.png")
    ap.add_argument("--result", type=Path, default=ROOT / "bench" / "results" / "report.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from browser import click_point, console_errors, open_chromium, open_report, wait_for
    from structattn.report.html import write_report

    res = {"run": str(a.out.relative_to(ROOT)) if a.out.is_relative_to(ROOT) else str(a.out), "epochs": a.epochs}
    if a.reuse and a.result.is_file():  # keep the build times measured when the run was made
        old = json.loads(a.result.read_text())
        res.update({k: old[k] for k in ("run_seconds", "explain_all_seconds") if k in old})
    if not (a.reuse and (a.out / "model.pt").is_file()):
        res["run_seconds"] = build_run(a.out, a.texture, a.epochs)
        res["explain_all_seconds"] = explain_all_points(a.out)
    t0 = time.perf_counter()
    path = write_report(a.out)
    res["render_seconds"] = time.perf_counter() - t0
    res["bytes"] = path.stat().st_size
    res["n_points"] = int(len(np.load(a.out / "predictions.npz")["positions"]))
    html = path.read_text()
    i = html.index("id='sa-data'>")
    res["explorer_data_bytes"] = html.index("</script>", i) - i
    opens, marks = [], []
    for r in range(a.repeat):
        drv = open_chromium(width=1400, height=2000)
        try:
            opens.append(open_report(drv, path, timeout=120))
            # ms from navigation start: file read, page + plotly.js parsed, data decoded, plots drawn, ready
            t = json.loads(drv.execute_script("return document.getElementById('sa-explorer').dataset.timing"))
            t["response_end"] = drv.execute_script("return performance.getEntriesByType('navigation')[0].responseEnd")
            marks.append({k: round(v) for k, v in t.items()})
            if r == a.repeat - 1 and not a.no_screenshot:  # the screenshot: a click on the explained test point nearest the centre
                import base64

                d = drv.execute_script("return window.structattnExplorer.data")
                index = np.frombuffer(base64.b64decode(d["maps"]["index"]), "<i4")
                pos = np.frombuffer(base64.b64decode(d["positions"]), "<f4").reshape(-1, 2)
                split = np.frombuffer(base64.b64decode(d["split"]), np.int8)
                first = int(drv.execute_script("return Number(document.getElementById('sa-explorer').dataset.selected)"))
                ok = np.flatnonzero((index >= 0) & (split == 2))
                if a.channel < len(d["image"]["channels"]):
                    drv.execute_script(f"const s = document.getElementById('sa-channel'); s.value = '{a.channel}'; "
                                       "s.dispatchEvent(new Event('change'));")
                centre = np.array([d["image"]["h"], d["image"]["w"]]) / 2
                target = int(ok[np.argmin(np.abs(pos[ok] - centre).sum(1) + 1e9 * (ok == first))])
                click_point(drv, target)
                wait_for(drv, f"document.getElementById('sa-patch').dataset.point === '{target}'", timeout=20)
                el = drv.find_element("id", "sa-explorer")
                drv.execute_script("arguments[0].scrollIntoView();", el)
                time.sleep(0.5)
                a.screenshot.parent.mkdir(parents=True, exist_ok=True)
                el.screenshot(str(a.screenshot))
                res["console_errors"] = console_errors(drv)
        finally:
            drv.quit()
    res["open_seconds"] = opens
    res["open_marks_ms"] = marks
    res["load_average"] = list(__import__("os").getloadavg())
    res["machine"] = {"python": platform.python_version(), "machine": platform.machine(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    a.result.parent.mkdir(parents=True, exist_ok=True)
    a.result.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
