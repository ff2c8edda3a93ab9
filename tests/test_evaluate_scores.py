"""Scores: faithfulness on a constructed linear model, ground truth, agreement, cost."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from explain_toy import REGION0, region_masks, toy_batch, trained_toy
from structattn.evaluate import (
    PassCounter,
    agreement,
    centre_prior,
    deletion_insertion,
    evaluate_methods,
    ground_truth_scores,
    measure_cost,
)
from structattn.explain import make_explainer


class Linear(nn.Module):
    """f(x) = sum_pixels w * x: the exact attribution of each token is its w·x sum."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.cfg = SimpleNamespace(patch=4, grid=w.shape[-1] // 4, n_outputs=1)

    def forward(self, x):
        return (x * self.w).sum((1, 2, 3))[:, None]


def test_true_ordering_beats_random_on_a_linear_model():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 1, 16, 16, generator=g) * torch.linspace(0, 3, 16)  # unequal token weights
    model = Linear(w)
    x = torch.randn(32, 1, 16, 16, generator=g).abs()  # positive inputs: contributions share w's sign
    exact = (x * w)[:, 0]  # (B, w, w) exact per-pixel contributions
    tok = exact.reshape(32, 4, 4, 4, 4).sum((2, 4))
    maps = tok.repeat_interleave(4, 1).repeat_interleave(4, 2)
    r = deletion_insertion(model, x, maps, target=0)
    assert r["deletion_auc"] < r["random_deletion_auc"] - 0.05
    assert r["insertion_auc"] > r["random_insertion_auc"] + 0.05
    # curves start and end where the definition says
    assert r["deletion"][0] == pytest.approx(1.0) and r["deletion"][-1] == pytest.approx(0.0, abs=1e-6)
    assert r["insertion"][0] == pytest.approx(0.0, abs=1e-6) and r["insertion"][-1] == pytest.approx(1.0)
    # the reversed ordering is worse than random
    r_bad = deletion_insertion(model, x, -maps.abs() + maps.abs().max(), target=0)
    assert r_bad["deletion_auc"] > r["random_deletion_auc"]


def test_curves_for_several_targets_at_once_equal_one_target_at_a_time():
    """One token order scored for every output in one pass (shared maps, the random order)
    gives each target's own curves: the per-target output gap normalises each."""

    class TwoOutputs(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = nn.Parameter(w)
            self.cfg = SimpleNamespace(patch=4, grid=4, n_outputs=2)

        def forward(self, x):
            return torch.stack([(x * self.w[0]).sum((1, 2, 3)), 5 * (x * self.w[1]).sum((1, 2, 3)) ** 2], 1)

    from structattn.evaluate.faithfulness import deletion_insertion_targets

    g = torch.Generator().manual_seed(1)
    model = TwoOutputs(torch.randn(2, 1, 1, 16, 16, generator=g))
    x = torch.randn(12, 1, 16, 16, generator=g)
    maps = torch.rand(12, 16, 16, generator=g)
    both = deletion_insertion_targets(model, x, maps, targets=[1, 0], steps=8, seed=3)
    for got, t in zip(both, (1, 0)):
        want = deletion_insertion(model, x, maps, target=t, steps=8, seed=3)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert both[0]["deletion_auc"] != pytest.approx(both[1]["deletion_auc"], abs=1e-3)  # really two targets
    with pytest.raises(ValueError, match=r"targets: expected output indices in \[0, 2\), got \[0, 2\]"):
        deletion_insertion_targets(model, x, maps, targets=[0, 2])
    alone = deletion_insertion_targets(model, x, maps, targets=[0], steps=8, seed=3, with_maps=False)[0]
    assert "deletion_auc" not in alone and alone["random_deletion_auc"] == pytest.approx(both[1]["random_deletion_auc"])


def test_deletion_rejects_mismatched_maps():
    model = Linear(torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="maps"):
        deletion_insertion(model, torch.zeros(2, 1, 16, 16), torch.zeros(3, 16, 16), target=0)


def test_ground_truth_perfect_inverted_and_uniform():
    masks = region_masks(4, REGION0)
    perfect = ground_truth_scores(masks.astype(float), masks)
    assert perfect["auroc"] == 1.0
    assert perfect["mass_ratio"] == pytest.approx(1 / masks[0].mean())
    assert ground_truth_scores((~masks).astype(float), masks)["auroc"] == 0.0
    flat = ground_truth_scores(np.ones(masks.shape), masks)
    assert flat["auroc"] == 0.5 and flat["mass_ratio"] == pytest.approx(1.0)
    with pytest.raises(TypeError, match="masks"):
        ground_truth_scores(np.ones(masks.shape), masks.astype(int))
    broken = np.ones(masks.shape)
    broken[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite values in 1 of 4 maps"):
        ground_truth_scores(broken, masks)


def test_row_rank_statistics_match_sklearn_and_scipy_per_row():
    """The vectorised AUROC and Spearman equal the per-row library calls, ties and all."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from structattn.evaluate._tokens import row_auroc, row_spearman

    rng = np.random.default_rng(4)
    s = np.round(rng.standard_normal((30, 50)), 1)  # rounded: many tied scores
    y = rng.random((30, 50)) < rng.uniform(0.05, 0.6, (30, 1))
    y[0], y[1] = True, False  # one class only: undefined
    got = row_auroc(s, y)
    assert np.isnan(got[:2]).all()
    np.testing.assert_allclose(got[2:], [roc_auc_score(yi, si) for yi, si in zip(y[2:], s[2:])], atol=1e-12)
    b = np.round(s + rng.standard_normal(s.shape), 1)
    b[3] = 7.0  # constant row: no ranking
    rho = row_spearman(s, b)
    assert np.isnan(rho[3])
    want = [spearmanr(x, z).statistic for i, (x, z) in enumerate(zip(s, b)) if i != 3]
    np.testing.assert_allclose(np.delete(rho, 3), want, atol=1e-12)
    with pytest.raises(ValueError, match="labels"):
        row_auroc(s, y[:, :10])


def test_ground_truth_within_a_region_per_point_or_shared():
    rng = np.random.default_rng(5)
    maps = rng.random((6, 8, 8))
    masks = rng.random((6, 8, 8)) < 0.3
    disk = np.zeros((8, 8), bool)
    disk[2:6, 1:7] = True
    shared = ground_truth_scores(maps, masks, within=disk)
    per_point = ground_truth_scores(maps, masks, within=np.broadcast_to(disk, maps.shape).copy() | (np.arange(6) == 0)[:, None, None])
    from sklearn.metrics import roc_auc_score

    want = np.mean([roc_auc_score(m[disk], a[disk]) for m, a in zip(masks, maps)])
    assert shared["auroc"] == pytest.approx(want, abs=1e-12) and shared["n_points"] == 6
    want0 = roc_auc_score(masks[0].ravel(), maps[0].ravel())  # point 0 scored over its whole window
    rest = [roc_auc_score(m[disk], a[disk]) for m, a in zip(masks[1:], maps[1:])]
    assert per_point["auroc"] == pytest.approx(np.mean([want0, *rest]), abs=1e-12)


def test_centre_prior_is_centred_and_ranks_by_distance():
    p = centre_prior(16)
    assert p.shape == (16, 16) and p.argmax() == 8 * 16 + 8
    assert p[8, 12] == pytest.approx(p[12, 8]) and p[8, 12] > p[8, 14]


def test_agreement_identical_opposite_and_shape_errors():
    rng = np.random.default_rng(0)
    a = rng.random((5, 16, 16))
    b = a.max() - a  # reversed ranking of magnitudes
    rho, top = agreement({"a": a, "b": b, "c": a}, patch=4)
    assert rho["a"]["c"] == pytest.approx(1.0) and top["a"]["c"] == 1.0
    assert rho["a"]["b"] == pytest.approx(-1.0) and top["a"]["b"] == 0.0
    with pytest.raises(ValueError, match="maps_by_method"):
        agreement({"a": a, "b": a[:2]}, patch=4)
    # token size inferred from token-constant maps: same result as patch=4
    tok = a.reshape(5, 4, 4, 4, 4).mean((2, 4)).repeat(4, 1).repeat(4, 2)
    tok2 = np.sqrt(tok)
    assert agreement({"a": tok, "b": tok2})[1]["a"]["b"] == agreement({"a": tok, "b": tok2}, patch=4)[1]["a"]["b"] == 1.0


def test_pass_counter_counts_forwards_and_backwards():
    model = trained_toy()
    x, _ = toy_batch(6, seed=21)
    _, c_att = measure_cost(make_explainer("attention", model), x, target=None)
    _, c_grad = measure_cost(make_explainer("gradattn", model), x, target=0)
    _, c_pos = measure_cost(make_explainer("gradattn", model, polarity="positive"), x, target=0)
    _, c_ig = measure_cost(make_explainer("ig", model, n_steps=8, internal_batch_size=None), x, target=0)
    assert (c_att["forwards_per_point"], c_att["backwards_per_point"]) == (1, 0)
    assert (c_grad["forwards_per_point"], c_grad["backwards_per_point"]) == (1, 2)  # polarity "both"
    assert (c_pos["forwards_per_point"], c_pos["backwards_per_point"]) == (1, 1)
    assert c_ig["backwards_per_point"] == 8 and c_ig["forwards_per_point"] >= 8
    with PassCounter(model) as c:
        model(x)
    assert c.forwards == 6


def test_suite_scores_every_method_and_the_prior():
    model = trained_toy()
    x, _ = toy_batch(8, seed=22)
    scores, maps = evaluate_methods(
        model,
        x,
        methods=["attention", "rollout", "gradattn", "ig", "occlusion"],
        targets=[0],
        target_names=["y0"],
        masks={"y0": region_masks(8, REGION0)},
        options={"ig": {"n_steps": 8}},
        randomisation_points=4,
    )
    s = scores["y0"]
    for name in ("attention", "rollout", "gradattn", "ig", "occlusion", "centre"):
        for key in ("auroc", "deletion_auc", "insertion_auc", "randomisation_spearman", "seconds_per_point"):
            assert np.isfinite(s[name][key]), (name, key)
        assert maps["y0"][name].shape == (8, 16, 16)
    assert s["centre"]["randomisation_spearman"] == pytest.approx(1.0)
    assert s["occlusion"]["auroc"] > s["centre"]["auroc"]
    assert s["occlusion"]["deletion_auc"] < s["_random"]["deletion_auc"]
    assert s["_agreement"]["spearman"]["ig"]["ig"] == 1.0
