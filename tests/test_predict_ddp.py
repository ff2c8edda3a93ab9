"""`structattn predict` over several processes (Lightning DDP, ddp_spawn, gloo on 2 CPU processes)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from structattn.maps import predict_dense, read_maps
from structattn.scale import Parallel

TINY = dict(source="synthetic:seed=1,size=64,spacing=6,radius=8", window=16, patch=4, dim=16, depth=1, heads=2,
            stem=0, epochs=1, patience=1, blocks=3, ensemble=2, cnn_baseline=False, methods=("attention",),
            points="1", gallery=1, domains=False, progress=False, seed=0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from structattn import pipeline
    from structattn.pipeline import RunConfig, run_pipeline

    out = tmp_path_factory.mktemp("runs") / "tiny"
    with pytest.MonkeyPatch.context() as mp:  # predict needs the ensemble and its calibration, not explanations
        mp.setattr(pipeline, "explain_stage", lambda *a, **k: None)
        run_pipeline(RunConfig(**TINY), out)
    return out


def test_two_processes_give_the_one_process_maps(tiny_run, tmp_path, one_torch_thread):
    """2 ranks, each a contiguous share of the grid, merged by rank 0 == 1 process, elementwise.

    One torch thread here, as each of the 2 workers on this 2-core machine has: the thread
    count alone moves the calibrated std by ~1e-5 (float32 noise of the members' spread, times
    the conformal scale of 15-80 on this 1-epoch run), more than the shards may.
    """
    kw = dict(step=3, batch=16, figure=False)  # 22 x 22 = 484 positions: ranks get 242 each, 16 a batch
    one = predict_dense(tiny_run, out=tmp_path / "one.h5", **kw)
    two = predict_dense(tiny_run, out=tmp_path / "two.h5", parallel=Parallel(devices=2, strategy="ddp_spawn"), **kw)
    assert two is not None and two.shape == one.shape and two.members == one.members == 2
    a, b = read_maps(one.path), read_maps(two.path)
    np.testing.assert_array_equal(b["rows"], a["rows"])
    np.testing.assert_array_equal(b["cols"], a["cols"])
    np.testing.assert_array_equal(b["structure"], a["structure"])
    assert a["attrs"]["processes"] == 1 and b["attrs"]["processes"] == 2
    for k in ("run", "image", "step", "window", "pad_mode", "members", "calibration", "channels", "target_names",
              "units"):
        assert b["attrs"][k] == a["attrs"][k], k
    worst = 0.0
    for group in ("mean", "std"):
        assert sorted(b[group]) == sorted(a[group]) == sorted(a["attrs"]["target_names"])
        for t in a[group]:
            x, y = a[group][t], b[group][t]
            assert x.shape == y.shape == one.shape
            assert np.isfinite(y).all()  # every grid position written (the fill value is NaN)
            assert np.unique(x).size > 10  # not a constant map: a misplaced shard would show
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-6)
            worst = max(worst, float(np.abs(y - x).max()))
    print(f"max |2 processes - 1 process| = {worst:.3g}")
    assert not (tmp_path / ".two.h5.shards").exists()  # shards merged and removed
    assert not list(tmp_path.glob(".two.h5.*.tmp"))


def test_merge_refuses_overlapping_or_missing_shards(tmp_path):
    """Every grid position exactly once: a shard overlapping another, or a gap, is an error."""
    from structattn.maps import GridWriter
    from structattn.scale.h5stream import ShardWriter, merge_shards

    def shard(name, start, n):
        w = ShardWriter(tmp_path / name, start=start, n=n, methods=["mean"], targets=["t"], item_shape=(), chunk=4)
        w.write(start, {"mean": {"t": np.arange(start, start + n, dtype=np.float32)}})
        w.close()
        return tmp_path / name

    with h5py.File(tmp_path / "g.h5", "w") as f:
        grid = GridWriter({("mean", "t"): f.create_dataset("mean/t", shape=(3, 5), dtype="f4", fillvalue=np.nan)},
                          n_cols=5, targets=["t"])
        merge_shards([shard("a.h5", 0, 7), shard("b.h5", 7, 8)], grid, rows=3)
        np.testing.assert_array_equal(f["mean/t"][()], np.arange(15).reshape(3, 5))  # row-major, shard seams
        with pytest.raises(RuntimeError, match="overlap"):
            merge_shards([shard("c.h5", 0, 8), shard("d.h5", 7, 8)], grid)
        with pytest.raises(RuntimeError, match="no process"):
            merge_shards([shard("e.h5", 0, 7)], grid)


def test_predict_rejects_bad_parallel_options_in_one_line(tiny_run, tmp_path, capfd):
    from structattn.cli import main

    out = tmp_path / "never.h5"
    assert main(["predict", str(tiny_run), "--step", "4", "--out", str(out), "--devices", "0"]) == 2
    got = "".join(capfd.readouterr())
    assert "--devices: expected a whole number >= 1, got 0" in got and "Traceback" not in got
    assert len([ln for ln in got.splitlines() if ln.strip()]) == 1
    assert main(["predict", str(tiny_run), "--step", "4", "--out", str(out), "--devices", "999"]) == 2
    assert "--devices: 999 CPU processes" in "".join(capfd.readouterr())
    assert main(["predict", str(tiny_run), "--step", "64", "--out", str(out), "--devices", "2"]) == 2  # 1 position
    assert "--devices: 2 processes for 1 item(s)" in "".join(capfd.readouterr())
    assert not out.exists() and not list(tmp_path.iterdir())
