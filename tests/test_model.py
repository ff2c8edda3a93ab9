import numpy as np
import pytest
import torch

from structattn.explain import AttentionExplainer, tokens_to_pixels
from structattn.nets import ViTConfig, ViTRegressor
from structattn.train.split import spatial_block_split


def test_fused_and_explicit_attention_give_the_same_output():
    torch.manual_seed(0)
    model = ViTRegressor(ViTConfig(in_channels=3, window=16, patch=4, dim=32, depth=3, heads=4, n_outputs=2)).eval()
    x = torch.randn(6, 3, 16, 16)
    fused = model(x)
    explicit, weights = model(x, return_attention=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    assert len(weights) == 3 and weights[0].shape == (6, 4, 17, 17)
    torch.testing.assert_close(weights[-1].sum(-1), torch.ones(6, 4, 17))


def test_positional_bias_acts_the_same_in_fused_and_explicit_paths():
    torch.manual_seed(0)
    model = ViTRegressor(ViTConfig(in_channels=2, window=16, patch=4, dim=32, depth=2, heads=4, pos_bias=True)).eval()
    x = torch.randn(5, 2, 16, 16)
    before = model(x)
    with torch.no_grad():
        model.blocks[0].attn.bias[:, 0, 5] = 30.0  # every head's [CLS] looks at token 5 (patch token 4)
    fused = model(x)
    explicit, weights = model(x, return_attention=True)
    assert not torch.allclose(before, fused)  # the bias is used by the fused path
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    assert (weights[0][:, :, 0, 5] > 0.99).all()  # and shows in the attention weights


def test_locality_self_attention_masks_the_diagonal_in_both_paths():
    # ViTConfig.lsa (Lee et al. 2021): no token attends to itself, and the learned temperature acts in
    # the fused path exactly as in the explicit one that the explainers read
    torch.manual_seed(0)
    model = ViTRegressor(ViTConfig(in_channels=2, window=16, patch=4, dim=32, depth=2, heads=4, lsa=True)).eval()
    x = torch.randn(5, 2, 16, 16)
    with torch.no_grad():
        model.blocks[1].attn.log_temp[2] = 1.5  # one head much sharper
    fused = model(x)
    explicit, weights = model(x, return_attention=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    for w in weights:
        assert float(w.detach().diagonal(dim1=-2, dim2=-1).abs().max()) == 0.0
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w[..., 0]))
    plain = ViTRegressor(ViTConfig(in_channels=2, window=16, patch=4, dim=32, depth=2, heads=4)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)  # same weights, no mask, no temperature
    assert not torch.allclose(plain(x), fused, atol=1e-4)


def test_pooled_stem_keeps_tokens_local():
    # ViTConfig.stem_pool: the token grid stays 4 px cells, and a token's embedding reads only the
    # pixels within 3 px of its cell (receptive field 10 px), so the explanation maps keep their geometry
    for pool in ("max", "avgmax"):
        torch.manual_seed(0)
        model = ViTRegressor(ViTConfig(in_channels=2, window=32, patch=4, dim=32, depth=2, heads=4, stem=8,
                                       stem_pool=pool)).eval()
        x = torch.randn(1, 2, 32, 32)
        far = x.clone()
        far[..., :, 11:] = torch.randn(1, 2, 32, 21)  # token (row 0, col 1) covers columns 4-7 and reads 1-10
        with torch.no_grad():
            t0, t1 = model.tokens(x), model.tokens(far)
        torch.testing.assert_close(t0[:, 1 + 1], t1[:, 1 + 1])  # [CLS] first, then row-major tokens
        assert not torch.allclose(t0[:, 1 + 2], t1[:, 1 + 2])  # token (0, 2), columns 8-11, reads 5-14
        assert t0.shape == (1, 65, 32)
    for pool in ("avg", "avgmax"):
        for patch in (1, 2, 3, 8):  # any token size gives the same token grid
            m = ViTRegressor(ViTConfig(in_channels=2, window=8 * patch, patch=patch, dim=16, heads=2, stem=4,
                                       stem_pool=pool))
            assert m.tokens(torch.zeros(2, 2, 8 * patch, 8 * patch)).shape == (2, 65, 16)
    # "avgmax" hands the next layer both pools: its embedding reads 2 x 2 x stem channels, and a
    # stem whose first pool's max half is zeroed is the avg stem (the max half then adds nothing)
    torch.manual_seed(1)
    both = ViTRegressor(ViTConfig(in_channels=2, window=16, patch=4, dim=16, heads=2, stem=4, stem_pool="avgmax")).eval()
    avg = ViTRegressor(ViTConfig(in_channels=2, window=16, patch=4, dim=16, heads=2, stem=4, stem_pool="avg")).eval()
    assert both.embed.in_channels == 16 and avg.embed.in_channels == 8
    with torch.no_grad():
        avg.stem[0].load_state_dict(both.stem[0].state_dict())
        avg.stem[3].weight.copy_(both.stem[3].weight[:, :4])  # the avg half of the first pool's channels
        avg.stem[3].bias.copy_(both.stem[3].bias)
        both.stem[3].weight[:, 4:] = 0  # and the max half unread
        avg.embed.weight.copy_(both.embed.weight[:, :8])  # the avg half of the second pool
        avg.embed.bias.copy_(both.embed.bias)
        both.embed.weight[:, 8:] = 0
        x = torch.randn(3, 2, 16, 16)
        torch.testing.assert_close(both.tokens(x)[:, 1:] - both.pos[:, 1:], avg.tokens(x)[:, 1:] - avg.pos[:, 1:])
    with pytest.raises(ValueError, match="stem_pool"):
        ViTConfig(window=32, stem=0, stem_pool="avg")
    with pytest.raises(ValueError, match="stem_pool"):
        ViTConfig(window=32, stem_pool="mean")


def test_attention_map_is_cls_row_upsampled():
    torch.manual_seed(0)
    model = ViTRegressor(ViTConfig(in_channels=1, window=8, patch=4, dim=16, depth=2, heads=2)).eval()
    x = torch.randn(3, 1, 8, 8)
    _, w = model(x, return_attention=True)
    cls = w[-1][:, :, 0, 1:].mean(1)  # head mean over the 4 tokens
    manual = torch.stack([(w[-1][:, h, 0, 1:] / w[-1][:, h, 0, 1:].sum(-1, keepdim=True)) for h in range(2)], 1).mean(1)
    m = AttentionExplainer(model).attribute(x)
    assert m.shape == (3, 8, 8)
    torch.testing.assert_close(m[:, :4, :4], manual[:, 0, None, None].expand(3, 4, 4))
    torch.testing.assert_close(m[:, 4:, 4:], manual[:, 3, None, None].expand(3, 4, 4))
    assert torch.allclose(cls.argmax(-1), manual.argmax(-1))
    single = AttentionExplainer(model, head=1).attribute(x)
    assert not torch.allclose(single, m)
    with pytest.raises(ValueError, match="head"):
        AttentionExplainer(model, head=5)


def test_tokens_to_pixels_is_exact_repeat():
    t = torch.arange(4.0).reshape(1, 4)
    out = tokens_to_pixels(t, patch=2)
    assert out.shape == (1, 4, 4) and out[0, 3, 3] == 3 and out[0, 0, 1] == 0 and out[0, 2, 1] == 2


def test_vit_rejects_wrong_input_shape():
    model = ViTRegressor(ViTConfig(in_channels=2, window=8, patch=4))
    with pytest.raises(ValueError, match=r"x: expected \(B, 2, 8, 8\)"):
        model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="window"):
        ViTConfig(window=10, patch=4)


def test_spatial_split_holds_out_whole_blocks():
    rr, cc = np.meshgrid(np.arange(4, 100, 4), np.arange(4, 100, 4), indexing="ij")
    pos = np.stack([rr.ravel(), cc.ravel()], 1).astype(float)
    s = spatial_block_split(pos, shape=(100, 100), blocks=4, buffer=0, seed=0)
    assert len(s.train) + len(s.val) + len(s.test) == len(pos)
    parts = s.labels(len(pos))
    for b in np.unique(s.block_of_point):  # every block entirely in one part
        assert len(np.unique(parts[s.block_of_point == b])) == 1
    s2 = spatial_block_split(pos, shape=(100, 100), blocks=4, buffer=0, seed=0)
    np.testing.assert_array_equal(s.test, s2.test)
    # with a buffer, no training point lies within `buffer` px of a held-out point
    sb = spatial_block_split(pos, shape=(100, 100), blocks=4, buffer=8, seed=0)
    held = pos[np.concatenate([sb.val, sb.test])]
    d = np.abs(pos[sb.train][:, None, :] - held[None]).max(-1).min(1)
    assert d.min() >= 8 - 4  # grid pitch 4: nearest held point is at least one pitch past the buffer edge
    assert len(sb.dropped) > 0


def test_validation_criterion_picks_and_restores_its_best_epoch():
    """Every criterion: the best epoch is the one with the lowest criterion, the returned weights are
    that epoch's (their criterion, recomputed here from the predictions, is the recorded one);
    log_mse is the mean over targets of the log of each target's MSE, capped_mse the mean of each
    MSE capped at the MSE of the training points' mean on the validation points."""
    from structattn.train.trainer import TrainConfig, fit_vit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 1, 16, 16)).astype(np.float32)
    # one target the pixels determine, one they do not (its MSE stays near 1)
    y = np.stack([x[:, 0, 6:10, 2:6].mean((1, 2)) * 4, 2 * rng.normal(size=240)], 1).astype(np.float32)
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=2, heads=2, stem=0, n_outputs=2)
    tr, va = np.arange(180), np.arange(180, 240)
    mse0 = ((y[va] - y[tr].mean(0)) ** 2).mean(0)  # the training mean's validation MSE
    assert mse0[1] > 2.0  # unstandardised targets: the cap is each target's own, not 1

    def score(mse, crit):
        return {"log_mse": np.log(mse).mean(), "mse": mse.mean(), "capped_mse": np.minimum(mse, mse0).mean()}[crit]

    for crit in ("mse", "log_mse", "capped_mse"):
        model, hist = fit_vit(x, y, train_index=tr, val_index=va, vit=cfg,
                              train=TrainConfig(epochs=5, warmup=1, progress=False, criterion=crit))
        assert hist["criterion"] == crit
        for e in hist["epochs"]:
            mse = np.asarray(e["val_mse"])
            assert len(mse) == 2
            assert np.asarray(e["val_mse0"]) == pytest.approx(mse0, rel=1e-5)
            ref = score(mse, crit)
            assert e["val_score"] == pytest.approx(ref, rel=1e-5, abs=1e-6)
            assert mse.mean() == pytest.approx(e["val_loss"], rel=1e-4)  # the old loss is the plain mean
        assert hist["best_epoch"] == int(np.argmin([e["val_score"] for e in hist["epochs"]]))
        with torch.no_grad():
            mse = ((model(torch.as_tensor(x[va])).numpy() - y[va]) ** 2).mean(0)
        ref = score(mse, crit)
        assert ref == pytest.approx(hist["best_val_score"], rel=1e-4, abs=1e-5)


def test_capped_mse_ignores_a_target_worse_than_the_mean():
    """capped_mse: while a target's MSE is above its training mean's, its changes do not move the
    criterion (it cannot decide when the others stop); below the cap it counts as under mse."""
    from structattn.train.trainer import validation_score

    mse0 = torch.tensor([1.0, 1.2])
    a = validation_score(torch.tensor([0.30, 1.5]), "capped_mse", mse0)
    b = validation_score(torch.tensor([0.30, 2.5]), "capped_mse", mse0)
    assert a == b == pytest.approx((0.30 + 1.2) / 2)
    assert validation_score(torch.tensor([0.30, 0.9]), "capped_mse", mse0) == pytest.approx(0.6)
    # the earlier epoch with the better learned target wins, whatever the unlearnable one does
    assert validation_score(torch.tensor([0.25, 2.5]), "capped_mse", mse0) < a
    assert validation_score(torch.tensor([0.25, 2.5]), "mse") > validation_score(torch.tensor([0.30, 1.5]), "mse")
    with pytest.raises(ValueError, match="capped_mse: .*mse0"):
        validation_score(torch.tensor([0.3]), "capped_mse")


def _stop_index(rows, patience):
    """Replay: index of the epoch at which every row's column has gone `patience` epochs without a strict
    improvement (one column: Lightning's EarlyStopping), or the last index."""
    rows = np.asarray(rows, np.float64).reshape(len(rows), -1)
    best, since = np.full(rows.shape[1], np.inf), np.zeros(rows.shape[1], int)
    for i, r in enumerate(rows):
        since = np.where(r < best, 0, since + 1)
        best = np.minimum(best, r)
        if (since >= patience).all():
            return i
    return len(rows) - 1


def _learnable_and_noise():
    """240 random 16 px patches; a target the pixels determine, and noise whose validation MSE rises as it is
    over-fitted; a 2-block ViT; 180 training and 60 validation points."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 1, 16, 16)).astype(np.float32)
    y = np.stack([x[:, 0, 6:10, 2:6].mean((1, 2)) * 4, rng.normal(size=240)], 1).astype(np.float32)
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=2, heads=2, stem=0, n_outputs=2)
    return x, y, cfg, np.arange(180), np.arange(180, 240)


def test_stopping_targets_waits_for_every_target_and_changes_nothing_else():
    """--stopping targets: training ends at the first epoch at which no target's own validation MSE has improved
    for `patience` epochs (recomputed here from the recorded MSEs), where --stopping criterion ends on the
    criterion's patience; both follow the same trajectory (same seed), and the best epoch is the criterion's."""
    from structattn.pipeline import RunConfig
    from structattn.train.trainer import TrainConfig, describe_training, fit_vit

    x, y, cfg, tr, va = _learnable_and_noise()
    hist = {}
    for stop in ("criterion", "targets"):
        _, hist[stop] = fit_vit(x, y, train_index=tr, val_index=va, vit=cfg,
                                train=TrainConfig(epochs=30, warmup=1, patience=3, progress=False, stopping=stop))
        assert hist[stop]["stopping"] == stop
    crit, targ = hist["criterion"]["epochs"], hist["targets"]["epochs"]
    assert len(crit) - 1 == _stop_index([e["val_score"] for e in crit], 3)
    assert len(targ) - 1 == _stop_index([e["val_mse"] for e in targ], 3)
    assert len(targ) > len(crit)  # here the noise target ends training under the criterion, not under targets
    for a, b in zip(crit, targ):  # the stopping rule does not touch the training itself
        assert a["val_mse"] == pytest.approx(b["val_mse"], rel=1e-6)
    scores = [e["val_score"] for e in targ]
    assert hist["targets"]["best_epoch"] == int(np.argmin(scores))
    assert any("--stopping targets" in line for line in describe_training(hist["targets"], ["a", "noise"]))
    with pytest.raises(ValueError, match="--stopping: expected one of .*got 'never'"):
        RunConfig(source="synthetic", stopping="never")


def test_stopping_targets_resumes_where_it_was_killed(tmp_path, monkeypatch):
    """A fit with --stopping targets killed one epoch before it would stop, then resumed from its checkpoint,
    stops at the same epoch with the same history: the per-target counters travel in the checkpoint (were they
    reset, the resumed fit would run at least `patience` epochs more)."""
    from structattn.train import trainer as tm

    x, y, cfg, tr, va = _learnable_and_noise()
    tcfg = tm.TrainConfig(epochs=30, warmup=1, patience=3, progress=False, stopping="targets")
    _, whole = tm.fit_vit(x, y, train_index=tr, val_index=va, vit=cfg, train=tcfg)
    assert whole["stopped_epoch"] < 29  # it stops by the rule, not at the last epoch
    kill_at = whole["stopped_epoch"] - 1

    class Killed(Exception):
        pass

    seen = tm._TargetsStop.on_validation_end

    def killing(self, trainer, pl_module):
        seen(self, trainer, pl_module)
        if trainer.current_epoch == kill_at:
            raise Killed

    monkeypatch.setattr(tm._TargetsStop, "on_validation_end", killing)
    with pytest.raises(Killed):
        tm.fit_vit(x, y, train_index=tr, val_index=va, vit=cfg, train=tcfg, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    _, resumed = tm.fit_vit(x, y, train_index=tr, val_index=va, vit=cfg, train=tcfg, checkpoint_dir=tmp_path)
    assert resumed["stopped_epoch"] == whole["stopped_epoch"] and resumed["best_epoch"] == whole["best_epoch"]
    np.testing.assert_allclose([e["val_mse"] for e in resumed["epochs"]], [e["val_mse"] for e in whole["epochs"]], rtol=1e-6)


def test_unknown_criterion_is_named():
    from structattn.pipeline import RunConfig
    from structattn.train.trainer import TrainConfig, fit_vit

    with pytest.raises(ValueError, match="--criterion: expected one of"):
        RunConfig(source="synthetic", criterion="r2")
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=1, heads=2, stem=0, n_outputs=1)
    x, y = np.zeros((8, 1, 16, 16), np.float32), np.zeros((8, 1), np.float32)
    with pytest.raises(ValueError, match="criterion: expected one of .*got 'r2'"):
        fit_vit(x, y, train_index=np.arange(4), val_index=np.arange(4, 8), vit=cfg,
                train=TrainConfig(epochs=1, progress=False, criterion="r2"))


def test_target_patience_freezes_each_target_on_its_own_validation_mse():
    """A target's loss term is out while its own validation MSE has not improved for `target_patience`
    epochs (recomputed here from the recorded MSEs), a frozen term contributes neither loss nor
    gradient, training stops once every term is frozen, and the per-target state travels in
    checkpoints."""
    from structattn.train.trainer import RegressionModule, TrainConfig, fit_vit, frozen_from

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 1, 16, 16)).astype(np.float32)
    y = rng.normal(size=(200, 2)).astype(np.float32)  # two targets the pixels do not determine
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=1, heads=2, stem=0, n_outputs=2)
    tp = 2
    _, hist = fit_vit(x, y, train_index=np.arange(150), val_index=np.arange(150, 200), vit=cfg,
                      train=TrainConfig(epochs=40, warmup=1, patience=100, progress=False, target_patience=tp))
    best, since = [np.inf, np.inf], [0, 0]
    for e in hist["epochs"]:  # the rule, recomputed from the history
        for j, m in enumerate(e["val_mse"]):
            best[j], since[j] = (m, 0) if m < best[j] else (best[j], since[j] + 1)
        assert e["frozen"] == [s >= tp for s in since]
    # training ended with the first epoch at which both terms were out (early stopping's patience is 100)
    last = hist["epochs"][-1]
    assert last["frozen"] == [True, True] and not any(all(e["frozen"]) for e in hist["epochs"][:-1]) and last["epoch"] < 39
    assert hist["frozen_from"] == frozen_from(hist["epochs"]) and max(hist["frozen_from"]) == last["epoch"]
    assert frozen_from([{"epoch": 0, "frozen": [True, False]}, {"epoch": 1, "frozen": [False, True]},
                        {"epoch": 2, "frozen": [True, True]}]) == [2, 1]
    assert frozen_from([{"epoch": 0, "frozen": [True, True]}, {"epoch": 1, "frozen": [True, False]}]) == [0, None]

    module = RegressionModule(ViTRegressor(cfg), TrainConfig(target_patience=tp, progress=False))
    module.target_best, module.target_since = [0.5, 0.9], [0, tp]  # the second term is frozen
    module.on_train_epoch_start()
    module.model.eval()  # no dropout, so the loss can be recomputed below
    xb = torch.as_tensor(x[:16])
    yb = torch.as_tensor(y[:16]).clone().requires_grad_(True)
    loss = module.training_step((xb, yb), 0)
    with torch.no_grad():
        pred = module.model(xb)
    assert float(loss) == pytest.approx(float(((pred[:, 0] - yb[:, 0]) ** 2).mean()) / 2, rel=1e-5)
    loss.backward()
    assert yb.grad[:, 1].abs().max() == 0 and yb.grad[:, 0].abs().max() > 0

    ck: dict = {}
    module.on_save_checkpoint(ck)
    again = RegressionModule(ViTRegressor(cfg), TrainConfig(target_patience=tp, progress=False))
    again.on_load_checkpoint(ck)
    assert (again.target_best, again.target_since, again.frozen) == ([0.5, 0.9], [0, tp], [False, True])


def test_bad_target_patience_is_named():
    from structattn.pipeline import RunConfig
    from structattn.train.trainer import TrainConfig, fit_vit

    with pytest.raises(ValueError, match="--target-patience: expected a number of epochs >= 0"):
        RunConfig(source="synthetic", target_patience=-1)
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=1, heads=2, stem=0, n_outputs=1)
    x, y = np.zeros((8, 1, 16, 16), np.float32), np.zeros((8, 1), np.float32)
    with pytest.raises(ValueError, match="target_patience: expected .*got 2.5"):
        fit_vit(x, y, train_index=np.arange(4), val_index=np.arange(4, 8), vit=cfg,
                train=TrainConfig(epochs=1, progress=False, target_patience=2.5))


def test_ema_keeps_and_validates_the_moving_average():
    """--ema: after each step the average moves by (1 - decay) toward the weights (the first update
    copies them); validation scores the average, so the weights returned reproduce the best epoch's
    recorded validation loss, and differ from a run without it; the module still pickles (ddp_spawn)."""
    import pickle

    from structattn.train.trainer import RegressionModule, TrainConfig, fit_vit

    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=1, heads=2, stem=0, n_outputs=1)
    torch.manual_seed(0)
    module = RegressionModule(ViTRegressor(cfg), TrainConfig(ema=0.75, progress=False))
    params = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    module.on_train_batch_end(None, None, 0)  # first update: a copy
    assert torch.equal(params(module.evaluated), params(module.model))
    before = params(module.evaluated)
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(2.0)
    module.on_train_batch_end(None, None, 1)
    assert torch.allclose(params(module.evaluated), 0.75 * before + 0.25 * params(module.model), atol=1e-6)
    assert not any(p.requires_grad for p in module.ema.parameters())
    again = pickle.loads(pickle.dumps(module))
    assert torch.equal(params(again.evaluated), params(module.evaluated)) and again.ema.multi_avg_fn.decay == 0.75

    rng = np.random.default_rng(2)
    x = rng.normal(size=(240, 1, 16, 16)).astype(np.float32)
    y = (x[:, :, 4:8, 4:8].mean((1, 2, 3)) * 4)[:, None].astype(np.float32)
    tr, va = np.arange(180), np.arange(180, 240)
    fits = {}
    for ema in (0.0, 0.9):
        model, hist = fit_vit(x, y, train_index=tr, val_index=va, vit=cfg,
                              train=TrainConfig(epochs=8, warmup=1, progress=False, ema=ema))
        with torch.no_grad():
            mse = float(((model(torch.as_tensor(x[va])) - torch.as_tensor(y[va])) ** 2).mean())
        assert mse == pytest.approx(hist["best_val_loss"], rel=1e-4)  # the kept weights are the validated ones
        fits[ema] = params(model)
    assert not torch.allclose(fits[0.0], fits[0.9])


def test_bad_ema_is_named():
    from structattn.pipeline import RunConfig
    from structattn.train.trainer import TrainConfig, fit_vit

    with pytest.raises(ValueError, match=r"--ema: expected a decay in \[0, 1\) .*got 1.0"):
        RunConfig(source="synthetic", ema=1.0)
    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=1, heads=2, stem=0, n_outputs=1)
    x, y = np.zeros((8, 1, 16, 16), np.float32), np.zeros((8, 1), np.float32)
    with pytest.raises(ValueError, match=r"ema: expected a decay in \[0, 1\) .*got -0.5"):
        fit_vit(x, y, train_index=np.arange(4), val_index=np.arange(4, 8), vit=cfg,
                train=TrainConfig(epochs=1, progress=False, ema=-0.5))


def test_sam_step_is_foret_et_al_algorithm_1():
    """TrainConfig.sam: the base optimiser steps with the gradient taken at w + rho g / ||g||, the
    weights come back to w first, and a checkpoint holds the base's state (AdamW's moments)."""
    from structattn.train.trainer import SAM

    a = torch.tensor([[2.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
    b = torch.tensor([1.0, -2.0, 0.5])
    loss_fn = lambda w: 0.5 * ((a @ w - b) ** 2).sum()  # noqa: E731
    grad = lambda w: a.T @ (a @ w - b)  # noqa: E731
    w0, rho, lr = torch.tensor([0.3, -0.7]), 0.2, 0.1
    w = torch.nn.Parameter(w0.clone())
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr)

    def closure():
        opt.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss

    loss = opt.step(closure)
    g1 = grad(w0)
    expected = w0 - lr * grad(w0 + rho * g1 / g1.norm())
    torch.testing.assert_close(w.detach(), expected)
    assert float(loss.detach()) == pytest.approx(float(loss_fn(w0).detach()))  # the loss reported is at w, not w + e
    assert not torch.allclose(expected, w0 - lr * g1)  # the perturbation matters here
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    adam = SAM([w], torch.optim.AdamW, rho=rho, lr=lr)
    adam.step(closure)
    state = adam.state_dict()["state"][0]
    assert set(state) >= {"exp_avg", "exp_avg_sq"}


def test_sam_trains_through_lightning_with_two_passes_a_step():
    from structattn.train.trainer import TrainConfig, fit_model, fit_vit

    cfg = ViTConfig(in_channels=1, window=16, patch=4, dim=32, depth=1, heads=2, stem=0, n_outputs=1)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(160, 1, 16, 16)).astype(np.float32)
    y = (x[:, :, 4:8, 4:8].mean((1, 2, 3)) * 4)[:, None].astype(np.float32)
    fits, losses = {}, {}
    for sam in (0.0, 0.05):
        torch.manual_seed(0)
        model = ViTRegressor(cfg)
        calls = []
        model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])) if m.training else None)
        model, hist = fit_model(model, x, y, train_index=np.arange(128), val_index=np.arange(128, 160),
                                train=TrainConfig(epochs=2, warmup=1, batch_size=32, progress=False, sam=sam))
        assert sum(calls) == (2 if sam else 1) * 2 * 128  # SAM: two forward passes of every batch
        fits[sam] = torch.cat([p.detach().flatten() for p in model.parameters()])
        losses[sam] = [e["train_loss"] for e in hist["epochs"]]
    assert not torch.allclose(fits[0.0], fits[0.05])
    assert losses[0.05][0] == pytest.approx(losses[0.0][0], rel=0.2)  # first-pass losses only (same scale)
    with pytest.raises(ValueError, match=r"sam: expected a finite radius rho >= 0 .*got -0.1"):
        fit_vit(x, y, train_index=np.arange(4), val_index=np.arange(4, 8), vit=cfg,
                train=TrainConfig(epochs=1, progress=False, sam=-0.1))
