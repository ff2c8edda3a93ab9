"""Issue 14: several samples in one run: channels matched by name, split by whole sample or by
blocks within each sample, metrics per sample."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.cli import main
from structattn.data import load_sample, save_bundle
from structattn.data.multi import combine_samples
from structattn.data.patches import extract_patches
from structattn.data.sample import Sample
from structattn.runfolder import RunFolder
from structattn.train.split import sample_split

SOURCES = ["synthetic:seed=1,size=80,spacing=6", "synthetic:seed=2,size=80,spacing=6",
           "synthetic:seed=3,size=96,spacing=6"]
TINY = ["--ensemble", "1", "--epochs", "2", "--dim", "16", "--depth", "1", "--heads", "2", "--window", "16", "--patch", "4", "--stem", "0",
        "--methods", "attention", "--points", "6", "--no-cnn-baseline", "--no-domains", "--quiet"]


@pytest.fixture(scope="module")
def three():
    return [load_sample(s) for s in SOURCES]


def test_mosaic_patches_are_each_samples_own_patches(three):
    a, b, _ = three
    # b's channels in another order: matched by name, not by position
    b_swapped = Sample(image=b.image[::-1], channels=b.channels[::-1], positions=b.positions, loops=b.loops,
                       voltage=b.voltage, targets=b.targets, target_names=b.target_names)
    m = combine_samples([a, b_swapped], names=["a", "b"], margin=48)
    sop = np.asarray(m.meta["samples"]["sample_of_point"])
    assert m.channels == a.channels and m.n_points == a.n_points + b.n_points
    np.testing.assert_array_equal(m.targets, np.concatenate([a.targets, b.targets]))
    for k, s in enumerate((a, b)):
        own = extract_patches(s.image, s.positions, window=24, pad_mode="reflect")
        z = (own - s.image.mean(axis=(1, 2))[None, :, None, None]) / s.image.std(axis=(1, 2))[None, :, None, None]
        got = extract_patches(m.image, m.positions[sop == k], window=24, pad_mode="reflect")
        np.testing.assert_allclose(got, z, atol=1e-4)  # standardised per sample, reflect-padded as alone
    with pytest.raises(ValueError, match="channels: sample 'b' has no channel 'phase'"):
        combine_samples([a, Sample(image=b.image[:1], channels=("amplitude",), positions=b.positions,
                                   targets=b.targets, target_names=b.target_names)], names=["a", "b"])
    with pytest.raises(ValueError, match="target_names: sample 'b'"):
        combine_samples([a, Sample(image=b.image, channels=b.channels, positions=b.positions,
                                   targets=b.targets[:, :1], target_names=("x",))], names=["a", "b"])


def test_sample_split_modes(three):
    pos = np.concatenate([s.positions for s in three])
    sop = np.concatenate([np.full(s.n_points, k) for k, s in enumerate(three)])
    kw = dict(names=["a", "b", "c"], shapes=[s.shape for s in three], origins=np.zeros((3, 2)), blocks=3, buffer=4)
    sp = sample_split(pos, sop, mode="sample", **kw)
    for part in (sp.train, sp.val, sp.test):  # whole samples: each part is exactly the points of its samples
        held = np.unique(sop[part])
        assert len(held) == 1 and np.array_equal(np.sort(part), np.flatnonzero(np.isin(sop, held)))
    assert sorted(sp.parts.values()) == ["test", "train", "validation"]
    sp = sample_split(pos, sop, mode="blocks", **kw)
    for k in range(3):  # blocks within each sample: every sample has train, validation and test points
        assert all((sop[part] == k).any() for part in (sp.train, sp.val, sp.test))
    assert not set(sp.train) & set(sp.test) and sp.buffer == 4 and len(sp.dropped) > 0
    # two samples: one whole sample is the test set, validation comes from blocks of the other
    two = sop < 2
    sp = sample_split(pos[two], sop[two], mode="sample", **dict(kw, names=["a", "b"], shapes=kw["shapes"][:2]))
    (test_sample,) = np.unique(sop[two][sp.test])
    assert np.array_equal(np.sort(sp.test), np.flatnonzero(sop[two] == test_sample))
    assert set(sop[two][sp.val]) == set(sop[two][sp.train]) == {1 - test_sample}


def test_multi_sample_run_holds_out_whole_samples_and_reports_each(tmp_path, three, capsys):
    paths = []
    for k, s in enumerate(three):
        paths.append(tmp_path / f"film{k}.npz")
        save_bundle(s, paths[-1])
    out = tmp_path / "run"
    rc = main(["run", *map(str, paths), "--split", "sample", "--out", str(out), "--blocks", "3", *TINY])
    assert rc == 0, capsys.readouterr().err
    run = RunFolder(out)
    m, p = run.metrics, run.predictions
    names = [str(n) for n in p["sample_names"]]
    assert names == ["film0", "film1", "film2"] and m["samples"]["mode"] == "sample"
    test_name = next(n for n, part in m["samples"]["parts"].items() if part == "test")
    k = names.index(test_name)
    # the held-out sample is entirely test, and no test point comes from another sample
    assert (p["split"][p["sample"] == k] == 2).all() and (p["sample"][p["split"] == 2] == k).all()
    for t in ("V+", "V-", "imprint", "height"):
        per = m["targets"][t]["per_sample"]
        assert list(per) == [test_name] and per[test_name] == pytest.approx(m["targets"][t]["r2"], abs=1e-9)
    assert m["samples"]["n_test"][test_name] == int((p["split"] == 2).sum())
    assert "whole samples held out" in m["split"]["description"]
    html = (out / "report.html").read_text()
    assert "3 samples laid out side by side (film0, film1, film2)" in html
    assert run.sample.n_points == sum(s.n_points for s in three)  # rebuilt from the bundles, checksum equal


def test_multi_sample_errors(tmp_path, three, capsys):
    a, b, _ = three
    save_bundle(a, tmp_path / "a.npz")
    save_bundle(Sample(image=b.image[:2], channels=b.channels[:2], positions=b.positions, targets=b.targets,
                       target_names=b.target_names), tmp_path / "b.npz")
    out = str(tmp_path / "r")
    assert main(["run", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--out", out, *TINY]) == 2
    err = capsys.readouterr().err
    assert "channels: sample 'b' has no channel 'height'" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "a.npz"), "--split", "sample", "--out", out, *TINY]) == 2
    assert "--split: 'sample' holds out whole samples and needs several" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
