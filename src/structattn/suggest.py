"""`structattn suggest RUN --n K --out next.csv`: the K unmeasured positions worth measuring next.

Candidates lie on a grid every `step` px over the run's structure image; those closer than
`exclude` px to a measured point are dropped. The run's deep ensemble predicts every target
and its calibrated std at each candidate (batch by batch, `structattn.maps`), an acquisition
function scores them (`structattn.acquire`: the uncertainty, or the expected improvement
toward a goal; with ``density`` the uncertainty times each patch's information density among the
image's patches: in the simulated campaigns better than plain uncertainty on two of four
textures and worse on two), and `select_spread` picks K of them at least `min_distance` px apart.

next.csv columns: rank, row, col (pixels, as `positions`), x_m, y_m (metres from pixel (0, 0):
x = col * pixel size, y = row * pixel size; empty when the scan size is unknown), score, then
pred_<target> and std_<target> for every target. next.png beside it: the structure, the score
map, the measured points and the suggested ones, numbered.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .acquire import Goal, expected_improvement, far_from, parse_goal, patch_density, select_spread, uncertainty_score


@dataclass
class Suggestion:
    path: Path
    positions: np.ndarray  # (K, 2) row, col, best first
    scores: np.ndarray  # (K,)
    acquisition: str  # what was maximised, in words
    n_candidates: int
    seconds: float
    figure: Path | None = None


def _positive(name: str, value, *, integer: bool = False, zero: bool = False):
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok or not np.isfinite(value) or value < 0 or (value == 0 and not zero):
        want = "a whole number" if integer else "a number"
        raise ValueError(f"{name}: expected {want} {'>= 0' if zero else '> 0'}, got {value!r}")
    return value


def suggest(
    run_dir: str | os.PathLike,
    *,
    n: int,
    out: str | os.PathLike,
    goal: str | None = None,
    target: str | None = None,
    step: int | None = None,
    exclude: float | None = None,
    min_distance: float | None = None,
    batch: int = 256,
    overwrite: bool = False,
    figure: bool = True,
    density: bool = False,
) -> Suggestion:
    """Rank unmeasured positions of a run's image and write the best `n` (see module doc).

    Args:
        run_dir: a run folder with a deep ensemble (``--ensemble`` >= 2).
        n: positions to suggest.
        out: the .csv to write (atomically); next.png beside it unless ``figure=False``.
        goal: `parse_goal` text (e.g. "imprint=0", "V+=max"): expected improvement toward it;
            None: the uncertainty.
        target: with no goal, rank by this target's uncertainty alone (default: all targets).
        step: candidate grid pitch in px (default: half the measured points' spacing, >= 1).
        exclude: drop candidates closer than this to a measured point (default: a third of
            the spacing, >= 1 px).
        min_distance: suggested positions at least this far apart (default: twice the spacing).
        batch: positions predicted at a time (bounds memory).
        density: weigh the uncertainty by each candidate patch's information density
            (`structattn.acquire.patch_density`, among the measured and candidate patches), so
            outlying patches, where the ensemble disagrees most but which teach least about the
            rest, rank lower (docs/uncertainty.md). Not with a goal.
    """
    from .maps import grid_axes
    from .scale.predict import predict_points
    from .runfolder import RunFolder, atomic_write_bytes

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ValueError(f"--out: expected a .csv file path, got {str(out)!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out: {str(out)!r} exists; choose another path or pass --overwrite")
    _positive("--n", n, integer=True)
    run = RunFolder(run_dir)
    members = run.members
    names = list(members[0].target_names)
    g: Goal | None = parse_goal(goal, names) if goal is not None else None
    if target is not None and g is not None:
        raise ValueError("--target: ranks by one target's uncertainty; with --goal the goal names the target")
    if density and g is not None:
        raise ValueError("--density: weighs the uncertainty; with --goal the expected improvement ranks")
    if target is not None and target not in names:
        raise ValueError(f"--target: unknown target {target!r}; this run's targets are {', '.join(names)}")
    if len(members) < 2:
        raise ValueError(f"RUN: {run.path} has no uncertainty (trained with --ensemble 1); suggesting needs a deep "
                         "ensemble: run again with --ensemble 3 (or more)")
    cal = run.calibration
    cfg, geo = run.config["run"], run.config.get("geometry", {})
    spacing = float(geo.get("point_spacing_px") or 1.0)
    step = max(1, int(round(spacing / 2))) if step is None else _positive("--step", step, integer=True)
    exclude = max(1.0, spacing / 3) if exclude is None else _positive("--exclude", exclude, zero=True)
    min_distance = 2 * spacing if min_distance is None else _positive("--min-distance", min_distance, zero=True)
    sample = run.sample
    rows, cols = grid_axes(sample.shape, step)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    grid = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(float)
    keep = far_from(grid, sample.positions, exclude)
    cand = grid[keep]
    if len(cand) == 0:
        raise ValueError(f"RUN: every position of the {len(rows)} x {len(cols)} candidate grid (every {step} px) lies "
                         f"within {exclude:g} px of a measured point; nothing is left unmeasured (lower --exclude or "
                         "--step)")
    if n > len(cand):
        raise ValueError(f"--n: asked for {n} positions, there are only {len(cand)} unmeasured candidates "
                         f"(every {step} px, at least {exclude:g} px from a measured point)")
    mean, std = predict_points(members, cal, sample.image, cand, window=int(cfg["window"]), pad_mode=cfg["pad_mode"],
                               batch=batch)
    y = run.predictions["y_true"]  # the measured values
    if g is not None:
        k = names.index(g.target)
        best = float(np.nanmin(g.distance(y[:, k])))
        score = expected_improvement(mean[:, k], std[:, k], goal=g, best=best)
        held = f"{best:g} from it" if g.kind == "value" else f"{best if g.kind == 'min' else -best:g}"
        what = f"expected improvement toward the {g.describe()} (best measured: {held})"
    else:
        scale = np.maximum(np.nanstd(y, axis=0), 1e-12)
        score = uncertainty_score(std, scale, target=None if target is None else names.index(target))
        what = ("uncertainty of " + (target if target else "every target (RMS of std / measured spread)"))
        if density:
            from .scale import PatchSource

            m0 = members[0]
            src = PatchSource(sample.image, np.concatenate([sample.positions, cand]), window=int(cfg["window"]),
                              pad_mode=cfg["pad_mode"], mean=m0.channel_mean, std=m0.channel_std)
            score = score * patch_density(src, np.arange(len(cand)) + len(sample.positions), np.arange(len(src)),
                                          batch=batch)
            what += ", weighted by information density"
    picks = select_spread(cand, score, n=n, min_distance=min_distance)
    px = sample.pixel_size
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "row", "col", "x_m", "y_m", "score"] + [c for t in names for c in (f"pred_{t}", f"std_{t}")])
    for rank, i in enumerate(picks, start=1):
        r, c = cand[i]
        w.writerow([rank, int(r), int(c), "" if px is None else f"{c * px:.6g}", "" if px is None else f"{r * px:.6g}",
                    f"{score[i]:.6g}"] + [f"{v:.6g}" for k in range(len(names)) for v in (mean[i, k], std[i, k])])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue().encode())
    fig_path = None
    if figure:
        from .report.map_figures import suggestion_png

        score_map = np.full(len(grid), np.nan)
        score_map[np.flatnonzero(keep)] = score
        fig_path = out.with_suffix(".png")
        atomic_write_bytes(fig_path, suggestion_png(sample.image[0], sample.positions, cand[picks],
                                                    score=score_map.reshape(len(rows), len(cols)), rows=rows,
                                                    cols=cols, title=f"next {n}: {what}"))
    return Suggestion(path=out, positions=cand[picks], scores=score[picks], acquisition=what, n_candidates=len(cand),
                      seconds=time.perf_counter() - t0, figure=fig_path)
