"""Issue 16: patches cut on demand, streamed explanations.h5, DDP over 2 CPU processes, bf16 check."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from structattn.data.patches import extract_patches
from structattn.nets.vit import ViTConfig, ViTRegressor
from structattn.scale import ExplanationsWriter, Parallel, PatchSource, check_parallel, explain_points, trainer_kwargs
from structattn.scale.explain import shard_range

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FAMILY = ["attention", "rollout", "gradattn"]


def _tiny(seed=0, *, channels=2, window=16, outputs=2):
    torch.manual_seed(seed)
    return ViTRegressor(ViTConfig(in_channels=channels, window=window, patch=4, dim=32, depth=2, heads=2,
                                  stem=0, n_outputs=outputs)).eval()


def _image(seed=0, c=2, size=64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(c, size, size)).astype(np.float32)


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_patch_source_cuts_the_same_patches_as_extract_patches(mode, tmp_path):
    img = _image()
    rng = np.random.default_rng(1)
    pos = np.concatenate([rng.uniform(0, 63, (40, 2)), [[0, 0], [63, 63], [0, 63], [2.6, 61.4]]])
    mean, std = np.array([0.5, -1.0], np.float32), np.array([2.0, 0.5], np.float32)
    want = (extract_patches(img, pos, window=16, pad_mode=mode) - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_array_equal(PatchSource(img, pos, window=16, pad_mode=mode, mean=mean, std=std)
                                  .take(np.arange(len(pos))), want.astype(np.float32))
    # from a memory-mapped image too (only the crops are read)
    mm = np.lib.format.open_memmap(tmp_path / "img.npy", mode="w+", dtype=np.float32, shape=img.shape)
    mm[:] = img
    mm.flush()
    ro = np.load(tmp_path / "img.npy", mmap_mode="r")
    np.testing.assert_array_equal(PatchSource(ro, pos, window=16, pad_mode=mode, mean=mean, std=std)
                                  .take(np.arange(len(pos))), want.astype(np.float32))


def test_patch_source_rejects_bad_input():
    with pytest.raises(ValueError, match="image"):
        PatchSource(np.zeros((8, 8)), np.zeros((1, 2)), window=8)
    with pytest.raises(ValueError, match="positions"):
        PatchSource(np.zeros((1, 8, 8)), np.zeros((3,)), window=8)
    with pytest.raises(ValueError, match="pad_mode"):
        PatchSource(np.zeros((1, 8, 8)), np.zeros((1, 2)), window=8, pad_mode="wrap")


def test_writer_is_chunked_compressed_atomic_and_keeps_other_methods(tmp_path):
    p = tmp_path / "explanations.h5"
    idx = np.arange(10, 20)
    with ExplanationsWriter(p, point_index=idx, methods=["shap"], targets=["V+"], window=8, chunk=4) as w:
        w.write(0, {"shap": {"V+": np.full((10, 8, 8), 2.0)}})
    with pytest.raises(RuntimeError):
        with ExplanationsWriter(p, point_index=idx, methods=["attention"], targets=["V+"], window=8, chunk=4) as w:
            w.write(0, {"attention": {"V+": np.ones((4, 8, 8))}})
            raise RuntimeError("killed mid-way")
    with h5py.File(p) as f:  # the failed write left the earlier file as it was, and no temp file
        assert set(f) == {"point_index", "shap"}
    assert [q.name for q in tmp_path.iterdir()] == ["explanations.h5"]
    with ExplanationsWriter(p, point_index=idx, methods=["attention"], targets=["V+"], window=8, chunk=4) as w:
        for start in range(0, 10, 4):
            w.write(start, {"attention": {"V+": np.full((min(4, 10 - start), 8, 8), start, float)}})
    with h5py.File(p) as f:
        assert f["attention/V+"].chunks == (4, 8, 8) and f["attention/V+"].compression == "gzip"
        np.testing.assert_array_equal(f["attention/V+"][:, 0, 0], [0, 0, 0, 0, 4, 4, 4, 4, 8, 8])
        np.testing.assert_array_equal(f["shap/V+"][()], 2.0)  # kept
        np.testing.assert_array_equal(f["point_index"][()], idx)
    with pytest.raises(ValueError, match="rows"):
        with ExplanationsWriter(p, point_index=idx, methods=["a"], targets=["t"], window=8) as w:
            w.write(8, {"a": {"t": np.ones((4, 8, 8))}})


def test_shard_ranges_cover_every_point_once():
    for n in (1, 7, 100):
        for world in (1, 2, 3, 8):
            got = np.concatenate([np.arange(*shard_range(n, r, world)) for r in range(world)])
            np.testing.assert_array_equal(got, np.arange(n))


def test_explaining_3000_points_holds_one_batch_not_all_patches(tmp_path):
    """Peak traced memory depends on the batch: far below the (N, C, w, w) patch array."""
    n, window = 3000, 32
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 256, 256)).astype(np.float32)
    pos = rng.uniform(0, 255, (n, 2))
    model = _tiny(window=window)
    src = PatchSource(img, pos, window=window)
    out = tmp_path / "explanations.h5"
    all_patches = n * 2 * window * window * 4  # bytes of the array the old code cut
    all_maps = len(FAMILY) * 2 * n * window * window * 4
    explain_points(model, src, out, methods=FAMILY, target_names=["a", "b"], batch=16)  # warm-up: imports
    tracemalloc.start()
    explain_points(model, src, out, methods=FAMILY, target_names=["a", "b"], batch=64)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < all_patches / 4, (peak, all_patches)
    assert peak < all_maps / 10, (peak, all_maps)
    with h5py.File(out) as f:
        ds = f["gradattn/b"]
        assert ds.shape == (n, window, window) and ds.chunks == (64, window, window) and ds.compression == "gzip"
        assert not np.isnan(ds[-5:]).any()
        # the streamed maps equal the maps of the same points explained in one call
        from structattn.explain import GradAttnExplainer

        sel = np.array([0, 1, 1500, 2999])
        want = GradAttnExplainer(model).attribute(torch.as_tensor(src.take(sel)), target=1).numpy()
        np.testing.assert_allclose(ds[sel], want, rtol=1e-4, atol=1e-6)


def test_two_ddp_processes_give_the_one_process_explanations(tmp_path):
    """Lightning DDP (ddp_spawn, gloo, 2 CPU processes): shards merged == 1 process."""
    img = _image(size=48)
    pos = np.random.default_rng(2).uniform(0, 47, (45, 2))  # odd: ranks get 22 and 23 points
    model = _tiny(3)
    src = PatchSource(img, pos, window=16)
    index = np.arange(3, 45)  # a subset, in file order
    kw = dict(methods=FAMILY, target_names=["a", "b"], index=index, batch=8)
    one = explain_points(model, src, tmp_path / "one.h5", **kw)
    two = explain_points(model, src, tmp_path / "two.h5", parallel=Parallel(devices=2, strategy="ddp_spawn"), **kw)
    with h5py.File(one) as f1, h5py.File(two) as f2:
        np.testing.assert_array_equal(f1["point_index"][()], index)
        np.testing.assert_array_equal(f2["point_index"][()], index)
        for m in FAMILY:
            for t in ("a", "b"):
                a, b = f1[m][t][()], f2[m][t][()]
                assert not np.isnan(b).any()
                assert np.abs(a).max() > 0
                np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)  # stated tolerance (measured ~1e-8)
    assert not (tmp_path / ".two.h5.shards").exists()  # shards merged and removed


def test_fit_over_two_ddp_processes_returns_the_best_epoch(tmp_path):
    from structattn.train.trainer import TrainConfig, fit_vit

    img = _image(size=64, c=1)
    pos = np.random.default_rng(0).uniform(0, 63, (160, 2))
    src = PatchSource(img, pos, window=16)
    x = src.take(np.arange(160))
    y = (x[:, 0, 6:10, 6:10].mean((1, 2)) * 4)[:, None]
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=2, heads=2, stem=0, n_outputs=1)
    model, hist = fit_vit(src, y, train_index=np.arange(120), val_index=np.arange(120, 160), vit=cfg,
                          train=TrainConfig(epochs=3, warmup=1, progress=False, devices=2, strategy="ddp_spawn"))
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1, 2]  # rank 0's history came back
    best = min(hist["epochs"], key=lambda e: e["val_loss"])
    assert hist["best_epoch"] == best["epoch"]
    with torch.no_grad():  # the returned weights are the best epoch's: their val loss is the recorded one
        val = float(torch.nn.functional.mse_loss(model(torch.as_tensor(x[120:])), torch.as_tensor(y[120:])))
    assert val == pytest.approx(hist["best_val_loss"], rel=1e-4)


def test_bf16_autocast_attention_stays_within_the_stated_tolerance():
    from structattn.scale.precision import BF16_TOLERANCE, bf16_attention_check
    from structattn.train.trainer import TrainConfig, fit_vit

    img = _image(size=80, c=1)
    pos = np.random.default_rng(0).uniform(0, 79, (300, 2))
    x = PatchSource(img, pos, window=16).take(np.arange(300))
    y = (x[:, 0, 6:10, 2:6].mean((1, 2)) * 4)[:, None]
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=2, heads=2, stem=0, n_outputs=1)
    model, _ = fit_vit(x, y, train_index=np.arange(250), val_index=np.arange(250, 300), vit=cfg,
                       train=TrainConfig(epochs=15, progress=False))
    r = bf16_attention_check(model, torch.as_tensor(x[250:]))
    assert r["ok"], r
    assert r["tolerance"] == BF16_TOLERANCE
    for m in FAMILY:
        assert 0 < r[m]["max_rel_err"] <= BF16_TOLERANCE["max_rel_err"]  # > 0: bf16 really was used


def test_parallel_options_are_validated_with_one_line_errors(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match="--devices: 999 CPU processes"):
        check_parallel(devices=999)
    with pytest.raises(ValueError, match="--devices: expected"):
        check_parallel(devices=0)
    with pytest.raises(ValueError, match="--strategy"):
        check_parallel(strategy="fsdp2")
    with pytest.raises(ValueError, match="--precision"):
        check_parallel(precision="16")
    with pytest.raises(ValueError, match="--num-nodes: 2 nodes need"):
        check_parallel(num_nodes=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--accelerator: gpu"):
            check_parallel(accelerator="gpu", devices=4)
    kw = trainer_kwargs(check_parallel(devices=2))
    assert kw["devices"] == 2 and kw["strategy"]._start_method == "spawn"  # plain process: ddp_spawn
    assert trainer_kwargs(check_parallel(devices=1))["strategy"] == "auto"
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    from structattn.scale import global_rank

    assert global_rank() == 3
    kw = trainer_kwargs(check_parallel(devices=2, num_nodes=2))  # under torchrun: ddp, processes exist
    assert kw["num_nodes"] == 2 and kw["strategy"]._start_method == "popen"


def test_cli_rejects_bad_parallel_options(tmp_path, capfd):
    from structattn.cli import main

    out = tmp_path / "never-written"
    assert main(["run", "synthetic", "--out", str(out), "--devices", "999"]) == 2
    got = "".join(capfd.readouterr())
    assert "--devices: 999 CPU processes" in got and "Traceback" not in got
    assert main(["run", "synthetic", "--out", str(out), "--num-nodes", "3"]) == 2
    assert "--num-nodes" in "".join(capfd.readouterr())
    assert not out.exists()


def test_explain_run_streams_all_maps_and_scores_a_subset(small_run, tmp_path):
    """More points than --score-points: every map streamed, equal to the in-memory path."""
    from structattn.explain_run import explain_run

    a, b = tmp_path / "mem", tmp_path / "stream"
    shutil.copytree(small_run.out, a)
    shutil.copytree(small_run.out, b)
    sa = explain_run(a, methods="attention,gradattn", points="test", seed=0)
    sb = explain_run(b, methods="attention,gradattn", points="test", seed=0, score_points=20, batch=16)
    assert sa["n_points"] > 20 and sa["n_scored"] == sa["n_points"]
    assert sb["n_scored"] == 20 and sb["n_points"] == sa["n_points"]
    with h5py.File(a / "explanations.h5") as fa, h5py.File(b / "explanations.h5") as fb:
        np.testing.assert_array_equal(fa["point_index"][()], fb["point_index"][()])
        assert fb["gradattn"][next(iter(fb["gradattn"]))].chunks[0] == 16
        for m in ("attention", "gradattn", "centre"):
            for t in fa[m]:
                np.testing.assert_allclose(fb[m][t][()], fa[m][t][()], rtol=1e-4, atol=1e-6)
        assert "rollout" in fb  # the run's other methods (same point_index) were kept
        np.testing.assert_array_equal(fb["rollout"][next(iter(fb["rollout"]))][()],
                                      fa["rollout"][next(iter(fa["rollout"]))][()])


def test_structattn_run_never_cuts_more_than_a_batch_of_patches(monkeypatch, tmp_path, one_torch_thread):
    """Training, the ensemble, the baselines and the predictions of `structattn run` read patches
    from a PatchSource a batch at a time: no stage asks for every point's patch at once."""
    from structattn import pipeline
    from structattn.data.io import load_sample
    from structattn.runfolder import RunFolder

    beps = DATA / "pto_beps_50x50.h5"  # 2500 points
    if not beps.exists():  # like every other test on the shared data: a checkout without ../shared skips it
        pytest.skip(f"shared real data not found at {beps}")
    asked: list[int] = []
    take = PatchSource.take
    monkeypatch.setattr(PatchSource, "take", lambda self, idx: asked.append(len(np.atleast_1d(idx))) or take(self, idx))
    from structattn.train import baselines

    monkeypatch.setattr(baselines, "ROW_BATCH", 256)  # ridge rows; predictions go 512 at a time
    cfg = pipeline.RunConfig(source=str(beps), targets="V+,imprint", epochs=1, ensemble=2, patience=1, points="4",
                             methods=("attention",), domains=False, progress=False, dim=16, depth=1, heads=2)
    res = pipeline.run_pipeline(cfg, tmp_path / "run")
    split = res.metrics["split"]
    assert len(asked) > 20
    assert max(asked) <= 512 < split["n_train"], (max(asked), split)  # a batch, never a whole part
    # the streamed predictions are the model's on the whole (N, C, w, w) patch array at once
    run = RunFolder(tmp_path / "run")
    sample = load_sample(str(beps))
    monkeypatch.setattr(PatchSource, "take", take)
    patches = extract_patches(sample.image, sample.positions, window=run.model.window, pad_mode="reflect")
    pred = np.load(tmp_path / "run" / "predictions.npz")
    np.testing.assert_allclose(pred["y_pred"], run.model.predict(patches), rtol=1e-5, atol=1e-6)


def test_ensemble_members_trained_in_two_worker_processes_equal_those_trained_in_turn(one_torch_thread):
    """`--ensemble-jobs 2`: members trained in spawned workers from a PatchSource (pickled to them)
    have the weights of the same members trained one after another in this process."""
    from structattn.train.ensemble import fit_members
    from structattn.train.trainer import TrainConfig

    img = _image(size=48)
    rng = np.random.default_rng(0)
    pos = rng.uniform(8, 40, (120, 2))
    src = PatchSource(img, pos, window=16)
    y = src.take(np.arange(120))[:, :1, 2:6, 2:6].mean((2, 3))  # (120, 1): an off-centre region
    vit = ViTConfig(in_channels=2, window=16, patch=4, dim=16, depth=1, heads=2, stem=0, n_outputs=1)
    cfg = TrainConfig(epochs=2, batch_size=32, patience=5, progress=False, seed=4)
    kw = dict(train_index=np.arange(90), val_index=np.arange(90, 120), vit=vit, train=cfg, members=3)
    seen = []
    one = fit_members(src, y, jobs=1, **kw)
    two = fit_members(src, y, jobs=2, on_member=lambda k, h: seen.append(k), **kw)
    assert sorted(seen) == [1, 2]
    for (a, _), (b, _) in zip(one, two):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
    # different members differ (seeds s+1, s+2)
    first = [next(m.parameters()) for m, _ in one]
    assert not torch.allclose(first[0], first[1])
