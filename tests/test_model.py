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
