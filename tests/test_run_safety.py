"""A run never loses or touches a user's data, says why it stops, and can be resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from structattn.cli import main
from structattn.runfolder import MARKER, OWNER, Interrupted, leftover_stages, staged_run_folder
from structattn.train.metrics import regression_scores


def _errors(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


# ------------------------------------------------------------------ --out and --overwrite
def _tiny_bundle(path: Path, **changes) -> Path:
    from structattn.data.synthetic import make_synthetic

    s = make_synthetic(size=96, spacing=6, seed=3)
    d = dict(image=s.image, channels=np.array(s.channels), positions=s.positions, targets=s.targets,
             target_names=np.array(s.target_names), labels=s.labels, label_names=np.array(s.label_names))
    d.update(changes)
    np.savez(path, **d)
    return path


def test_overwrite_never_replaces_the_folder_holding_the_input(tmp_path, capsys):
    data = tmp_path / "mydata"
    data.mkdir()
    bundle = _tiny_bundle(data / "bundle.npz")
    (data / "notes.txt").write_text("my notes")
    rc = main(["run", str(bundle), "--out", str(data), "--overwrite", "--epochs", "1"])
    assert rc == 2
    assert "holds the input" in _errors(capsys)[0]
    assert sorted(p.name for p in data.iterdir()) == ["bundle.npz", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]  # no staging folder beside it


def test_overwrite_replaces_only_run_folders(tmp_path):
    other = tmp_path / "results"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not a structattn run folder"):
        with staged_run_folder(other, overwrite=True):
            pytest.fail("must refuse before staging")
    assert (other / "thesis.tex").read_text() == "years of work"
    # a run folder (it holds the marker) is replaced, and only once the new one is complete
    run = tmp_path / "run"
    with staged_run_folder(run) as stage:
        (stage / "a.txt").write_text("first")
    assert (run / MARKER).is_file() and not (run / OWNER).exists()
    with staged_run_folder(run, overwrite=True) as stage:
        assert (run / "a.txt").read_text() == "first"  # untouched while the new run is written
        (stage / "a.txt").write_text("second")
    assert (run / "a.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "run"]


def test_out_refuses_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("keep")
    for out in (".", str(tmp_path.parent)):
        assert main(["run", "synthetic", "--out", out, "--overwrite", "--epochs", "1"]) == 2
        assert "current folder" in _errors(capsys)[0]
    assert sorted(os.listdir(tmp_path)) == ["x.txt"]


def test_staging_removed_on_failure_and_leftovers_of_killed_runs(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with staged_run_folder(out) as stage:
            (stage / "model.pt").write_text("half")
            raise RuntimeError("crash")
    assert os.listdir(tmp_path) == []
    # a killed run left its staging folder; its owner process is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / ".run.partial-abc123"
    stale.mkdir()
    (stale / OWNER).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    said = []
    with staged_run_folder(out, say=said.append) as stage:
        (stage / "a.txt").write_text("x")
    assert not stale.exists() and any("interrupted run" in s for s in said)
    assert sorted(os.listdir(tmp_path)) == ["run"]
    # a staging folder whose writer is alive belongs to another run: refuse, touch nothing
    live = tmp_path / ".other.partial-xyz"
    live.mkdir()
    (live / OWNER).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    with pytest.raises(FileExistsError, match="another structattn run"):
        with staged_run_folder(tmp_path / "other"):
            pass
    assert live.is_dir() and [p for p, _, alive in leftover_stages(tmp_path / "other") if alive] == [live]


def test_replaced_folder_restored_after_a_kill_between_the_renames(tmp_path):
    out = tmp_path / "run"
    with staged_run_folder(out) as stage:
        (stage / "a.txt").write_text("kept")
    os.replace(out, tmp_path / ".run.old-999")  # as if killed after moving the old folder away
    said = []
    with pytest.raises(FileExistsError):  # restored first, so without --overwrite it is protected again
        with staged_run_folder(out, say=said.append):
            pass
    assert (out / "a.txt").read_text() == "kept" and any("restored" in s for s in said)


# ------------------------------------------------------------------ bad options, degenerate data
@pytest.mark.parametrize("args, word", [
    (["--patch", "0"], "--patch"),
    (["--blocks", "100"], "--blocks"),
    (["--device", "cuda"], "--device"),
    (["--stem-pool", "avg", "--stem", "0"], "--stem-pool"),
    (["--sam", "-0.1"], "--sam"),
])
def test_bad_options_stop_before_training(args, word, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    assert main(["run", "synthetic:size=64", "--out", "unused-out", *args]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and word in errors[0]
    assert not Path("unused-out").exists()


def test_synthetic_spacing_zero_is_an_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "synthetic:spacing=0", "--out", "unused-out"]) == 2
    assert "spacing" in _errors(capsys)[0]


def test_r2_of_a_constant_target_is_undefined_not_perfect():
    y = np.ones((20, 1))
    assert np.isnan(regression_scores(y, y.copy(), ("flat",))["flat"]["r2"])
    assert regression_scores(np.arange(20.0)[:, None], np.arange(20.0)[:, None], ("x",))["x"]["r2"] == 1.0


def test_names_from_data_are_text_in_terminal_and_report(tmp_path, capsys):
    """HTML and rich markup in target, channel and label names and in --out reach neither as markup."""
    from structattn.data.synthetic import make_synthetic

    s = make_synthetic(size=96, spacing=6, seed=3)
    bundle = _tiny_bundle(
        tmp_path / "b.npz",
        targets=s.targets[:, :2],
        target_names=np.array(["<img src=x onerror=alert(1)>", "[bold red]V-[blink]"]),
        channels=np.array([f"<script>alert('{c}')<" for c in s.channels]),
        label_names=np.array([f"<i>{n}" for n in s.label_names]),
    )
    out = tmp_path / "[out]"
    rc = main(["run", str(bundle), "--out", str(out), "--epochs", "2", "--window", "16", "--patch", "4",
               "--dim", "32", "--depth", "1", "--heads", "2", "--no-cnn-baseline", "--methods", "attention",
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "[bold red]V-[blink]" in err  # printed as written, not interpreted
    html = (out / "report.html").read_text()
    for tag in ("<img src=x", "<script>alert", "<i>c+", "<i>wall"):
        assert tag not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the name is there, as text
    assert "Domain" in html or "domain" in html  # the domain section, where names once leaked, was rendered


# ------------------------------------------------------------------ signals and --resume
RESUME_ARGS = ["synthetic:seed=1,size=96,spacing=6", "--window", "16", "--patch", "4", "--dim", "32",
               "--depth", "1", "--heads", "2", "--epochs", "40", "--no-cnn-baseline", "--methods", "attention",
               "--no-domains", "--quiet", "--ensemble", "1"]


def test_sigterm_fails_loudly_and_resume_gives_the_uninterrupted_result(tmp_path, capsys):
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "structattn.cli", "run", *RESUME_ARGS, "--out", str(killed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list(tmp_path.glob(".killed.partial-*/checkpoints/vit/last.ckpt"))
        if found:
            ckpt = found[0]
            break
        time.sleep(0.02)
    assert ckpt is not None, "training never wrote a checkpoint"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM  # a scheduler sees a failure
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM") and "--resume" in last and "Traceback" not in err
    stage = ckpt.parents[2]
    assert stage.is_dir() and not (stage / "checkpoints" / "vit" / "final.pt").exists()  # killed mid-training
    assert not killed.exists()

    assert main(["run", *RESUME_ARGS, "--out", str(killed), "--resume"]) == 0
    assert "resuming the interrupted run" in capsys.readouterr().err
    assert main(["run", *RESUME_ARGS, "--out", str(tmp_path / "straight")]) == 0
    a = np.load(killed / "predictions.npz")
    b = np.load(tmp_path / "straight" / "predictions.npz")
    # identical up to float32 rounding: the killed part ran in another process, whose thread
    # count may differ from this one's after other tests (alone, the arrays are bit-identical)
    np.testing.assert_allclose(a["y_pred"], b["y_pred"], rtol=1e-5, atol=1e-6)
    ha = json.loads((killed / "metrics.json").read_text())["training"]
    hb = json.loads((tmp_path / "straight" / "metrics.json").read_text())["training"]
    assert ha["best_epoch"] == hb["best_epoch"] and ha["stopped_epoch"] == hb["stopped_epoch"]
    assert [e["epoch"] for e in ha["epochs"]] == [e["epoch"] for e in hb["epochs"]]
    np.testing.assert_allclose([e["val_loss"] for e in ha["epochs"]], [e["val_loss"] for e in hb["epochs"]],
                               rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed", "straight"]  # no staging, no checkpoints left
    assert not (killed / "checkpoints").exists()


def test_interrupted_is_not_a_keyboardinterrupt():
    # Lightning turns KeyboardInterrupt into sys.exit(1) without a word; ours must pass through
    assert not issubclass(Interrupted, KeyboardInterrupt) and issubclass(Interrupted, BaseException)


@pytest.mark.parametrize("args", [
    ["synthetic:size=64,spacing=12", "--blocks", "8"],
    ["synthetic:size=64", "--buffer", "200"],
    ["synthetic:size=64", "--window", "64"],
])
def test_small_grid_errors_advise_options_that_exist(args, capsys, tmp_path, monkeypatch):
    """Errors for grids too small to split name options the command has (one once advised a
    `--buffer` that did not exist)."""
    import re

    monkeypatch.chdir(tmp_path)
    from structattn.cli import build_parser

    assert main(["run", *args, "--out", "unused-out", "--epochs", "1"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    known = {o for a in run_parser._actions for o in a.option_strings}
    for flag in re.findall(r"--[a-z][a-z-]*", errors[0]):
        assert flag in known, f"{flag} advised in {errors[0]!r} is not an option"
    assert not Path("unused-out").exists()
