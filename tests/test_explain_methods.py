"""Explainers: hand-checked rollout, reference gradattn, SHAP additivity, IG completeness,
and every method finding a known off-centre causal region on a trained toy ViT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain_toy import REGION0, REGION1, WINDOW, region_masks, toy_batch, trained_toy
from structattn.evaluate import ground_truth_scores, randomisation_check
from structattn.explain import (
    EXPLAINERS,
    AttentionExplainer,
    GradAttnExplainer,
    IntegratedGradientsExplainer,
    RolloutExplainer,
    ShapExplainer,
    make_explainer,
    rollout,
)
from structattn.explain.base import linear_path_share
from structattn.explain.gradattn import gradattn_relevance
from structattn.report.explain_section import linear_path_note
from structattn.nets.vit import ViTConfig, ViTRegressor


def test_registry_has_exactly_the_issue_methods():
    assert set(EXPLAINERS) == {"attention", "rollout", "gradattn", "shap", "ig", "occlusion", "attnlrp"}


def test_rollout_hand_computed_two_layers():
    # Layer 1: [CLS] attends only to token 1; layer 2: [CLS] attends only to token 2.
    a1 = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 0, 1]])
    a2 = torch.tensor([[0.0, 0, 1], [0, 1, 0], [0, 0, 1]])
    # Ã1 = [[.5,.5,0],[0,1,0],[0,0,1]], Ã2 = [[.5,0,.5],[0,1,0],[0,0,1]]
    # R = Ã2 Ã1 -> row 0 = .5*[.5,.5,0] + .5*[0,0,1] = [.25, .25, .5]
    r = rollout([a1[None, None], a2[None, None]])
    torch.testing.assert_close(r[0, 0], torch.tensor([0.25, 0.25, 0.5]))
    # The other order (Ã1 Ã2) gives [.25, .5, .25]: layer order matters and is first-first.
    r_swapped = rollout([a2[None, None], a1[None, None]])
    torch.testing.assert_close(r_swapped[0, 0], torch.tensor([0.25, 0.5, 0.25]))


def test_rollout_explainer_matches_function_and_heads_are_averaged():
    torch.manual_seed(0)
    m = ViTRegressor(ViTConfig(in_channels=1, window=8, patch=4, depth=3, heads=2)).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        _, w = m(x, return_attention=True)
    # head mean first, then the same rollout with one "head"
    ref = rollout([wi.mean(1, keepdim=True) for wi in w])[:, 0, 1:]
    ref = ref / ref.sum(-1, keepdim=True)
    got = RolloutExplainer(m).attribute(x)[:, ::4, ::4].reshape(3, -1)
    torch.testing.assert_close(got, ref)


def _reference_gradattn(model, x, target, sign=1.0):
    """Chefer 2021 one point at a time, explicit loops over layers and heads."""
    out = []
    for i in range(len(x)):
        y, ws = model(x[i : i + 1], return_attention=True)
        grads = torch.autograd.grad(sign * y[0, target], ws)
        t = ws[0].shape[-1]
        r = torch.eye(t)
        for a, g in zip(ws, grads):
            cam = torch.zeros(t, t)
            for h in range(a.shape[1]):
                cam += torch.relu(g[0, h] * a[0, h])
            cam /= a.shape[1]
            r = r + cam @ r
        out.append(r[0, 1:].detach())
    return torch.stack(out)


def test_gradattn_equals_step_by_step_reference():
    model = trained_toy()
    x, _ = toy_batch(4, seed=11)
    for target in (0, 1):
        got = GradAttnExplainer(model, polarity="positive").attribute(x, target=target)[:, ::4, ::4].reshape(4, -1)
        torch.testing.assert_close(got, _reference_gradattn(model, x, target), rtol=1e-4, atol=1e-6)
    # polarity: "negative" explains -y_k, "both" (the default) adds the two relevances
    neg = GradAttnExplainer(model, polarity="negative").attribute(x, target=0)[:, ::4, ::4].reshape(4, -1)
    torch.testing.assert_close(neg, _reference_gradattn(model, x, 0, sign=-1.0), rtol=1e-4, atol=1e-6)
    both = GradAttnExplainer(model).attribute(x, target=0)[:, ::4, ::4].reshape(4, -1)
    pos = GradAttnExplainer(model, polarity="positive").attribute(x, target=0)[:, ::4, ::4].reshape(4, -1)
    torch.testing.assert_close(both, pos + neg, rtol=1e-4, atol=1e-6)


def test_gradattn_depends_on_target():
    model = trained_toy()
    x, _ = toy_batch(4, seed=12)
    ex = GradAttnExplainer(model)
    assert not torch.allclose(ex.attribute(x, target=0), ex.attribute(x, target=1))


def test_shap_additivity_and_seed():
    model = trained_toy()
    x, _ = toy_batch(3, seed=13)
    ex = ShapExplainer(model, seed=3)
    a = ex.attribute(x, target=0)
    tok = a[:, ::4, ::4].reshape(3, -1).double()  # one value per token
    with torch.no_grad():
        gap = (model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]).double()
    torch.testing.assert_close(tok.sum(1), gap, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ShapExplainer(model, seed=3).attribute(x, target=0), a)  # same seed, same maps


def test_shap_rejects_too_small_budget():
    with pytest.raises(ValueError, match="max_evals"):
        ShapExplainer(trained_toy(), max_evals=10)


def test_ig_completeness():
    model = trained_toy()
    x, _ = toy_batch(4, seed=14)
    ex = IntegratedGradientsExplainer(model, n_steps=32)
    a = ex.attribute(x, target=0)
    assert ex.last_delta.abs().max() < 1e-2  # captum's convergence delta
    with torch.no_grad():
        gap = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(a[:, ::4, ::4].reshape(4, -1).sum(1), gap, rtol=0, atol=2e-2)


# Justified thresholds: on this task a perfect token map scores AUROC 1 and the centre prior
# about 0.4. Every method clears 0.85 (gradattn with its default polarity "both": 0.94 and
# 0.98; Chefer's positive-only relevance gets 0.64 and 0.76 here, because with a signed
# linear target the causal tokens that pull the output down at a point get no relevance;
# attnlrp, pixel maps: 0.96 and 0.97; this task's truth is token-constant, token sums get 0.99).
THRESHOLD = {"attention": 0.85, "rollout": 0.85, "gradattn": 0.85, "shap": 0.9, "ig": 0.9, "occlusion": 0.9,
             "attnlrp": 0.9}


@pytest.mark.parametrize("method", sorted(THRESHOLD))
def test_methods_find_the_known_offcentre_region(method):
    model = trained_toy()
    n = 10 if method == "shap" else 24  # shap: ~0.4 s a point even on this toy
    x, _ = toy_batch(n, seed=15)
    kw = {"max_evals": 2 * (2 * 16 + 1)} if method == "shap" else {}
    prior = ground_truth_scores(make_explainer("centre", model).attribute(x), region_masks(n, REGION0))
    for target, region in ((0, REGION0), (1, REGION1)):
        a = make_explainer(method, model, **kw).attribute(x, target=target)
        s = ground_truth_scores(a, region_masks(n, region))
        assert s["auroc"] > THRESHOLD[method], (method, target, s)
        assert s["mass_ratio"] > 1.0
    assert prior["auroc"] < 0.6  # the centre prior cannot find a corner region


@pytest.mark.parametrize("method", ["attention", "rollout", "gradattn", "ig", "occlusion", "attnlrp"])
def test_randomisation_changes_the_maps(method):
    model = trained_toy()
    x, _ = toy_batch(8, seed=16)
    r = randomisation_check(lambda m: make_explainer(method, m), model, x, 0)
    assert r["spearman"] < 0.5, r["spearman"]
    # and the trained model itself is left untouched
    assert torch.allclose(model(x), trained_toy()(x))


def test_centre_prior_fails_randomisation():
    r = randomisation_check(lambda m: make_explainer("centre", m), trained_toy(), toy_batch(4, seed=17)[0], None)
    assert r["spearman"] == pytest.approx(1.0)


def test_target_out_of_range_names_the_parameter():
    with pytest.raises(ValueError, match="target"):
        make_explainer("ig", trained_toy()).attribute(torch.zeros(1, 1, WINDOW, WINDOW), target=5)
    with pytest.raises(ValueError, match="methods"):
        make_explainer("lime", trained_toy())


@pytest.mark.parametrize("readout", ["cls", "tokens", "spatial", "pool", "spatial_embed"])
def test_readout_contributions_add_up_to_the_output(readout):
    torch.manual_seed(0)
    m = ViTRegressor(ViTConfig(in_channels=2, window=16, patch=4, n_outputs=3, readout=readout)).eval()
    with torch.no_grad():  # give the zero-initialised head bias a value the check would notice
        m.head.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    x = torch.randn(5, 2, 16, 16)
    h, _ = m.encode(x)
    y = m(x).detach()
    for k in range(3):
        c = m.readout_contributions(h, k)
        torch.testing.assert_close(c.sum(-1), y[:, k] - m.head.bias[k].detach(), rtol=1e-4, atol=1e-5)
        r = m.readout_shares(h, k)
        torch.testing.assert_close(r.sum(-1), torch.ones(5))
        if readout == "cls":
            assert torch.all(r[:, 0] == 1)
        if readout == "tokens":
            assert torch.all(r[:, 0] == 0)


def test_attention_maps_follow_a_readout_of_the_patch_tokens():
    # A "spatial" model whose output 1 reads token 5 alone (its [CLS] head zeroed): rollout and
    # gradient-weighted attention must put their largest score there. The [CLS] row would not.
    torch.manual_seed(1)
    cfg = ViTConfig(in_channels=1, window=16, patch=4, n_outputs=2, readout="spatial")
    m = ViTRegressor(cfg).eval()
    j = 5
    with torch.no_grad():
        m.head.weight.zero_()
        m.read_where.zero_()
        m.read_where[1, j] = 1.0
        m.read_what.normal_()
    x = torch.randn(6, 1, 16, 16)
    for ex in (RolloutExplainer(m), GradAttnExplainer(m)):
        assert ex.needs_target  # each output reads its own tokens
        tok = ex.attribute(x, target=1)[:, ::4, ::4].reshape(6, -1)
        assert torch.all(tok.argmax(-1) == j), (ex.name, tok.argmax(-1))
    with pytest.raises(ValueError, match="target"):
        RolloutExplainer(m).attribute(x)


def test_embedding_readout_is_a_linear_path_that_maps_to_the_token_itself():
    # "spatial_embed" with the final states' terms zeroed: without a conv stem the output is
    # affine in the pixels, so it extrapolates as a linear rule does (y(a + b) = y(a) + y(b) - y(0)),
    # whatever the blocks and their LayerNorms do. The attention-family maps put what is read from
    # a token's embedding on that token: every method's largest score is at the read token j.
    torch.manual_seed(2)
    m = ViTRegressor(ViTConfig(in_channels=1, window=16, patch=4, n_outputs=2, stem=0, readout="spatial_embed")).eval()
    j = 6
    with torch.no_grad():
        m.head.weight.zero_()
        m.read_what.zero_()
        m.read_where.fill_(1.0)  # the final states' weighting reads everywhere, through a zero vector
        m.read_embed_where.zero_()
        m.read_embed_where[1, j] = 1.0
        m.read_embed.normal_()
    a, b = torch.randn(2, 3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(10 * a + b), 10 * m(a) + m(b) - 10 * m(torch.zeros_like(a)),
                                   rtol=1e-4, atol=1e-4)
        h, _ = m.encode(a)
    deep, embed = m.readout_shares(h, 1, split=True)
    torch.testing.assert_close(embed[:, j + 1], torch.ones(3))  # token j is state j + 1 ([CLS] first)
    assert torch.all(deep == 0)
    for ex in (AttentionExplainer(m), RolloutExplainer(m), GradAttnExplainer(m)):
        tok = ex.attribute(a, target=1)[:, ::4, ::4].reshape(3, -1)
        assert torch.all(tok.argmax(-1) == j), (ex.name, tok.argmax(-1))
    # the run records how much of each output passes no attention: all of output 1 here; none of a
    # model whose embeddings' vectors are zero; no figure at all for a readout without the path
    assert linear_path_share(m, a, 1) == pytest.approx(1.0)
    with torch.no_grad():
        m.read_what.normal_()
        m.read_embed.zero_()
    assert linear_path_share(m, a, 1) == pytest.approx(0.0)
    assert linear_path_share(ViTRegressor(ViTConfig(in_channels=1, window=16, patch=4, readout="spatial")), a, 0) is None
    note = linear_path_note({"linear_path_share": {"amp_corner": 0.8}}, "amp_corner")
    assert "80% of what the model reads for amp_corner comes from its linear path, the tokens&#x27; embeddings" in note and "passes no attention" in note
    assert linear_path_note({"linear_path_share": {"amp_corner": 0.8}}, "threshold") == linear_path_note({}, "x") == ""


def test_readout_names_the_choices():
    with pytest.raises(ValueError, match="readout: expected one of"):
        ViTConfig(readout="mean")
    m = ViTRegressor(ViTConfig(in_channels=1, window=8, patch=4, n_outputs=2, readout="spatial")).eval()
    h, _ = m.encode(torch.zeros(1, 1, 8, 8))
    for bad in (2, -1, 1.0):
        with pytest.raises(ValueError, match=r"target: expected an output index in \[0, 2\)"):
            m.readout_shares(h, bad)
