"""A tiny ViT trained in seconds on a task whose causal tokens are known (shared by the
explanation tests; cached so every test file trains it at most once per session)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from structattn.nets.vit import ViTConfig, ViTRegressor

WINDOW, PATCH = 16, 4
GRID = WINDOW // PATCH
# Causal tokens: a 2x2 block in the top-left corner (off-centre on purpose, so the
# centre prior cannot find it). Output 0 reads them; output 1 reads the bottom-right token.
REGION0 = [0, 1, GRID, GRID + 1]
REGION1 = [GRID * GRID - 1]


def toy_batch(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 16, 16) patches of constant-valued tokens + pixel noise, (n, 2) targets."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, GRID * GRID, generator=g)
    x = v.reshape(n, 1, GRID, GRID).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
    x = x + 0.1 * torch.randn(x.shape, generator=g)
    y = torch.stack([v[:, REGION0].sum(1) / 2, v[:, REGION1[0]]], dim=1)
    return x, y


def region_masks(n: int, region: list[int]) -> np.ndarray:
    """(n, 16, 16) bool pixel masks of the causal tokens."""
    tok = np.zeros(GRID * GRID, bool)
    tok[region] = True
    m = tok.reshape(GRID, GRID).repeat(PATCH, 0).repeat(PATCH, 1)
    return np.broadcast_to(m, (n, WINDOW, WINDOW)).copy()


@functools.lru_cache(maxsize=1)
def trained_toy() -> ViTRegressor:
    """~600 Adam steps (a few seconds on 1 CPU core); R² well above 0.9 on both outputs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add contention on a shared machine
    torch.manual_seed(0)
    # stem=0: the explainer tests need a model whose tokens are exactly their sub-patches
    cfg = ViTConfig(in_channels=1, window=WINDOW, patch=PATCH, dim=32, depth=2, heads=2, dropout=0.0, n_outputs=2,
                    stem=0)
    model = ViTRegressor(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = toy_batch(4096, seed=1)
    for step in range(600):
        idx = torch.randint(0, len(x), (128,))
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()
