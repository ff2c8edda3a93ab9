"""Issue 12: every run says whether the ViT learned each target, next to its baselines.

One small real-texture run (PbTiO3 PFM amplitude/phase/height from ../shared/data) with
four targets whose answer is known: a wall density around the point (nonlinear in the
pixels: ridge cannot fit it, the ViT can), a smooth trend across the film that ignores the
structure (the position baseline wins), pure noise (nothing can predict it), and a region
mean off the patch centre (linear in the pixels: ridge does as well as any model). The run
uses `--prefer-ridge` (docs/training.md, round 10c) and a two-member ensemble: ridge must
predict exactly the linear rule, and its intervals must still cover.
"""

from pathlib import Path

import numpy as np
import pytest

from structattn.data.semisynthetic import RULES, make_semisynthetic, rule_values
from structattn.pipeline import RunConfig, resolve_geometry, run_pipeline
from structattn.runfolder import RunFolder
from structattn.train.baselines import learned_verdict, position_features, r2_margin, ridge_select

TEXTURE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pto_pfm_images" / "PTO_Funakubo0001.h5"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not TEXTURE.exists():
        pytest.skip(f"shared real data not found at {TEXTURE}")
    out = tmp_path_factory.mktemp("learned") / "run"
    cfg = RunConfig(source=f"semisynthetic:image={TEXTURE},rules=wall_density+trend+noise+amp_corner,spacing=7,"
                           "noise=0.1",
                    epochs=25, patience=8, cnn_baseline=False, methods=("attention",), points="8",
                    progress=False, domains=False, ensemble=2, prefer_ridge=True,
                    depth=2)  # half the default depth: 71 s instead of 110 s; wall_density R² 0.80 (0.81 at 4)
    return run_pipeline(cfg, out)


def test_learned_true_for_a_learnable_rule_false_for_noise_and_trend(run):
    t = run.metrics["targets"]
    assert t["wall_density"]["learned"] is True, t["wall_density"]
    assert t["wall_density"]["r2"] > t["wall_density"]["baselines"]["ridge"] + t["wall_density"]["margin"]
    assert t["noise"]["learned"] is False
    assert t["trend"]["learned"] is False
    assert t["trend"]["best_baseline"] == "position"  # the trend is found to be position alone
    assert t["trend"]["baselines"]["position"] > 0.8
    for name in t:
        assert set(t[name]["baselines"]) == {"mean", "ridge", "position", "cnn"}
        assert t[name]["baselines"]["cnn"] is None  # not trained in this run: reported as missing, not as 0


def test_ridge_predicts_the_linear_rule_and_the_vit_the_others(run):
    t = run.metrics["targets"]
    assert [t[n]["predicted_by"] for n in ("amp_corner", "wall_density", "noise", "trend")] == ["ridge", "vit", "vit", "vit"]
    c = t["amp_corner"]["choice"]
    assert c["ridge_val_r2"] >= 0.5 and not c["vit_val_r2"] >= c["ridge_val_r2"] + c["margin"]
    assert t["noise"]["choice"]["ridge_val_r2"] < 0.5  # nothing to fall back to
    assert t["wall_density"]["choice"]["vit_val_r2"] > t["wall_density"]["choice"]["ridge_val_r2"] + 0.1
    # the chosen target's predictions are the ridge baseline's, at every point and in the scores
    assert t["amp_corner"]["r2"] == pytest.approx(t["amp_corner"]["baselines"]["ridge"], abs=1e-4)
    p = np.load(run.out / "predictions.npz")
    k = list(p["target_names"]).index("amp_corner")
    np.testing.assert_allclose(p["y_pred"][:, k], p["y_pred_ridge"][:, k], rtol=1e-4, atol=1e-4 * np.std(p["y_true"][:, k]))
    assert t["amp_corner"]["learned"] is False and "predicted by ridge" in t["amp_corner"]["verdict"]
    assert t["wall_density"]["learned"] is True


def test_saved_model_and_explanations_carry_the_choice(run):
    rf = RunFolder(run.out)
    p = np.load(run.out / "predictions.npz")
    idx = np.flatnonzero(p["split"] == 2)[:16]
    from structattn.data.patches import extract_patches

    patches = extract_patches(rf.sample.image, rf.sample.positions[idx], window=rf.model.window)
    np.testing.assert_allclose(rf.model.predict(patches), p["y_pred"][idx], rtol=1e-4, atol=1e-5)
    share = run.metrics["explanations"]["linear_path_share"]
    assert share["amp_corner"] == pytest.approx(1.0) and share["wall_density"] == share["noise"] == share["trend"] == 0.0
    assert run.metrics["explanations"]["linear_path"] == "ridge on the pixels (--prefer-ridge)"


def test_ridge_target_gets_one_interval_width_from_its_validation_residuals(run):
    # both members predict amp_corner by the same ridge (spread 0): its intervals are split-conformal
    # on the validation residuals, one width everywhere, and they still cover the test blocks
    t = run.metrics["targets"]
    cal = run.metrics["uncertainty"]["calibration"]["per_target"]
    assert cal["amp_corner"].get("constant_spread") is True and "constant_spread" not in cal["wall_density"]
    p = np.load(run.out / "predictions.npz")
    k = list(p["target_names"]).index("amp_corner")
    std = p["y_std"][p["split"] >= 0, k]
    assert np.ptp(std) == 0 and std[0] > 0
    assert 0.85 <= t["amp_corner"]["coverage_95"] <= 1.0


def test_calibration_takes_the_larger_quantile_of_the_two_validation_blocks(run):
    # the reference: the run's split rebuilt from config.json, per-block quantiles by fit_calibration
    from structattn.train.split import point_bounds, spatial_block_split
    from structattn.train.uncertainty import fit_calibration

    p, rf = np.load(run.out / "predictions.npz"), RunFolder(run.out)
    c, cfg = run.metrics["uncertainty"]["calibration"], rf.config
    assert c["fitted_on"].startswith("validation blocks (149 points); quantiles per validation block (2 blocks")
    pos, shape = p["positions"].astype(float), rf.sample.shape
    sp = spatial_block_split(pos, shape=shape, blocks=cfg["run"]["blocks"], val_fraction=cfg["run"]["val_fraction"],
                             test_fraction=cfg["run"]["test_fraction"], buffer=cfg["geometry"]["buffer"],
                             seed=cfg["run"]["seed"], bounds=point_bounds(pos, shape))
    np.testing.assert_array_equal(sp.labels(len(pos)), p["split"])
    cal = rf.calibration
    val = p["split"] == 1
    spread = np.where(cal.constant, 1.0, p["y_std"] / cal.scale)
    args = (p["y_true"][val], p["y_mean"][val], spread[val])
    ref = fit_calibration(*args, constant=cal.constant, groups=sp.block_of_point[sp.val])
    np.testing.assert_allclose(cal.quantiles, ref.quantiles, rtol=1e-4)
    pooled = fit_calibration(*args, constant=cal.constant)
    # never narrower than pooling (up to the float32 of predictions.npz), wider somewhere
    assert (cal.quantiles >= pooled.quantiles * (1 - 1e-4)).all() and (cal.quantiles > pooled.quantiles * 1.01).any()


def test_run_records_why_the_geometry_was_chosen(run):
    import json

    cfg = json.loads((run.out / "config.json").read_text())
    geo = cfg["geometry"]
    assert (geo["window"], geo["patch"], geo["buffer"]) == (32, 4, 8)
    assert "auto" in geo["why"]["window"] and "spacing" in geo["why"]["window"]
    assert cfg["run"]["augment"] == "none"  # no symmetry of the user's rule is assumed


def test_geometry_follows_the_data():
    from structattn.data.sample import Sample

    small = Sample(image=np.zeros((1, 50, 50)), positions=np.argwhere(np.ones((50, 50))).astype(float),
                   targets=np.zeros((2500, 1)))
    g = resolve_geometry(small, RunConfig())
    assert g["window"] == 16 and g["patch"] == 2  # a third of a 50 px image, 8 x 8 tokens
    rr, cc = np.mgrid[20:480:20, 20:480:20]
    sparse = Sample(image=np.zeros((1, 500, 500)), positions=np.stack([rr.ravel(), cc.ravel()], 1).astype(float),
                    targets=np.zeros((rr.size, 1)))
    assert resolve_geometry(sparse, RunConfig())["window"] == 80  # 4 spacings of 20 px
    assert resolve_geometry(sparse, RunConfig(window=24, patch=4))["window"] == 24


def test_ridge_penalty_is_chosen_on_validation_and_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 40))
    w = rng.standard_normal((40, 2))
    y = x @ w + 0.1 * rng.standard_normal((300, 2))
    tr, va = np.arange(200), np.arange(200, 300)
    pred, info = ridge_select(x, y, train=tr, val=va)
    assert min(info["alpha"]) < 1e-1  # little noise: a small penalty wins on validation
    assert np.corrcoef(pred[va, 0], y[va, 0])[0, 1] > 0.99
    # pure noise features: a large penalty wins (predict the mean)
    _, info = ridge_select(rng.standard_normal((300, 40)), y, train=tr, val=va)
    assert max(info["alpha"]) > 10


@pytest.mark.parametrize("n, p", [(300, 40), (60, 200)])  # normal equations (n >= p) and SVD (n < p)
def test_ridge_path_matches_sklearn_ridge_for_every_penalty(n, p):
    from sklearn.linear_model import Ridge

    from structattn.train.baselines import ALPHAS, ridge_coefficients, ridge_predict

    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, p)) * rng.uniform(0.5, 3, p) + rng.uniform(-2, 2, p)
    y = x[:, :3] @ rng.standard_normal((3, 2)) + 0.3 * rng.standard_normal((n, 2))
    tr = np.arange(int(0.7 * n))
    fit = ridge_coefficients(x, y, train=tr)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    for a in (0, 7, 21):  # penalties are relative to n_train on standardised features
        want = Ridge(alpha=ALPHAS[a] * len(tr)).fit((x[tr] - mu) / sd, y[tr]).predict((x - mu) / sd)
        np.testing.assert_allclose(ridge_predict(x, np.arange(n), fit, fit["coef"][a]), want, atol=1e-9)


def test_ridge_on_a_patch_source_equals_ridge_on_the_patch_array_and_cuts_batches():
    """The run's ridge reads patches a batch at a time from a PatchSource, same answer as the array."""
    from structattn.scale import PatchSource
    from structattn.train import baselines

    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 80, 80)).astype(np.float32)
    pos = rng.uniform(0, 79, (2500, 2))
    src = PatchSource(img, pos, window=8, mean=img.mean((1, 2)), std=img.std((1, 2)))
    arr = src.take(np.arange(len(pos)))
    y = np.stack([arr[:, 0, 1:3, 5:7].mean((1, 2)), (arr[:, 1, 3:5, 3:5] > 0).mean((1, 2))], 1).astype(float)
    tr, va = np.arange(1800), np.arange(1800, 2200)
    asked = []
    take = PatchSource.take
    src.take = lambda idx: asked.append(len(idx)) or take(src, idx)
    got, info = baselines.ridge_select(src, y, train=tr, val=va)
    want, info_a = baselines.ridge_select(arr, y, train=tr, val=va)
    np.testing.assert_allclose(got, want, atol=1e-10)
    assert info == info_a
    assert max(asked) <= baselines.ROW_BATCH < len(tr)  # never the whole training matrix


def test_position_features_and_margin():
    f = position_features(np.array([[0.0, 0.0], [9.0, 9.0]]), (10, 10), 2)
    assert f.shape == (2, 5) and np.allclose(f[0], [-1, -1, 1, 1, 1]) and np.allclose(f[1], 1)
    rng = np.random.default_rng(1)
    y = rng.standard_normal(400)
    same = y + 0.3 * rng.standard_normal(400)
    assert 0.02 <= r2_margin(y, same, same) <= 0.021  # identical models: the floor
    assert r2_margin(y, y + rng.standard_normal(400), same) > 0.05  # noisy difference: a wider margin


def test_verdict_rules():
    ok, best, text = learned_verdict("V+", 0.8, {"mean": -0.1, "ridge": 0.5, "position": 0.1, "cnn": None}, margin=0.05)
    assert ok and best == "ridge" and "learned" in text and "the ViT (R² 0.80)" in text
    _, _, text = learned_verdict("V+", 0.8, {"ridge": 0.5}, margin=0.05, who="ridge on the patch pixels")
    assert "ridge on the patch pixels (R² 0.80)" in text and "ViT" not in text  # the run's predictor is named
    ok, best, text = learned_verdict("V+", 0.52, {"mean": -0.1, "ridge": 0.5}, margin=0.05)
    assert not ok and "no better than ridge" in text
    ok, _, text = learned_verdict("V+", 0.05, {"mean": -0.5}, margin=0.02)
    assert not ok and "0.1" in text
    ok, _, text = learned_verdict("V+", float("nan"), {"mean": 0.0}, margin=0.02)
    assert not ok and "undefined" in text


def test_semisynthetic_rules_read_their_regions():
    """Changing pixels inside a rule's region changes its value; outside it does not.

    Pixels are moved, not altered, so the image-wide normalisation (median, IQR, wall
    quantile) stays the same: outside = shuffle the patch pixels outside the region;
    inside = swap the region's pixels with pixels far from the point.
    """
    rng = np.random.default_rng(0)
    img = rng.standard_normal((3, 128, 128)).astype(np.float32)
    pos = np.array([[40.0, 40.0]])
    win = (slice(None), slice(40 - 16, 40 + 17), slice(40 - 16, 40 + 17))
    # threshold and product are normalised over the points, so with three points they are left out here
    for rule in ("amp_corner", "phase_corner", "wall_direction"):
        region = np.logical_or.reduce(RULES[rule][1])  # (33, 33) centred on the point
        pts = np.vstack([pos, pos + 50, pos + [0, 50]])  # regions of the others stay off point 0's patch
        base = rule_values(img, ("height", "amplitude", "phase"), pts, rule, rng=rng)[0]
        outside = img.copy()
        patch = outside[win].copy()
        vals = patch[:, ~region]
        patch[:, ~region] = vals[:, rng.permutation(vals.shape[1])]
        outside[win] = patch
        inside = img.copy()
        patch = inside[win].copy()
        far = inside[:, 100:120, 100:120].reshape(3, -1)[:, : region.sum()].copy()
        patch[:, region] = far
        inside[win] = patch
        v_out = rule_values(outside, ("height", "amplitude", "phase"), np.vstack([pos, pos + 30]), rule, rng=rng)[0]
        v_in = rule_values(inside, ("height", "amplitude", "phase"), np.vstack([pos, pos + 30]), rule, rng=rng)[0]
        if rule != "wall_direction":  # sobel reads a 1 px rim around the region
            assert np.isclose(v_out, base), rule
        assert not np.isclose(v_in, base), rule


def test_semisynthetic_bad_options_name_the_field():
    with pytest.raises(ValueError, match="rules"):
        make_semisynthetic(image=TEXTURE, rules=("nope",))
    with pytest.raises(FileNotFoundError, match="image"):
        make_semisynthetic(image="/no/such.h5")


def test_ridge_rejects_bad_targets_naming_the_parameter():
    from structattn.train.baselines import ridge_coefficients

    x = np.random.default_rng(0).standard_normal((20, 5))
    with pytest.raises(ValueError, match=r"y: expected \(20, K\)"):
        ridge_coefficients(x, np.zeros(20), train=np.arange(10))
    with pytest.raises(ValueError, match="train: expected at least 2"):
        ridge_coefficients(x, np.zeros((20, 1)), train=np.arange(1))
    y = np.zeros((20, 1))
    y[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ridge_coefficients(x, y, train=np.arange(10))
