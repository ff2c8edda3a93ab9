"""Mixed precision check: attention-family maps under bf16 autocast against fp32.

``--precision bf16-mixed`` runs the model under ``torch.autocast(dtype=torch.bfloat16)``
(matrix products in bf16, softmax and reductions in fp32). bf16 keeps 8 bits of mantissa,
so attention weights move by up to about 1/256 of their value per product; what matters is
whether the *maps* keep their shape. `bf16_attention_check` explains the same patches in
fp32 and under autocast and reports, per method, the largest difference relative to each
map's own range and the lowest Spearman correlation between the two maps of a point.
`BF16_TOLERANCE` is the bound we state and test (docs/scale.md): it holds on CPU, where
torch's autocast supports bf16 too; GPU figures were not measured (no GPU in that task).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..evaluate._tokens import row_spearman
from ..explain import ATTENTION_FAMILY
from .explain import explain_batch

# stated bound for a trained model: |bf16 - fp32| / (max - min of the point's fp32 map), at
# most 0.10 at any pixel and 0.03 on average over points, and the token ranking kept
# (Spearman >= 0.95 for every point). An untrained model's maps are nearly flat, so their
# range is tiny and the relative error large; check trained models.
BF16_TOLERANCE = {"max_rel_err": 0.10, "mean_rel_err": 0.03, "min_spearman": 0.95}


def bf16_attention_check(model: torch.nn.Module, x: torch.Tensor, *, device: str = "cpu",
                         methods: Sequence[str] = ATTENTION_FAMILY, targets: Sequence[int] = (0,),
                         tolerance: dict | None = None) -> dict:
    """Compare attention-family maps of `x` (B, C, w, w) under bf16 autocast with fp32.

    Returns:
        ``{method: {"max_rel_err", "mean_rel_err", "min_spearman", "ok"}}`` and ``"ok"``
        (all methods within `tolerance`, default `BF16_TOLERANCE`) and ``"tolerance"``.
    """
    tol = dict(BF16_TOLERANCE if tolerance is None else tolerance)
    model = model.to(device).eval()
    x = x.to(device)
    names = [str(t) for t in targets]
    ref = explain_batch(model, x, methods=methods, targets=targets, target_names=names)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        low = explain_batch(model, x, methods=methods, targets=targets, target_names=names)
    out: dict = {}
    for m in methods:
        rel, rho = [], []
        for t in names:
            a, b = ref[m][t].reshape(len(x), -1), low[m][t].reshape(len(x), -1)
            span = np.maximum(a.max(1) - a.min(1), 1e-12)
            rel.append(np.abs(a - b).max(1) / span)
            p = model.cfg.patch
            # one value per token (maps repeat a token's score over its p x p pixels)
            ta, tb = ref[m][t][:, ::p, ::p].reshape(len(x), -1), low[m][t][:, ::p, ::p].reshape(len(x), -1)
            rho.append(np.where(np.ptp(ta, axis=1) > 0, row_spearman(ta, tb), 1.0))  # a flat map: nothing to reorder
        rel, rho = np.concatenate(rel), np.concatenate(rho)
        out[m] = {"max_rel_err": float(rel.max()), "mean_rel_err": float(rel.mean()),
                  "min_spearman": float(np.nanmin(rho)),
                  "ok": bool(rel.max() <= tol["max_rel_err"] and rel.mean() <= tol["mean_rel_err"]
                             and np.nanmin(rho) >= tol["min_spearman"])}
    out["ok"] = all(out[m]["ok"] for m in methods)
    out["tolerance"] = tol
    return out
