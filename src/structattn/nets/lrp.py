"""AttnLRP's propagation rules as modified gradients (Achtibat et al., ICML 2024).

Layer-wise relevance propagation written in the "gradient x input" form: the forward pass is
unchanged, and each rule only changes what flows backward, so that ``x * d̃y/dx`` (with the
modified gradient ``d̃``) is the relevance of ``x``. A plain linear layer needs nothing: its
gradient x input *is* the ε-LRP rule with ε = 0 (its bias absorbs its share). The ViT's
``forward(x, lrp=...)`` uses these helpers; `structattn.explain.attnlrp` reads the result.

Rules (paper equation numbers):
- element-wise activations (GELU): identity rule (eq. 9), relevance passes unchanged:
  the backward multiplies by ``act(x) / x`` instead of ``act'(x)`` (`identity_rule`).
- LayerNorm: identity rule on the division by the standard deviation (Prop. 3.4): the std is
  detached, so ``(x - mean) / std`` is linear in ``x`` for the backward pass (`layer_norm`).
- softmax: the Taylor decomposition at ``x`` with bias (Prop. 3.1),
  ``R_i = x_i (R_i' - s_i Σ_j R_j')``, which is exactly what plain autograd gives in this form;
  the bias term absorbs some relevance (so AttnLRP is not exactly conservative through softmax).
- matrix products of two inputs (``q kᵀ`` and ``A v``): uniform rule (eq. 7, Prop. 3.3), each
  operand gets half: the gradient reaching ``v`` is halved and that reaching ``q`` and ``k`` is
  quartered (half at ``A v``, half again at ``q kᵀ``) (`divide_gradient`).
- CP-LRP (Ali et al. 2022, lxt's default inside ViT attention): no relevance through the
  attention weights at all, ``q`` and ``k`` detached and ``A v`` treated as linear in ``v``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function

RULES = ("attnlrp", "cp")  # attention rules: AttnLRP (softmax + uniform), CP-LRP (weights held constant)


class _IdentityRule(Function):
    """``fn(x)`` forward; backward multiplies by ``fn(x) / x`` (relevance passes unchanged)."""

    @staticmethod
    def forward(ctx, fn, x, eps):  # noqa: D102
        y = fn(x)
        # the sign of x keeps the ratio's sign right when eps meets a tiny negative x
        ctx.save_for_backward(y / (x + eps * torch.where(x >= 0, 1.0, -1.0)))
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (ratio,) = ctx.saved_tensors
        return None, grad * ratio, None


class _DivideGradient(Function):
    """Identity forward; backward divides the gradient by ``factor`` (the uniform rule)."""

    @staticmethod
    def forward(ctx, x, factor):  # noqa: D102
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad / ctx.factor, None


def identity_rule(fn, x: torch.Tensor, *, eps: float = 1e-10) -> torch.Tensor:
    """``fn(x)`` whose backward passes relevance unchanged (AttnLRP eq. 9, for GELU etc.)."""
    return _IdentityRule.apply(fn, x, eps)


def divide_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged; its gradient divided by ``factor`` (the uniform rule's split)."""
    return _DivideGradient.apply(x, factor)


def layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``ln(x)`` with the standard deviation detached (identity rule on the normalisation).

    The forward value equals ``ln(x)`` to float rounding (same biased variance and eps).
    """
    mean = x.mean(-1, keepdim=True)
    std = (x.var(-1, keepdim=True, unbiased=False) + ln.eps).sqrt()
    y = (x - mean) / std.detach()
    if ln.weight is not None:
        y = y * ln.weight
    if ln.bias is not None:
        y = y + ln.bias
    return y


def check_rule(rule: str | None) -> None:
    if rule is not None and rule not in RULES:
        raise ValueError(f"lrp: expected None or one of {RULES}, got {rule!r}")
