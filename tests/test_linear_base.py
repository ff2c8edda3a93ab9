"""A fixed linear map of the pixels inside the ViT (`ViTConfig.linear_base`; docs/training.md rounds
10-10c): it is exactly the ridge baseline, it extrapolates linearly, it survives save/load, and the
attention family puts it on the tokens whose pixels it reads. `structattn run --prefer-ridge` (round
10c) predicts by ridge exactly the targets where the ViT does not beat it on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn.explain.attention import AttentionExplainer
from structattn.explain.base import linear_path_kind, linear_path_share
from structattn.explain.gradattn import GradAttnExplainer
from structattn.explain.rollout import RolloutExplainer
from structattn.nets.vit import ViTConfig, ViTRegressor, predict_linearly
from structattn.pipeline import RunConfig
from structattn.train.baselines import ridge_select
from structattn.train.trainer import TrainConfig, TrainedModel, fit_linear_base, fit_vit, pixel_ridge


def _data(n: int = 1500, seed: int = 0):
    """Target 0 is linear in one corner token's pixels (channel 0), target 1 is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 16, 16)).astype(np.float32)
    y = np.stack([3 * x[:, 0, :4, :4].mean((1, 2)) + 0.1 * rng.normal(size=n), rng.normal(size=n)], 1)
    return x, y, np.arange(int(0.8 * n)), np.arange(int(0.8 * n), int(0.93 * n))


def _model(**kw) -> ViTRegressor:
    torch.manual_seed(0)
    cfg = dict(in_channels=2, window=16, patch=4, dim=32, depth=2, heads=2, n_outputs=2, stem=8,
               readout="spatial", linear_base=True)
    return ViTRegressor(ViTConfig(**{**cfg, **kw})).eval()


def test_base_is_the_ridge_baseline_where_ridge_explains_validation():
    x, y, tr, va = _data()
    m = _model()
    xt = torch.as_tensor(x)
    with torch.no_grad():
        before = m(xt).numpy()
    info = fit_linear_base(m, x, y, train_index=tr, val_index=va)
    assert info["used"] == [True, False]  # the noise target's ridge R² is about 0, below 0.5
    assert info["ridge_val_r2"][0] > 0.9 and info["ridge_val_r2"][1] < 0.1
    with torch.no_grad():
        after = m(xt).numpy()
    ridge, _ = ridge_select(x, y, train=tr, val=va)  # the `ridge` baseline, same penalty choice
    np.testing.assert_allclose(after[:, 0] - before[:, 0], ridge[:, 0], atol=1e-4)
    np.testing.assert_array_equal(after[:, 1], before[:, 1])  # no base where ridge fails validation
    # the contributions of final states and linear path still add up to the output exactly
    with torch.no_grad():
        h, _ = m.encode(xt[:8])
    c, ce = m.readout_parts(h, 0)
    torch.testing.assert_close(c.sum(1) + ce.sum(1) + m.head.bias[0], torch.as_tensor(after[:8, 0]),
                               rtol=1e-5, atol=1e-5)


def test_base_extrapolates_linearly_and_maps_to_the_tokens_it_reads():
    # ViT path switched off (zero read-out vectors): the output is the base, affine in the pixels,
    # so it follows a linear rule outside any training range; the attention family puts it on the
    # one token (j) whose pixels the base reads, and the run's linear-path share is 1.
    m, j = _model(), 6
    w = torch.zeros(2, 2, 16, 16)
    w[1, 0, 4:8, 8:12] = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))  # token 6 = row 1, col 2
    with torch.no_grad():
        m.head.weight.zero_()
        m.read_what.zero_()
    m.set_linear_base(w, torch.tensor([0.0, 0.5]))
    a, b = torch.randn(2, 3, 2, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(m(10 * a + b), 10 * m(a) + m(b) - 10 * m(torch.zeros_like(a)), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(m(a)[:, 1] - m.head.bias[1], (w[1] * a).sum((1, 2, 3)), rtol=1e-5, atol=1e-5)
    for ex in (AttentionExplainer(m), RolloutExplainer(m), GradAttnExplainer(m)):
        tok = ex.attribute(a, target=1)[:, ::4, ::4].reshape(3, -1)
        assert torch.all(tok.argmax(-1) == j), (ex.name, tok.argmax(-1))
    assert linear_path_share(m, a, 1) == pytest.approx(1.0)
    assert linear_path_kind(m) == "ridge on the pixels (--prefer-ridge)"
    assert linear_path_kind(_model(linear_base=False)) is None


def test_fit_vit_records_the_base_and_save_load_keeps_it(tmp_path):
    x, y, tr, va = _data(600)
    vit = ViTConfig(in_channels=2, window=16, patch=4, dim=16, depth=1, heads=2, n_outputs=2, stem=0,
                    readout="spatial", linear_base=True)
    model, hist = fit_vit(x, y, train_index=tr, val_index=va, vit=vit, train=TrainConfig(epochs=2, progress=False))
    assert hist["linear_base"]["used"][1] is False and hist["linear_base"]["min_val_r2"] == 0.5
    assert model.base_weight.abs().sum() > 0
    t = TrainedModel(model=model, target_names=("a", "b"), channel_mean=np.zeros(2, np.float32),
                     channel_std=np.ones(2, np.float32), target_mean=np.zeros(2, np.float32),
                     target_std=np.ones(2, np.float32))
    t.save(tmp_path / "m.pt")
    back = TrainedModel.load(tmp_path / "m.pt")
    np.testing.assert_array_equal(back.predict(x[:20]), t.predict(x[:20]))


def test_linear_base_refuses_what_it_cannot_follow():
    with pytest.raises(ValueError, match="--prefer-ridge: needs --readout spatial or spatial_embed"):
        RunConfig(prefer_ridge=True, readout="cls")
    with pytest.raises(ValueError, match="--prefer-ridge: .*--augment dihedral"):
        RunConfig(prefer_ridge=True, augment="dihedral")
    # None ("where it applies"): on with a spatial readout and no augmentation, off otherwise
    assert [RunConfig(prefer_ridge=None, **kw).prefer_ridge for kw in ({}, {"readout": "cls"}, {"augment": "flips"})] \
        == [True, False, False]
    with pytest.raises(ValueError, match="--prefer-ridge: expected true, false or None"):
        RunConfig(prefer_ridge="yes")
    with pytest.raises(ValueError, match="linear_base: needs a readout"):
        ViTConfig(linear_base=True, readout="pool")
    m = _model(linear_base=False)
    with pytest.raises(ValueError, match="built without a linear base"):
        m.set_linear_base(torch.zeros(2, 2, 16, 16), torch.zeros(2))
    with pytest.raises(ValueError, match=r"weight: expected shape \(2, 2, 16, 16\)"):
        _model().set_linear_base(torch.zeros(2, 16, 16), torch.zeros(2))
    with pytest.raises(ValueError, match=r"bias: expected 2 finite values"):
        predict_linearly(m, [0], torch.zeros(2, 2, 16, 16), torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match=r"targets: expected output indices in \[0, 2\)"):
        predict_linearly(m, [2], torch.zeros(2, 2, 16, 16), torch.zeros(2))


def test_predict_linearly_replaces_only_the_chosen_outputs():
    x, y, tr, va = _data(600)
    m = _model(linear_base=False)
    r = pixel_ridge(x, y, train_index=tr, val_index=va)
    torch.manual_seed(7)
    new = predict_linearly(m, [0], r["weight"], r["bias"])
    after = torch.rand(3)
    torch.manual_seed(7)
    torch.testing.assert_close(after, torch.rand(3))  # the global random stream did not move
    xt = torch.as_tensor(x)
    with torch.no_grad():
        a, b = m(xt).numpy(), new(xt).numpy()
    ridge, _ = ridge_select(x, y, train=tr, val=va)
    np.testing.assert_allclose(b[:, 0], ridge[:, 0], atol=1e-4)  # output 0 is ridge, nothing else
    np.testing.assert_array_equal(b[:, 1], a[:, 1])
    np.testing.assert_allclose(r["val_pred"], ridge[va], atol=1e-8)
