"""SHAP values over tokens through the `shap` library (Permutation explainer).

Features are the ``g x g`` tokens. A coalition ``z ∈ {0,1}^{g·g}`` keeps the tokens with
``z = 1`` and replaces the others by the baseline value (default 0 = the training-mean patch
after per-channel standardisation, the same baseline as IG, occlusion and the deletion
curves). `shap.maskers.Independent` with an all-zeros background over the token indicators
implements exactly this, so ``sum(values) = f(x) - f(baseline)`` (additivity; the
Permutation explainer satisfies it exactly for every permutation it samples).

Why Permutation and not DeepExplainer/GradientExplainer: DeepExplainer's DeepLIFT rules
break their own additivity on LayerNorm/GELU/softmax models (shap warns and the sums drift),
and model-agnostic masking gives the "ground-truth" Shapley estimate the paper compares
attention against. Why not Partition: its Owen values depend on a feature hierarchy we
would have to invent for tokens; Permutation needs none and converges to plain Shapley.
"""

from __future__ import annotations

import numpy as np
import shap
import torch
from torch import nn

from .base import Explainer, tokens_to_pixels


class ShapExplainer(Explainer):
    """Permutation SHAP over tokens, one `shap.PermutationExplainer` call per point.

    Args:
        model: a `ViTRegressor` (anything with ``cfg.patch`` mapping (B,C,w,w) -> (B,K)).
        max_evals: model evaluations per point; must be ≥ 2·g² + 1 (one antithetic
            permutation). None: 4 permutations, ``4·(2·g² + 1)`` (516 for an 8x8 grid).
        baseline: value masked tokens take (0 = training mean after standardisation).
        seed: seeds the permutations (numpy's global RNG is restored afterwards).
        batch_size: masked copies per model forward.

    Example:
        >>> from structattn.nets.vit import ViTConfig, ViTRegressor
        >>> m = ViTRegressor(ViTConfig(in_channels=1, window=8, patch=4))
        >>> ShapExplainer(m).attribute(torch.rand(1, 1, 8, 8), target=0).shape
        torch.Size([1, 8, 8])
    """

    name = "shap"
    needs_target = True

    def __init__(
        self,
        model: nn.Module,
        *,
        max_evals: int | None = None,
        baseline: float = 0.0,
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        super().__init__(model)
        m = model.cfg.grid**2
        self.max_evals = 4 * (2 * m + 1) if max_evals is None else max_evals
        if not isinstance(self.max_evals, int) or self.max_evals < 2 * m + 1:
            raise ValueError(f"max_evals: expected an integer >= 2*tokens+1 = {2 * m + 1}, got {max_evals!r}")
        self.baseline, self.seed, self.batch_size = float(baseline), seed, batch_size
        self.last_base_values: np.ndarray | None = None  # (B,) f(baseline) of the last call

    def _attribute(self, patches: torch.Tensor, *, target: int | None) -> torch.Tensor:
        p, g = self.model.cfg.patch, self.model.cfg.grid
        m = g * g
        masker = shap.maskers.Independent(np.zeros((1, m)), max_samples=1)
        out, base = [], []
        state = np.random.get_state()  # shap shuffles with numpy's global RNG
        try:
            for x in patches:
                def f(z: np.ndarray, x=x) -> np.ndarray:
                    # z (n, g*g) token indicators -> (n,) output k of the masked patches
                    keep = torch.as_tensor(z, dtype=x.dtype).reshape(-1, 1, g, g)
                    keep = keep.repeat_interleave(p, 2).repeat_interleave(p, 3)
                    xm = self.baseline + keep * (x[None] - self.baseline)
                    with torch.no_grad():
                        return self.model(xm)[:, target].double().numpy()

                # shap re-seeds numpy's global RNG in its constructor (randomly when seed=None)
                explainer = shap.PermutationExplainer(f, masker, seed=self.seed)
                ex = explainer(np.ones((1, m)), max_evals=self.max_evals, batch_size=self.batch_size, silent=True)
                out.append(np.asarray(ex.values[0], dtype=np.float64))
                base.append(float(np.asarray(ex.base_values).reshape(-1)[0]))
        finally:
            np.random.set_state(state)
        self.last_base_values = np.asarray(base)
        tok = torch.as_tensor(np.stack(out), dtype=torch.float32)  # (B, g*g)
        return tokens_to_pixels(tok, patch=p)
