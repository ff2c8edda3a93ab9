import json

import h5py
import numpy as np
import pytest
import torch

from structattn.cli import main
from structattn.data import load_sample, save_bundle
from structattn.data.sample import Sample
from structattn.pipeline import RunConfig, run_pipeline
from structattn.runfolder import REQUIRED_FILES, RunFolder

from conftest import SMALL_RUN, SMALL_SOURCE


def test_small_run_learns_and_attends_to_the_causal_region(small_run):
    m = small_run.metrics
    for name in ("V+", "V-", "imprint", "height"):
        # the small config (2 layers, 40 epochs, 300 training points) is weaker than the demo (R² >= 0.8)
        assert m["targets"][name]["r2"] > 0.5, (name, m["targets"][name])
    for name in ("V+", "height"):
        gt = m["explanations"]["scores"][name]["attention"]
        # attention concentrates on the rule's causal region beyond its area share (chance: 1.0;
        # 1.46 measured with the 0.2 trainer's warm-up, 1.5+ before it)
        assert gt["mass_ratio"] > 1.3 and gt["auroc"] > 0.7, gt


def test_attention_family_beats_the_centre_prior_on_every_target(small_run):
    # Issue 4's acceptance in miniature: the rule reads a 12 px disk, so "the centre matters"
    # is not enough; a map must find the rule's domain classes. Measured on this run:
    # attention/rollout/gradattn 0.75-0.89 vs the prior's 0.60-0.64 (margin >= 0.09).
    scores = small_run.metrics["explanations"]["scores"]
    for name in ("V+", "V-", "imprint", "height"):
        prior = scores[name]["centre"]["auroc"]
        for method in ("attention", "rollout", "gradattn"):
            assert scores[name][method]["auroc"] > prior + 0.05, (name, method, scores[name][method]["auroc"], prior)


def test_run_folder_contract(small_run):
    run = RunFolder(small_run.out)
    for f in REQUIRED_FILES + ("report.html",):
        assert (small_run.out / f).is_file()
    idx, maps = run.explanations()
    p = run.predictions
    np.testing.assert_array_equal(np.sort(idx), np.flatnonzero(p["split"] == 2))
    assert set(maps["attention"]) == {"V+", "V-", "imprint", "height"}
    assert maps["attention"]["V+"].shape == (len(idx), 24, 24)
    cfg = run.config
    assert cfg["data"]["source"] == SMALL_SOURCE and len(cfg["data"]["checksum"]) == 64
    assert cfg["versions"]["torch"].startswith("2.13.0")
    assert "spatial blocks" in run.metrics["split"]["description"]
    html = (small_run.out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 4 and "Attention on test points" in html
    # the saved model reproduces the stored test predictions
    s = run.sample
    from structattn.data import extract_patches

    patches = extract_patches(s.image, s.positions[idx], window=24)
    np.testing.assert_allclose(run.model.predict(patches), p["y_pred"][idx], rtol=1e-4, atol=1e-4)


def test_same_seed_same_result(tmp_path):
    cfg = dict(SMALL_RUN, epochs=2, dim=16, depth=1, heads=2)
    a = run_pipeline(RunConfig(**cfg), tmp_path / "a")
    b = run_pipeline(RunConfig(**cfg), tmp_path / "b")
    pa, pb = RunFolder(a.out).predictions, RunFolder(b.out).predictions
    np.testing.assert_array_equal(pa["y_pred"], pb["y_pred"])
    np.testing.assert_array_equal(pa["y_std"], pb["y_std"])  # the deep ensemble too (default --ensemble 3)
    # baselines (the CNN's training included) and every explanation score, timings aside
    assert [t["baselines"] for t in a.metrics["targets"].values()] == [t["baselines"] for t in b.metrics["targets"].values()]
    sa, sb = a.metrics["explanations"]["scores"], b.metrics["explanations"]["scores"]
    for tname in sa:
        for m in sa[tname]:
            for key in ("auroc", "deletion_auc", "insertion_auc", "randomisation_spearman", "agreement_spearman"):
                assert sa[tname][m].get(key) == sb[tname][m].get(key), (tname, m, key)
    # another seed: only the predictions are compared, so this run skips explanations beyond attention
    c = run_pipeline(RunConfig(**dict(cfg, seed=1, methods=("attention",), domains=False)), tmp_path / "c")
    assert not np.array_equal(RunFolder(c.out).predictions["y_pred"], pa["y_pred"])


def _quick(tmp_path, bundle, name, extra=()):
    return main(["run", str(bundle), "--out", str(tmp_path / name), "--epochs", "2", "--dim", "16", "--depth", "1",
                 "--heads", "2", "--window", "16", "--blocks", "3", "--quiet", "--ensemble", "1",
                 # these tests are about targets and bundles: no wavelet features (they tripled the explain stage's time)
                 "--wavelets", "0", "--ridge-wavelets", "0", *extra])


def test_bundle_with_targets_and_no_loops(tmp_path, small_sample):
    s = small_sample
    only = Sample(image=s.image, channels=s.channels, positions=s.positions, targets=s.targets[:, :2],
                  target_names=s.target_names[:2])
    save_bundle(only, tmp_path / "t.npz")
    assert _quick(tmp_path, tmp_path / "t.npz", "r") == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(m["targets"]) == {"V+", "V-"}


def test_dropout_and_stopping_reach_the_training_and_a_bad_value_is_named(tmp_path, small_sample, capsys):
    save_bundle(small_sample, tmp_path / "full.npz")
    assert _quick(tmp_path, tmp_path / "full.npz", "bad", ["--dropout", "1.5"]) == 2
    assert "--dropout: expected a number in [0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert _quick(tmp_path, tmp_path / "full.npz", "r", ["--targets", "V+", "--dropout", "0", "--stopping", "targets"]) == 0
    conf = json.loads((tmp_path / "r" / "config.json").read_text())
    assert conf["run"]["dropout"] == 0.0 and conf["model"]["dropout"] == 0.0
    assert conf["run"]["stopping"] == conf["train"]["stopping"] == "targets"
    from structattn.train.trainer import TrainedModel

    model = TrainedModel.load(tmp_path / "r" / "model.pt").model
    assert model.cfg.dropout == 0.0 and all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_bundle_with_loops_and_given_targets_choose_targets(tmp_path, small_sample):
    save_bundle(small_sample, tmp_path / "full.npz")
    assert _quick(tmp_path, tmp_path / "full.npz", "r", ["--targets", "height,V+"]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert list(m["targets"]) == ["height", "V+"]
    assert RunFolder(tmp_path / "r").config["data"]["file_sha256"] is not None


@pytest.mark.parametrize(
    "arrays, match",
    [
        (dict(image=np.zeros((20, 20)), targets=np.zeros((3, 1))), "missing required key"),
        (dict(image=np.zeros((20, 20)), positions=[[1, 1], [30, 2], [5, 5]], targets=np.zeros((3, 1))), "outside"),
        (dict(image=np.full((20, 20), np.nan), positions=[[1, 1], [3, 2], [5, 5]], targets=np.zeros((3, 1))), "non-finite"),
        (dict(image=np.zeros((20, 20)), positions=[[1, 1], [3, 2]], targets=np.zeros((3, 1))), "one row per point"),
    ],
)
def test_bad_bundles_fail_with_one_line_and_leave_no_run_folder(tmp_path, capsys, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    assert _quick(tmp_path, tmp_path / "bad.npz", "r") == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.partial")]


def test_unreadable_file_and_unknown_target(tmp_path, capsys, small_sample):
    (tmp_path / "x.npz").write_bytes(b"\x00garbage")
    assert _quick(tmp_path, tmp_path / "x.npz", "r") == 2
    assert "not a readable .npz" in capsys.readouterr().err
    save_bundle(small_sample, tmp_path / "ok.npz")
    assert _quick(tmp_path, tmp_path / "ok.npz", "r", ["--targets", "nope"]) == 2
    assert "--targets: 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_crash_mid_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    import structattn.report.html as report

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "write_report", boom)
    with pytest.raises(RuntimeError):
        run_pipeline(RunConfig(**dict(SMALL_RUN, epochs=1, dim=16, depth=1, heads=2)), tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_clobbered(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("precious")
    assert _quick(tmp_path, SMALL_SOURCE, "r") == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "r" / "keep.txt").read_text() == "precious"


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for opt in ("--targets", "--window", "--seed", "--epochs", "--out", "--pad-mode", "--methods", "--points"):
        assert opt in out
