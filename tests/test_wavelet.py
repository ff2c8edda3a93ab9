"""Wavelet-modulus token features (`structattn.nets.wavelet`, `ViTConfig.wavelets`; round 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn.nets.vit import ViTConfig, ViTRegressor
from structattn.nets.wavelet import KERNEL, WaveletModulus, morlet_bank


def _blob(size: int = 64, seed: int = 0) -> np.ndarray:
    """Random texture tapered to zero well inside the image, so edge handling plays no part."""
    x = np.zeros((size, size))
    core = np.random.default_rng(seed).standard_normal((24, 24))
    x[20:44, 20:44] = core * np.hanning(24)[:, None] * np.hanning(24)[None]
    return x


def test_modulus_matches_kymatios_fft_scattering_filters():
    # Reference: kymatio's own Fourier-domain Morlet filters (the ones its Scattering2D uses), applied by FFT.
    from kymatio.scattering2d.filter_bank import filter_bank

    x = _blob()
    ours = WaveletModulus(1, patch=4).modulus(torch.tensor(x[None, None], dtype=torch.float32))[0, 0].numpy()
    bank = filter_bank(64, 64, 2, 8)["psi"]
    assert len(bank) == len(ours) == 16
    for k, psi in enumerate(bank):
        ref = np.abs(np.fft.ifft2(np.fft.fft2(x) * psi["levels"][0]))
        err = np.linalg.norm(ours[k] - ref) / np.linalg.norm(ref)
        # the finer scale fits inside the 15 px kernel; the coarser loses ~1e-4 of its energy to the cut
        assert err < (1e-3 if psi["j"] == 0 else 0.03), (psi["j"], psi["theta"], err)


def test_orientation_channels_find_the_stripes_direction():
    # kymatio's angle for index t is (L/2 - 1 - t) pi / L along (row, col): t = 3 is a wave along the rows
    # (horizontal stripes), t = 7 along the columns (vertical stripes).
    rr, cc = np.mgrid[:32, :32]
    m = WaveletModulus(1, patch=4)
    for stripes, expect in ((np.cos(0.75 * np.pi * rr), 3), (np.cos(0.75 * np.pi * cc), 7)):
        energy = m.modulus(torch.tensor(stripes[None, None], dtype=torch.float32))[0, 0, :8, 8:24, 8:24].mean((1, 2))
        assert int(energy.argmax()) == expect
        assert energy.max() > 20 * energy[(expect + 4) % 8]  # the orthogonal orientation barely responds


def test_token_features_are_local_and_positively_homogeneous():
    m = WaveletModulus(2, patch=4)
    assert m.out_channels == 2 * (1 + 16)
    x = torch.randn(1, 2, 32, 32, requires_grad=True)
    f = m(x)
    assert f.shape == (1, 34, 8, 8)
    f[0, :, 3, 5].sum().backward()  # the token of cell rows 12..15, cols 20..23
    reach = x.grad[0].abs().sum(0) > 0
    rows, cols = np.nonzero(reach.numpy())
    h = KERNEL // 2
    assert rows.min() >= 12 - h and rows.max() <= 15 + h and cols.min() >= 20 - h and cols.max() <= 23 + h
    # degree-1 homogeneity: gradient x input conserves relevance through it (AttnLRP's stem rule)
    with torch.no_grad():
        torch.testing.assert_close(m(2.5 * x), 2.5 * m(x), rtol=1e-4, atol=1e-5)


def test_vit_with_wavelets_adds_their_embedding_and_nothing_else():
    torch.manual_seed(0)
    cfg = dict(in_channels=2, window=16, patch=4, dim=16, heads=2, stem=4, stem_pool="avg", readout="spatial",
               n_outputs=2)
    wav = ViTRegressor(ViTConfig(**cfg, wavelets=8)).eval()
    plain = ViTRegressor(ViTConfig(**cfg)).eval()
    state = {k: v for k, v in wav.state_dict().items() if not k.startswith("wavelet")}
    plain.load_state_dict(state)
    x = torch.randn(3, 2, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(wav(x), plain(x))
        wav.wavelet_embed.weight.zero_()
        wav.wavelet_embed.bias.zero_()
        torch.testing.assert_close(wav(x), plain(x))
    assert "wavelet.weight" not in wav.state_dict()  # fixed filters are rebuilt from the config, not saved
    with torch.no_grad():  # features held by the caller are its own transform's, else a named error
        torch.testing.assert_close(wav(x, wavelet_features=wav.wavelet(x)), wav(x))
        with pytest.raises(ValueError, match="wavelet_features"):
            wav(x, wavelet_features=wav.wavelet(x)[:2])


def test_bad_wavelets_are_named():
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="wavelets"):
            ViTConfig(window=32, wavelets=bad)
    from structattn.pipeline import RunConfig

    with pytest.raises(ValueError, match="--wavelets"):
        RunConfig(source="synthetic", wavelets=-2)
    with pytest.raises(ValueError, match="size"):
        morlet_bank(2, 8, size=14)
    for kw, name in (({"in_channels": 0, "patch": 4}, "in_channels"), ({"in_channels": 3, "patch": 0}, "patch"),
                     ({"in_channels": 3, "patch": 4, "orientations": 0}, "orientations")):
        with pytest.raises(ValueError, match=name):
            WaveletModulus(**kw)


def test_prefer_ridge_holds_wavelet_ridge_for_an_orientation_rule_and_pixel_ridge_for_a_linear_one(tmp_path):
    # Real PbTiO3 texture, two known rules: amp_corner (linear in the pixels) and wall_direction
    # (mean |dA/dcol| - |dA/drow| over a disk: linear in rectified edge maps, not in the pixels).
    # Round 16c: --prefer-ridge may hold ridge on the pixels and their wavelet moduli, which must beat the ViT.
    from structattn.data.io import load_sample
    from structattn.data.patches import extract_patches
    from structattn.pipeline import choose_ridges, held_ridge, hold_ridge, ridge_candidates
    from structattn.train.split import spatial_block_split
    from structattn.train.trainer import TrainedModel, WaveletRidgeRows, standardise_patches

    from conftest import SHARED_DATA

    texture = SHARED_DATA / "pto_pfm_images" / "PTO_Funakubo0001.h5"
    if not texture.exists():
        pytest.skip(f"shared real data not found at {texture}")
    s = load_sample(f"semisynthetic:image={texture},rules=amp_corner+wall_direction,spacing=6,noise=0.1")
    sp = spatial_block_split(s.positions, shape=s.shape, blocks=4, val_fraction=0.15, test_fraction=0.2, buffer=8,
                             seed=0)
    mean, std = s.image.mean((1, 2)), s.image.std((1, 2))
    x = standardise_patches(extract_patches(s.image, s.positions, window=32), mean, std)
    y = (s.targets - s.targets[sp.train].mean(0)) / s.targets[sp.train].std(0)
    cands = ridge_candidates(x, y, train=sp.train, val=sp.val, wavelets=8, patch=4)
    val = {k: r["val_pred"] for k, r in cands.items()}
    pix, wav = cands["pixels"]["val_r2"], cands["pixels+wavelets"]["val_r2"]
    assert pix[0] > 0.95 and pix[1] < 0.3 < 0.7 < wav[1]
    # a ViT that learned nothing: pixel ridge for the linear rule, wavelet ridge for the orientation rule
    blind = choose_ridges(y[sp.val], np.zeros_like(y[sp.val]), val)
    assert [(c["predicted_by"], c["ridge_features"]) for c in blind] == [("ridge", "pixels"), ("ridge", "pixels+wavelets")]
    # a ViT as good as the wavelet ridge on validation keeps wall_direction: a tie is not enough
    tied = choose_ridges(y[sp.val], val["pixels+wavelets"], val)
    assert tied[1]["predicted_by"] == "vit" and tied[0]["ridge_features"] == "pixels"
    # the held map, in a model, predicts both on the test blocks, and survives save / load
    r = held_ridge(cands, [c["ridge_features"] for c in blind], [0, 1])
    torch.manual_seed(0)
    vit = ViTRegressor(ViTConfig(in_channels=3, window=32, patch=4, dim=16, heads=2, depth=1, stem=4, stem_pool="avg",
                                 readout="spatial", n_outputs=2)).eval()
    held = hold_ridge(vit, r).eval()
    assert held.cfg.linear_base and held.cfg.base_wavelets == 8
    with torch.no_grad():
        pred = held(torch.as_tensor(x[sp.test])).numpy()
    r2 = 1 - ((y[sp.test] - pred) ** 2).sum(0) / ((y[sp.test] - y[sp.test].mean(0)) ** 2).sum(0)
    assert r2[0] > 0.9 and r2[1] > 0.7, r2
    feats = WaveletRidgeRows(x[sp.test], patch=4, orientations=8).take(np.arange(len(sp.test)))
    k = 1  # the wavelet target, written out as the ridge's linear map of pixels and moduli
    lin = feats @ np.concatenate([r["weight"][k].ravel(), r["wavelet_weight"][k].ravel()]) + r["bias"][k]
    np.testing.assert_allclose(pred[:, k], lin, rtol=1e-3, atol=1e-3)
    assert not r["wavelet_weight"][0].any()  # the pixel target reads no moduli
    tm = TrainedModel(model=held, target_names=("amp_corner", "wall_direction"), channel_mean=mean.astype(np.float32),
                      channel_std=std.astype(np.float32), target_mean=np.zeros(2, np.float32),
                      target_std=np.ones(2, np.float32))
    tm.save(tmp_path / "model.pt")
    back = TrainedModel.load(tmp_path / "model.pt")
    with torch.no_grad():
        np.testing.assert_allclose(back.model(torch.as_tensor(x[sp.test])).numpy(), pred, rtol=1e-5, atol=1e-5)


def test_training_with_held_wavelet_features_is_the_same_training():
    # The trainer computes each point's wavelet features once (no trained parameters) instead of in
    # every step; the epochs, losses and weights must be exactly those of computing them in the model,
    # and the held path must be the one taken (the model's transform is not called while training).
    from structattn.train import trainer as T

    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 2, 16, 16)).astype(np.float32)
    y = (np.abs(x[:, 0, :8, 8:]).mean((1, 2)) - x[:, 1, 8:, :8].mean((1, 2)))[:, None].astype(np.float32) * 4
    vit = ViTConfig(in_channels=2, window=16, patch=4, dim=16, depth=1, heads=2, stem=4, stem_pool="avg",
                    wavelets=8, n_outputs=1)
    tc = T.TrainConfig(epochs=3, patience=5, seed=0, progress=False, batch_size=16)
    runs = {}
    for hold in (True, False):
        torch.manual_seed(0)
        model = ViTRegressor(vit)
        calls = []
        model.wavelet.register_forward_hook(lambda *a: calls.append(1))
        fitted, hist = T.fit_model(model, x, y, train_index=np.arange(64), val_index=np.arange(64, 96), train=tc,
                                   hold_features=hold)
        runs[hold] = (fitted.state_dict(), [e["val_loss"] for e in hist["epochs"]], len(calls))
    assert runs[True][1] == runs[False][1]
    for k, v in runs[False][0].items():
        torch.testing.assert_close(runs[True][0][k], v, rtol=0, atol=0)
    assert runs[True][2] == 2  # once for the training points, once for the validation points (< 256 each)
    assert runs[False][2] >= 3 * (64 // 16)  # every training step of every epoch
