"""The report says whether each target was learned (issue 12), leads with the faithful method,
and escapes every name that comes from the data.

One tiny run (module scope, its own report skipped) whose metrics.json is then edited: one
target renamed to an HTML payload and marked not learned, one plain target not learned, and
explanation scores set so that raw attention has the best curves but fails the randomisation
check. Two renders: that case, and the same folder without the new keys (an old run).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from structattn.evaluate.faithful import faithful_method
from structattn.report.summary import summary_lines

EVIL = "<img src=x onerror=alert(1)>"
NEW_KEYS = ("baselines", "best_baseline", "margin", "learned", "verdict")
TINY = dict(ensemble=1, source="synthetic:size=96,spacing=6", window=16, patch=4, dim=16, depth=1, heads=2, epochs=2,
            methods=("attention", "gradattn"), gallery=3, progress=False, seed=0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run folder, sample): a tiny trained run whose own report is not written (we render it here)."""
    from structattn.data import load_sample
    from structattn.pipeline import RunConfig, run_pipeline
    from structattn.report import html as report_html

    sample = load_sample(TINY["source"])
    out = tmp_path_factory.mktemp("verdict") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_html, "write_report", lambda run_dir, **_: Path(run_dir) / "report.html")
        run_pipeline(RunConfig(**TINY), out, sample=sample)
    return out, sample


def _rename_target(run: Path, old: str, new: str) -> None:
    """Rename a target in every file of the run folder the report reads."""
    with np.load(run / "predictions.npz") as z:
        pred = {k: z[k] for k in z.files}
    pred["target_names"] = np.array([new if str(n) == old else str(n) for n in pred["target_names"]])
    np.savez(run / "predictions.npz", **pred)
    for name in ("explanations.h5", "domains.h5"):
        if (run / name).is_file():
            with h5py.File(run / name, "a") as f:
                for g in f.values():
                    if isinstance(g, h5py.Group) and old in g:
                        g.move(old, new)
    m = json.loads((run / "metrics.json").read_text())

    def ren(d: dict) -> dict:
        return {new if k == old else k: v for k, v in d.items()}

    m["targets"] = ren(m["targets"])
    m["explanations"]["scores"] = ren(m["explanations"]["scores"])
    if "domains" in m:
        m["domains"]["enrichment"] = {meth: ren(per) for meth, per in m["domains"]["enrichment"].items()}
    (run / "metrics.json").write_text(json.dumps(m))


def _scores(faithful: str, *, decoy: str = "attention") -> dict:
    """Scores where `decoy` has the best curves but fails randomisation and `faithful` passes."""
    return {decoy: {"deletion_auc": 0.05, "insertion_auc": 0.95, "randomisation_spearman": 0.92},
            faithful: {"deletion_auc": 0.35, "insertion_auc": 0.65, "randomisation_spearman": 0.04},
            "centre": {"deletion_auc": 0.02, "insertion_auc": 0.99, "randomisation_spearman": 1.0},
            "_random": {"deletion_auc": 0.5, "insertion_auc": 0.5}}


@pytest.fixture(scope="module")
def verdict_case(tiny_run, tmp_path_factory):
    """(html, metrics): the edited run rendered once."""
    from structattn.report.html import render_report

    src, sample = tiny_run
    run = tmp_path_factory.mktemp("verdict_case") / "run"
    shutil.copytree(src, run)
    _rename_target(run, "V+", EVIL)
    m = json.loads((run / "metrics.json").read_text())
    learned = {EVIL: False, "V-": True, "imprint": False, "height": True}
    for name, t in m["targets"].items():
        best = 0.31 if not learned[name] else 0.02
        t.update(baselines={"mean": -0.01, "ridge": 0.12, "position": best, "cnn": None}, margin=0.03,
                 best_baseline="position" if best > 0.12 else "ridge", learned=learned[name],
                 verdict=(f"not learned: the ViT (R² 0.05) does no better than position ({best})" if not learned[name]
                          else "learned: the ViT (R² 0.62) beats ridge (0.12) by more than 0.03"))
    m["targets"][EVIL]["verdict"] = f"not learned: {EVIL} does no better than position"  # escaped too
    for name in m["explanations"]["scores"]:
        m["explanations"]["scores"][name].update(_scores("gradattn"))
    (run / "metrics.json").write_text(json.dumps(m))
    return render_report(run, sample=sample), m


def _section(html: str, title: str) -> str:
    start = html.index(f"<h2>{title}")
    nxt = html.find("<h2>", start + 1)
    return html[start: nxt if nxt > 0 else len(html)]


def test_warning_names_unlearned_target_before_its_explanations(verdict_case):
    html, _ = verdict_case
    warning = "<b>imprint was not learned</b>"
    # top of the report, before the first section
    assert html.index("<div class='warn'>") < html.index("<h2>")
    assert warning in html[: html.index("<h2>")]
    # in "Explanations compared": the warning sits between imprint's heading and its ranking/maps
    expl = _section(html, "Explanations compared")
    head = expl.index("<h3>imprint</h3>")
    assert head < expl.index(warning, head) < expl.index("most faithful on this run", head) < expl.index(
        'alt="maps imprint"', head)
    assert "are not evidence" in expl[head: expl.index("most faithful on this run", head)]
    # learned targets get no warning
    assert "<b>V- was not learned</b>" not in html and "<b>height was not learned</b>" not in html
    # accuracy table marks the row; the domain section warns above its table and marks the rows
    acc = _section(html, "Accuracy on held-out spatial blocks")
    assert re.search(r"<tr class='unlearned'><td>imprint</td>", acc)
    assert "<th>position</th>" in acc and "<th>CNN</th>" in acc and "<th>verdict</th>" in acc
    dom = _section(html, "Domain patterns")
    assert dom.index(warning) < dom.index("<table>")
    assert re.search(r"<tr class='unlearned'><td>\w+</td><td>imprint</td>", dom)
    assert not re.search(r"<tr class='unlearned'><td>\w+</td><td>V-</td>", dom)


def test_data_names_never_reach_the_html_unescaped(verdict_case):
    html, _ = verdict_case
    assert EVIL not in html
    assert "<img src=x" not in html and "onerror=alert(1)>" not in html.replace("&lt;", "")
    assert "&lt;img src=x onerror=alert(1)&gt; was not learned" in html  # named, escaped, in the warning


def test_explanations_lead_with_the_faithful_method(verdict_case):
    html, m = verdict_case
    assert faithful_method(m["explanations"]["scores"]["V-"]) == "gradattn"
    expl = _section(html, "Explanations compared")
    block = expl[expl.index("<h3>V-</h3>"):expl.index("<h3>", expl.index("<h3>V-</h3>") + 1)]
    assert "most faithful on this run: <b>gradattn</b>" in block
    # ranked table: gradattn first although attention has the better curves (it fails randomisation)
    assert block.index("<td>1</td><td>gradattn</td>") < block.index("<td>2</td><td>attention</td>")


def test_gallery_shows_the_faithful_method_and_says_why(verdict_case):
    html, _ = verdict_case
    gal = _section(html, "Attention on test points")
    # first learned target is V- (the renamed V+ was not learned); attention fails randomisation
    assert "<h3>gradattn on V-</h3>" in gal
    assert "most faithful method on this run for V-" in gal and "passes the randomisation check" in gal
    assert "&lt;img src=x onerror=alert(1)&gt; not learned, so the first learned target is shown" in gal
    assert 'alt="gradattn gallery"' in gal


def test_summary_lines_for_the_same_metrics(verdict_case):
    _, m = verdict_case
    lines = summary_lines(m)
    assert lines[2].startswith("imprint: ViT R² ") and "NOT LEARNED (not learned: the ViT" in lines[2]
    assert "position 0.31" in lines[2] and "cnn n/a" in lines[2]
    assert "| learned (learned: the ViT" in lines[1]
    assert "most faithful method on this run: gradattn" in lines[5]  # V-'s explanation line
    assert lines[6].endswith("(target not learned: its explanations are not evidence)")  # imprint


def test_old_run_without_new_keys_still_renders(tiny_run, tmp_path_factory):
    from structattn.report.html import render_report

    src, sample = tiny_run
    run = tmp_path_factory.mktemp("old_run") / "run"
    shutil.copytree(src, run)
    m = json.loads((run / "metrics.json").read_text())
    for t in m["targets"].values():
        for k in NEW_KEYS:
            t.pop(k, None)
    (run / "metrics.json").write_text(json.dumps(m))
    html = render_report(run, sample=sample)
    assert "class='warn'" not in html and "was not learned" not in html
    assert "<th>test R²</th>" in _section(html, "Accuracy on held-out spatial blocks")
    expl = _section(html, "Explanations compared")
    assert "most faithful on this run" in expl or "No method is faithful on this run" in expl
    assert all(line.endswith("| no baselines in this run") for line in summary_lines(m)[:4])


def test_summary_lines_plain_text_and_partial_metrics():
    m = {"targets": {"V+": {"r2": 0.62, "mae": 0.1, "n": 9, "baselines": {"mean": -0.01, "ridge": 0.3,
                                                                         "position": None, "cnn": 0.41},
                            "margin": 0.03, "learned": True, "verdict": "learned: beats cnn (0.41)"},
                     "h": {"r2": 0.05, "learned": False}}}
    lines = summary_lines(m)
    assert lines == ["V+: ViT R² 0.62 | mean -0.01, ridge 0.3, position n/a, cnn 0.41 "
                     "| learned (learned: beats cnn (0.41))",
                     "h: ViT R² 0.05 | no baselines in this run | NOT LEARNED"]  # no scores: no method lines
    assert not any("[" in line and "]" in line for line in lines)  # no rich markup
    m["explanations"] = {"scores": {"h": {"attention": {"deletion_auc": 0.1, "insertion_auc": 0.9,
                                                        "randomisation_spearman": 0.97}}}}
    assert summary_lines(m)[2].startswith("h: no explanation method is faithful on this run")
    with pytest.raises(TypeError, match="metrics"):
        summary_lines({"explanations": {}})


def test_r2_bars_and_table_check_their_arguments():
    import matplotlib

    matplotlib.use("Agg")
    from structattn.report.figures import r2_bars
    from structattn.report.base import table_html

    ax = r2_bars(np.array([[0.5, 0.0, np.nan], [-2.0, 0.1, 0.3]]), targets=["a", "b"], models=["ViT", "mean", "cnn"])
    assert len(ax.patches) == 6 and ax.get_ylim()[0] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="r2"):
        r2_bars(np.zeros((2, 2)), targets=["a"], models=["ViT", "mean"])
    with pytest.raises(ValueError, match="row_classes"):
        table_html(["x"], [[1], [2]], row_classes=["a"])
    assert "<tr class='unlearned'><td>&lt;b&gt;</td><td>n/a</td></tr>" in table_html(
        ["x", "y"], [["<b>", None]], row_classes=["unlearned"])


def test_training_section_text_and_curves_follow_the_history():
    """The sentences name the epochs trained, the kept epoch and its criterion, and only the targets
    still left out at the end; the per-target curve is solid exactly for the epochs that trained
    that target (an epoch runs with the previous epoch's frozen flags)."""
    import matplotlib.pyplot as plt

    from structattn.report.figures import training_curves
    from structattn.train.trainer import describe_training, frozen_from

    epochs = [{"epoch": i, "train_loss": 1.0 / (i + 1), "val_loss": 0.5, "val_mse": [0.3 - 0.01 * i, 0.9 + 0.01 * i],
               "frozen": [False, i >= 1]} for i in range(4)]
    hist = {"epochs": epochs, "best_epoch": 3, "criterion": "log_mse", "target_patience": 1,
            "frozen_from": frozen_from(epochs)}
    assert hist["frozen_from"] == [None, 1]
    lines = describe_training(hist, ["amp", "<b>"])
    assert lines[0].startswith("4 epochs trained; the weights kept are epoch 3's") and "(log_mse)" in lines[0]
    assert lines[1].endswith("improved for 1 epoch (--target-patience): <b> (after epoch 1).") and "amp" not in lines[1]
    assert describe_training({"epochs": []}, ["amp"]) == []
    assert describe_training({**hist, "seconds": 12.4}, ["amp", "<b>"])[0].startswith("4 epochs trained in 12 s;")

    axes = training_curves(epochs, ["amp", "<b>"], best_epoch=3)
    curves = [ln for ln in axes[1].get_lines() if ln.get_linestyle() != "--" and len(ln.get_xdata()) == 4]
    solid = [np.asarray(ln.get_ydata(), float) for ln in curves if ln.get_linestyle() == "-"]
    dotted = [ln for ln in curves if ln.get_linestyle() == ":"]
    assert len(solid) == 2 and len(dotted) == 1  # only the frozen target has a dotted stretch
    np.testing.assert_array_equal(np.isnan(solid[0]), [False] * 4)
    np.testing.assert_array_equal(np.isnan(solid[1]), [False, False, True, True])  # frozen after epoch 1
    plt.close("all")


def test_verdict_on_the_ensemble_judges_its_mean_against_as_many_cnns(tiny_run, tmp_path):
    """--verdict ensemble: a CNN baseline that is the mean of as many CNNs, and a verdict on the ensemble
    mean's R², as the summary line says; the default judges member 0 (the tiny run)."""
    from structattn.pipeline import RunConfig, run_pipeline
    from structattn.report.summary import _num, accuracy_line
    from structattn.train.baselines import learned_verdict

    def r2(y, p):
        return 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()

    opts = dict(TINY, ensemble=2, methods=("attention",), points="4", domains=False, epochs=3)
    with pytest.raises(ValueError, match="--verdict ensemble: .*needs --ensemble 2 or more, got --ensemble 1"):
        RunConfig(**dict(opts, ensemble=1), verdict="ensemble")
    ens = run_pipeline(RunConfig(**opts, verdict="ensemble"), tmp_path / "run", sample=tiny_run[1]).metrics
    info = ens["baselines"]["info"]["cnn"]
    assert info["members"] == 2
    with np.load(tmp_path / "run" / "predictions.npz") as z:
        test = z["split"] == 2  # predictions are stored in float32: R² from them within 1e-5
        for k, name in enumerate(str(n) for n in z["target_names"]):
            e = ens["targets"][name]
            # the CNN column is the mean of two CNNs, not member 0's
            assert e["baselines"]["cnn"] == pytest.approx(r2(z["y_true"][test, k], z["y_pred_cnn"][test, k]), abs=1e-5)
            assert e["baselines"]["cnn"] != pytest.approx(info["r2_member0"][k], abs=1e-3)
            # the verdict judges the ensemble mean's R², not member 0's
            assert e["r2_judged"] == pytest.approx(r2(z["y_true"][test, k], z["y_mean"][test, k]), abs=1e-5)
            assert e["r2_judged"] == pytest.approx(e["r2_ensemble"])
            held = e.get("predicted_by") == "ridge"  # members hold the same ridge: their mean is ridge itself
            assert (e["r2_judged"] == pytest.approx(e["r2"])) == held
            assert e["judged"].startswith("ensemble mean of 2 ViTs")
            learned, _, _ = learned_verdict(name, e["r2_judged"], e["baselines"], margin=e["margin"])
            assert e["learned"] == learned
            assert ("the mean of the 2 ViTs" in e["verdict"]) == (e.get("predicted_by") != "ridge")
            assert accuracy_line(name, e).startswith(f"{name}: ViT ensemble R² {_num(e['r2_judged'])} |")
    prim = json.loads((tiny_run[0] / "metrics.json").read_text())["targets"]  # --ensemble 1, the default verdict
    for name, p in prim.items():
        assert p["judged"].startswith("member 0") and p["r2_judged"] == p["r2"]
        assert accuracy_line(name, p).startswith(f"{name}: ViT R² {_num(p['r2'])} |")
