"""A small Vision Transformer regressor whose attention can be read out.

Tokens are non-overlapping ``patch x patch`` sub-patches of the ``window x window`` input
(token grid ``g = window // patch``), plus one [CLS] token at index 0 whose final state
feeds a linear head with ``n_outputs`` values (``ViTConfig.readout`` can add a learned
per-output reading of the patch tokens; `ViTRegressor.readout_shares` says how much of each
output every final token state carries, and the attention-family explainers weight by it). By default every block uses PyTorch's fused
``scaled_dot_product_attention``; ``forward(x, return_attention=True)`` switches to an
explicit softmax path that also returns each layer's (B, heads, T, T) weights, kept in the
autograd graph so gradient-weighted explanations can call ``.retain_grad()`` on them.
``forward(x, lrp="attnlrp")`` (or ``"cp"``) computes the same values through the explicit path
with AttnLRP's modified gradients (`structattn.nets.lrp`), so that ``x * d y_k / d x`` is the
layer-wise relevance of every input pixel; the default path is untouched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import lrp as rules
from .wavelet import WaveletModulus, check_orientations


READOUTS = ("cls", "tokens", "spatial", "pool", "spatial_embed")  # ViTConfig.readout; docs/training.md (rounds 5, 9)
STEM_POOLS = ("none", "max", "avg", "avgmax")  # ViTConfig.stem_pool
SPATIAL = ("spatial", "spatial_embed")  # the readouts with a learned per-output weighting of the patch tokens


@dataclass
class ViTConfig:
    """Every architecture option in one place (saved with each trained model)."""

    in_channels: int = 3  # structure channels (amplitude, phase, height, ...)
    window: int = 32  # patch side in pixels; must be a multiple of `patch`
    patch: int = 4  # token side in pixels: 4 px keeps domain walls (2-3 px) inside few tokens
    dim: int = 64  # token width: small data (~1e3 points) wants a small model
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads per block (dim must divide by heads)
    mlp_ratio: float = 2.0  # hidden width of each block's MLP relative to dim
    dropout: float = 0.1  # dropout on MLP and attention outputs; regularises small data
    n_outputs: int = 1  # number of regression targets K
    stem: int = 16  # channels of a 2-layer 3x3 conv stem before tokenising; 0 = linear patch embedding
    pos_bias: bool = False  # learned (heads, T, T) additive attention bias per block: where-based attention
    # Locality self-attention (Lee, Lee & Song 2021, "Vision Transformer for Small-Size Datasets"): a learned
    # temperature per head and block, and no token attends to itself (diagonal masked), which sharpens
    # attention onto other tokens; docs/training.md, round 13.
    lsa: bool = False
    # A hybrid stem (STEM_POOLS; the CNN baseline's first two blocks): 3x3 conv (stem ch.), GELU, pool by a,
    # 3x3 conv (2 x stem ch.), GELU, pool by patch / a (a = 2 for an even patch, else 1), then a 1x1 token
    # embedding; "max", "avg" or "avgmax" pooling, "none" for the plain stem. Tokens stay the patch cells of the same
    # grid (with patch 4 each reads 3 px around its cell); docs/training.md, rounds 13 and 13b. "avgmax"
    # concatenates both pools' channels at each pooling (so the second conv has 2 x 2 x stem inputs and
    # the embedding 4 x stem); round 14.
    stem_pool: str = "none"
    # Wavelet-modulus token features (`structattn.nets.wavelet`; docs/training.md, round 16): with L > 0,
    # each token's embedding also gains a 1 x 1 embedding of its cell's first-order scattering
    # coefficients (per channel: the cell mean and the mean |x * psi| of fixed Morlet wavelets at 2 scales
    # and L orientations). 0 = off.
    wavelets: int = 0
    # What the outputs read (READOUTS; docs/training.md, sweep round 5):
    #   "cls"     a linear head on the final [CLS] state (ViT convention);
    #   "spatial" that head plus, per output k, sum_t s_kt (w_k . z_t): a learned weighting s_k over the
    #             patch tokens' final states z_t, read through one feature vector w_k;
    #   "pool"    that head plus, per output, `pool_maps` softmax maps over the tokens (position-only
    #             attention pooling), each read through its own feature vector;
    #   "tokens"  one linear map of all final patch-token states (flattened, like the CNN's dense head);
    #   "spatial_embed" "spatial" plus, through a second learned weighting s'_k, each token's embedding
    #             before the blocks, y_k += sum_t s'_kt (u_k . e_t): a linear path (the blocks and their
    #             LayerNorms lose the scale a rule linear in the pixels needs outside the training range;
    #             docs/training.md, round 9).
    readout: str = "cls"
    pool_maps: int = 4
    # A fixed linear map of the pixels added to every output, y_k += a_k . x (a "spatial" or
    # "spatial_embed" readout only); zero until set. `predict_linearly` uses it to hold ridge for the
    # targets `structattn run --prefer-ridge` gives to ridge (docs/training.md, round 10c); `fit_vit`
    # fits it before training for round 10's experiment (`fit_linear_base`, not adopted).
    linear_base: bool = False
    # With L > 0 the linear base also reads each token cell's wavelet-modulus means (`WaveletModulus`, 2 scales
    # x L orientations per channel) besides its pixels: what `--prefer-ridge` holds for a target where ridge on
    # the pixels and their wavelet moduli beats pixel ridge and the ViT on the validation blocks (round 16c).
    base_wavelets: int = 0

    def __post_init__(self) -> None:
        if self.window % self.patch:
            raise ValueError(f"window: expected a multiple of patch={self.patch}, got {self.window}")
        if self.dim % self.heads:
            raise ValueError(f"dim: expected a multiple of heads={self.heads}, got {self.dim}")
        check_orientations(self.wavelets, "wavelets")
        for name in ("in_channels", "window", "patch", "dim", "depth", "heads", "n_outputs", "pool_maps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout: expected one of {READOUTS}, got {self.readout!r}")
        if self.stem < 0:
            raise ValueError(f"stem: expected 0 (no conv stem) or a positive channel count, got {self.stem}")
        if self.stem_pool not in STEM_POOLS:
            raise ValueError(f"stem_pool: expected one of {STEM_POOLS}, got {self.stem_pool!r}")
        if self.stem_pool != "none" and not self.stem:
            raise ValueError(f"stem_pool: needs a conv stem (stem > 0), got stem={self.stem}")
        check_orientations(self.base_wavelets, "base_wavelets")
        if self.base_wavelets and not self.linear_base:
            raise ValueError("base_wavelets: only with linear_base=True (the base is what reads them)")
        if self.linear_base and self.readout not in SPATIAL:
            raise ValueError(f"linear_base: needs a readout of {SPATIAL}, got readout={self.readout!r}")

    @property
    def grid(self) -> int:
        """Tokens per side."""
        return self.window // self.patch

    @property
    def n_tokens(self) -> int:
        """Sequence length T including [CLS]."""
        return self.grid**2 + 1

    def to_dict(self) -> dict:
        return asdict(self)


class AvgMaxPool2d(nn.Module):
    """Average and max pooling by `k`, concatenated along channels: (B, C, H, W) -> (B, 2C, H/k, W/k).

    Both are positively homogeneous, so gradient x input through it conserves relevance like
    either pool alone (AttnLRP's stem rule).
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.avg_pool2d(x, self.k), F.max_pool2d(x, self.k)], dim=1)


class Attention(nn.Module):
    """Multi-head self-attention with a fused default path and an explicit weights path."""

    def __init__(self, dim: int, heads: int, dropout: float, *, n_tokens: int = 0, pos_bias: bool = False,
                 lsa: bool = False) -> None:
        super().__init__()
        self.heads = heads
        # Locality self-attention: q scaled per head by exp(log_temp) (a learned temperature, 1 at start)
        # and the diagonal masked, so a token's attention goes to the others.
        self.log_temp = nn.Parameter(torch.zeros(heads, 1, 1)) if lsa else None
        if lsa:  # additive (T, T) mask: -inf on the diagonal, 0 elsewhere
            diag = torch.zeros(n_tokens, n_tokens).fill_diagonal_(float("-inf"))
            self.register_buffer("self_mask", diag, persistent=False)
        # Optional learned additive bias on the attention logits, one (T, T) table per head,
        # zero at start: lets [CLS] (and every token) attend to fixed positions whatever their
        # content, which a rule reading a fixed off-centre region needs. It is part of the
        # attention weights, so attention maps show it.
        self.bias = nn.Parameter(torch.zeros(heads, n_tokens, n_tokens)) if pos_bias else None
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *, return_weights: bool = False, lrp: str | None = None):
        b, t, d = x.shape
        # (B, T, 3D) -> (3, B, heads, T, D/heads)
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        weights = None
        if lrp == "attnlrp":  # uniform rule: A v splits relevance 1/2 : 1/2, q kᵀ splits A's half again
            q, k, v = rules.divide_gradient(q, 4.0), rules.divide_gradient(k, 4.0), rules.divide_gradient(v, 2.0)
        if self.log_temp is not None:
            q = q * self.log_temp.exp()
        if return_weights or lrp:
            logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, T, T)
            if self.bias is not None:
                logits = logits + self.bias
            if self.log_temp is not None:
                logits = logits + self.self_mask
            weights = logits.softmax(dim=-1)
            if lrp == "cp":  # CP-LRP: the weights are held constant, all relevance goes to v
                weights = weights.detach()
            out = F.dropout(weights, p) @ v
        else:
            mask = None if self.bias is None else self.bias.to(q.dtype)  # (H, T, T) broadcasts over B
            if self.log_temp is not None:
                diag = self.self_mask.to(q.dtype)
                mask = diag if mask is None else mask + diag
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = out.transpose(1, 2).reshape(b, t, d)
        return self.proj_drop(self.proj(out)), weights


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dropout, n_tokens=cfg.n_tokens, pos_bias=cfg.pos_bias, lsa=cfg.lsa)
        self.norm2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, cfg.dim)
        )

    def forward(self, x: torch.Tensor, *, return_weights: bool = False, lrp: str | None = None):
        if lrp is None:
            a, w = self.attn(self.norm1(x), return_weights=return_weights)
            x = x + a
            x = x + self.mlp(self.norm2(x))
            return x, w
        a, w = self.attn(rules.layer_norm(self.norm1, x), return_weights=return_weights, lrp=lrp)
        x = x + a
        fc1, act, _, fc2 = self.mlp  # dropout skipped: relevance is explained in eval mode
        return x + fc2(rules.identity_rule(act, fc1(rules.layer_norm(self.norm2, x)))), w


class ViTRegressor(nn.Module):
    """ViT mapping (B, C, window, window) patches to (B, n_outputs) values.

    Example:
        >>> cfg = ViTConfig(in_channels=2, window=16, patch=4, n_outputs=3)
        >>> model = ViTRegressor(cfg)
        >>> y, attn = model(torch.zeros(5, 2, 16, 16), return_attention=True)
        >>> y.shape, len(attn), attn[0].shape
        (torch.Size([5, 3]), 4, torch.Size([5, 4, 17, 17]))
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Optional conv stem: two 3x3 convolutions give each token local nonlinear features
        # (wall/edge detectors) before tokenising; it stays within the token's neighbourhood
        # (receptive field 5 px), so token t still reads the pixels of sub-patch t and its rim.
        if cfg.stem_pool != "none":  # hybrid: the CNN baseline's first two blocks, pooled to the token grid
            pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "avgmax": AvgMaxPool2d}[cfg.stem_pool]
            widen = 2 if cfg.stem_pool == "avgmax" else 1  # channels out of a pool per channel in
            a = 2 if cfg.patch % 2 == 0 else 1
            self.stem = nn.Sequential(
                nn.Conv2d(cfg.in_channels, cfg.stem, 3, padding=1), nn.GELU(), pool(a),
                nn.Conv2d(widen * cfg.stem, 2 * cfg.stem, 3, padding=1), nn.GELU(), pool(cfg.patch // a),
            )
        elif cfg.stem:
            self.stem = nn.Sequential(
                nn.Conv2d(cfg.in_channels, cfg.stem, 3, padding=1), nn.GELU(),
                nn.Conv2d(cfg.stem, cfg.stem, 3, padding=1), nn.GELU(),
            )
        else:
            self.stem = nn.Identity()
        if cfg.stem_pool == "none":
            self.embed = nn.Conv2d(cfg.stem or cfg.in_channels, cfg.dim, kernel_size=cfg.patch, stride=cfg.patch)
        else:
            self.embed = nn.Conv2d(2 * widen * cfg.stem, cfg.dim, kernel_size=1)
        if cfg.wavelets:  # fixed wavelet-modulus features per token cell, embedded and added (round 16)
            self.wavelet = WaveletModulus(cfg.in_channels, patch=cfg.patch, orientations=cfg.wavelets)
            self.wavelet_embed = nn.Conv2d(self.wavelet.out_channels, cfg.dim, kernel_size=1)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.zeros(1, cfg.n_tokens, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        # "tokens" readout: one linear map of all final token states (a position-aware readout, like
        # the CNN baseline's flattened dense head); [CLS] still takes part in attention.
        self.head = nn.Linear(cfg.dim * (cfg.grid**2 if cfg.readout == "tokens" else 1), cfg.n_outputs)
        if cfg.readout in SPATIAL:  # y_k += sum_t s_kt (w_k . h_t): K x (T-1) + K x dim parameters
            self.read_where = nn.Parameter(torch.full((cfg.n_outputs, cfg.grid**2), 1.0 / cfg.grid**2))
            self.read_what = nn.Parameter(torch.zeros(cfg.n_outputs, cfg.dim))
            nn.init.trunc_normal_(self.read_what, std=0.02)
        if cfg.readout == "spatial_embed":  # and sum_t s'_kt (u_k . e_t) on the embeddings: K x (T-1) + K x dim more
            # its own weighting: shared with the final states' (round 9's first version), a nonlinear rule's
            # deep read and its linear path pulled one weighting apart (product, docs/training.md)
            self.read_embed_where = nn.Parameter(torch.full((cfg.n_outputs, cfg.grid**2), 1.0 / cfg.grid**2))
            self.read_embed = nn.Parameter(torch.zeros(cfg.n_outputs, cfg.dim))
            nn.init.trunc_normal_(self.read_embed, std=0.02)
        if cfg.linear_base:  # fixed (not trained) coefficients per output and token: (K, T-1, C p p [+ C J L])
            if cfg.base_wavelets:
                self.base_wavelet = WaveletModulus(cfg.in_channels, patch=cfg.patch, orientations=cfg.base_wavelets)
            self.register_buffer("base_weight", torch.zeros(cfg.n_outputs, cfg.grid**2, self._base_width()))
        if cfg.readout == "pool":  # logits of K x M softmax maps over the patch tokens, and their read-out vectors
            self.pool_logits = nn.Parameter(torch.zeros(cfg.n_outputs, cfg.pool_maps, cfg.grid**2))
            self.pool_what = nn.Parameter(torch.zeros(cfg.n_outputs, cfg.pool_maps, cfg.dim))
            nn.init.trunc_normal_(self.pool_logits, std=0.02)
            nn.init.trunc_normal_(self.pool_what, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor, *, lrp: str | None = None,
               wavelet_features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, w, w) -> (B, T, dim) embedded tokens with [CLS] first and positions added."""
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels or x.shape[-1] != self.cfg.window:
            raise ValueError(
                f"x: expected (B, {self.cfg.in_channels}, {self.cfg.window}, {self.cfg.window}), got {tuple(x.shape)}"
            )
        t = self.embed_cells(x, lrp=lrp, wavelet_features=wavelet_features).flatten(2).transpose(1, 2)  # (B, g*g, dim)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)
        return t + self.pos

    def embed_cells(self, x: torch.Tensor, *, lrp: str | None = None,
                    wavelet_features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, w, w) -> (B, dim, g, g): each token cell's embedding, before [CLS] and positions.

        ``wavelet_features``: ``self.wavelet(x)``, computed beforehand (the trainer holds them for the
        training points, since the transform has no trained parameters); None = computed here."""
        if lrp is not None and self.cfg.stem:  # conv stem: ε-rule (gradient x input) with identity-rule GELUs
            s = x  # convolutions and max-pools pass their gradient (the ε-rule / winner-takes-all)
            for layer in self.stem:
                s = rules.identity_rule(layer, s) if isinstance(layer, nn.GELU) else layer(s)
        else:
            s = self.stem(x)
        e = self.embed(s)
        if self.cfg.wavelets:  # 1-homogeneous in x (modulus, means): gradient x input conserves relevance
            if wavelet_features is None:
                wavelet_features = self.wavelet(x)
            elif wavelet_features.shape != (len(x), self.wavelet.out_channels, *e.shape[-2:]):
                raise ValueError(f"wavelet_features: expected self.wavelet(x), of shape "
                                 f"{(len(x), self.wavelet.out_channels, *e.shape[-2:])}, got {tuple(wavelet_features.shape)}")
            e = e + self.wavelet_embed(wavelet_features)
        return e

    def encode(self, x: torch.Tensor, *, return_attention: bool = False, lrp: str | None = None,
               wavelet_features: torch.Tensor | None = None):
        """(B, C, w, w) -> the states the readout reads and the per-layer attention weights (a list
        of (B, H, T, T) with ``return_attention``, else of None).

        The states are the final token states (B, T, dim); for the "spatial_embed" readout they are
        followed by each token's embedding before the blocks, (B, T, 2 dim); with ``linear_base``
        by each token's pixels (C p p values, zero for [CLS]), which the base reads.
        """
        rules.check_rule(lrp)
        if lrp is not None and self.training:
            raise ValueError("lrp: relevance is defined for the eval-mode model (no dropout); call model.eval() first")
        h = e = self.tokens(x, lrp=lrp, wavelet_features=wavelet_features)
        weights = []
        for blk in self.blocks:
            h, w = blk(h, return_weights=return_attention, lrp=lrp)
            weights.append(w)
        if self.cfg.readout == "spatial_embed":
            h = torch.cat([h, e], dim=-1)
        if self.cfg.linear_base:
            h = torch.cat([h, self._pixel_tokens(x)], dim=-1)
        return h, weights

    def _base_wavelet_width(self) -> int:
        """Wavelet moduli per token the linear base reads (0 without `base_wavelets`)."""
        return self.base_wavelet.out_channels - self.cfg.in_channels if self.cfg.base_wavelets else 0

    def _base_width(self) -> int:
        return self.cfg.in_channels * self.cfg.patch**2 + self._base_wavelet_width()

    def _pixel_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, w, w) -> (B, T, C p p [+ C J L]): each token's pixels in the embedding's token order (and,
        with `base_wavelets`, its cell's wavelet-modulus means), a zero row for [CLS]."""
        b, c, g, p = len(x), self.cfg.in_channels, self.cfg.grid, self.cfg.patch
        t = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
        if self.cfg.base_wavelets:  # the cell means are left out: the pixels hold them linearly
            t = torch.cat([t, self.base_wavelet(x)[:, c:].flatten(2).transpose(1, 2)], dim=-1)
        return torch.cat([t.new_zeros(b, 1, t.shape[-1]), t], dim=1)

    def set_linear_base(self, weight, bias, wavelet_weight=None) -> None:
        """Fix the linear base: output k gains ``weight[k] . x`` (weight (K, C, w, w) on the model's
        standardised input), and with `base_wavelets` ``wavelet_weight[k] . m(x)`` (wavelet_weight
        (K, C J L, g, g) on the cells' wavelet-modulus means m(x); None = zero); ``bias`` (K,) is added
        to the output bias (the head's, which training goes on to adjust)."""
        cfg = self.cfg
        if not cfg.linear_base:
            raise ValueError("linear_base: this model was built without a linear base (ViTConfig.linear_base=False)")
        w, b, wv = self._check_base(weight, bias, wavelet_weight)
        with torch.no_grad():
            self.base_weight.copy_(self._token_layout(w, wv))
            self.head.bias.add_(b.to(self.head.bias.device))

    def _check_base(self, weight, bias, wavelet_weight=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A linear base's (K, C, w, w) weight, (K,) bias and (K, C J L, g, g) wavelet weight (or None) as
        tensors, or a ValueError naming which is wrong."""
        cfg = self.cfg
        w = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
        want = (cfg.n_outputs, cfg.in_channels, cfg.window, cfg.window)
        if tuple(w.shape) != want:
            raise ValueError(f"weight: expected shape {want}, got {tuple(w.shape)}")
        b = torch.as_tensor(np.asarray(bias), dtype=torch.float32).reshape(-1)
        if len(b) != cfg.n_outputs or not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise ValueError(f"bias: expected {cfg.n_outputs} finite values (and a finite weight), got {tuple(b.shape)}")
        wv = None
        if wavelet_weight is not None:
            if not cfg.base_wavelets:
                raise ValueError("wavelet_weight: this model's base reads no wavelet moduli (ViTConfig.base_wavelets=0)")
            wv = torch.as_tensor(np.asarray(wavelet_weight), dtype=torch.float32)
            want = (cfg.n_outputs, self._base_wavelet_width(), cfg.grid, cfg.grid)
            if tuple(wv.shape) != want or not torch.isfinite(wv).all():
                raise ValueError(f"wavelet_weight: expected finite values of shape {want}, got {tuple(wv.shape)}")
        return w, b, wv

    def _token_layout(self, w: torch.Tensor, wavelet_weight: torch.Tensor | None = None) -> torch.Tensor:
        """(K, C, w, w) pixel weights [and (K, C J L, g, g) wavelet weights] -> (K, T-1, C p p [+ C J L]),
        the layout of `_pixel_tokens` (zero wavelet weights where none are given)."""
        g, p = self.cfg.grid, self.cfg.patch
        t = w.reshape(len(w), self.cfg.in_channels, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(len(w), g * g, -1)
        if self.cfg.linear_base and self.cfg.base_wavelets:
            wv = (wavelet_weight if wavelet_weight is not None
                  else w.new_zeros(len(w), self._base_wavelet_width(), g, g))
            t = torch.cat([t, wv.flatten(2).transpose(1, 2)], dim=-1)
        return t

    def readout(self, h: torch.Tensor, *, lrp: str | None = None) -> torch.Tensor:
        """States from `encode` -> outputs (B, n_outputs); linear in the normed final states (and,
        for "spatial_embed", in the embeddings)."""
        if self.cfg.readout == "cls":  # only the [CLS] state is normed and read
            h = h[:, :1]
        z = self._norm_states(h, lrp=lrp)
        return self._readout_normed(z)

    def _norm_states(self, h: torch.Tensor, *, lrp: str | None = None) -> torch.Tensor:
        """Layer-norm the final token states of `encode`'s states; embeddings and pixels are read as they are."""
        d = self.cfg.dim
        z = self.norm(h[..., :d]) if lrp is None else rules.layer_norm(self.norm, h[..., :d])
        return torch.cat([z, h[..., d:]], dim=-1) if h.shape[-1] > d else z

    def readout_parts(self, h: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) signed contributions to output ``target`` of each token's final state and of the
        linear path: its embedding (readout "spatial_embed") and its pixels (``linear_base``); zero
        for a model with neither.

        The readout is linear in the layer-normed states z_t (and the embeddings e_t, the pixels), so
        y_k = b_k + sum_t (c_t + c'_t) exactly, with c_t = z_t . dy_k/dz_t and c'_t = e_t . dy_k/de_t
        (plus the pixels' x_t . dy_k/dx_t).
        For the default [CLS] readout only c_0 is non-zero.
        """
        self._check_target(target)
        d = self.cfg.dim
        with torch.enable_grad():
            z = self._norm_states(h.detach()).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self._readout_normed(z)[:, target].sum(), z)
        zg = (z * g).detach()
        return zg[..., :d].sum(-1), zg[..., d:].sum(-1)

    def readout_contributions(self, h: torch.Tensor, target: int) -> torch.Tensor:
        """(B, T) signed contribution of each token to output ``target`` (`readout_parts`, summed)."""
        c, ce = self.readout_parts(h, target)
        return c + ce

    def readout_shares(self, h: torch.Tensor, target: int, *, split: bool = False):
        """(B, T) share (|c_t| + |c'_t|) / sum of output ``target`` read at each token
        (`readout_parts`): exactly 1 at [CLS] for the default readout, so the attention-family
        explanations that weight attention rows by it reduce to the [CLS] row. With ``split``,
        the two parts (final states, embeddings) separately; they add up to the shares."""
        if self.cfg.readout == "cls":
            self._check_target(target)
            r = torch.zeros(h.shape[:2], dtype=h.dtype, device=h.device)
            r[:, 0] = 1.0
            return (r, torch.zeros_like(r)) if split else r
        c, ce = (p.abs() for p in self.readout_parts(h, target))
        total = (c + ce).sum(-1, keepdim=True).clamp_min(1e-12)
        return (c / total, ce / total) if split else (c + ce) / total

    def _check_target(self, target) -> None:
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < self.cfg.n_outputs:
            raise ValueError(f"target: expected an output index in [0, {self.cfg.n_outputs}), got {target!r}")

    def _readout_normed(self, z: torch.Tensor) -> torch.Tensor:
        """`readout` on already layer-normed states (B, T, dim) ([CLS] alone, (B, 1, dim), is enough
        for the default readout)."""
        mode = self.cfg.readout
        if mode == "cls":
            return self.head(z[:, 0])
        if mode == "tokens":
            return self.head(z[:, 1:].flatten(1))
        if mode in SPATIAL:
            d = self.cfg.dim
            y = self.head(z[:, 0, :d]) + torch.einsum("btd,kd,kt->bk", z[:, 1:, :d], self.read_what, self.read_where)
            if mode == "spatial_embed":
                y = y + torch.einsum("btd,kd,kt->bk", z[:, 1:, d:2 * d], self.read_embed, self.read_embed_where)
            if self.cfg.linear_base:
                off = 2 * d if mode == "spatial_embed" else d
                y = y + torch.einsum("btq,ktq->bk", z[:, 1:, off:], self.base_weight)
            return y
        pooled = torch.einsum("btd,kmt->bkmd", z[:, 1:], self.pool_logits.softmax(-1))
        return self.head(z[:, 0]) + (pooled * self.pool_what).sum((-1, -2))

    def forward(self, x: torch.Tensor, *, return_attention: bool = False, return_states: bool = False,
                lrp: str | None = None, wavelet_features: torch.Tensor | None = None):
        """Predict; with ``return_attention`` also return a list of (B, H, T, T) per layer, and with
        ``return_states`` (needs ``return_attention``) the states the readout reads after it (`encode`).

        ``lrp`` (``"attnlrp"`` or ``"cp"``, eval mode) gives the same values with the
        relevance-propagating backward of `structattn.nets.lrp`. ``wavelet_features``: see `embed_cells`.
        """
        if return_states and not return_attention:
            raise ValueError("return_states: only with return_attention=True")
        h, weights = self.encode(x, return_attention=return_attention, lrp=lrp, wavelet_features=wavelet_features)
        y = self.readout(h, lrp=lrp)
        if return_states:
            return y, weights, h
        return (y, weights) if return_attention else y


def predict_linearly(model: ViTRegressor, targets, weight, bias, wavelet_weight=None, *,
                     wavelets: int = 0) -> ViTRegressor:
    """A copy of `model` whose outputs ``targets`` are the linear map ``weight[k] . x + bias[k]`` of the
    standardised input alone (weight (K, C, w, w), bias (K,); rows of other outputs are ignored), plus
    ``wavelet_weight[k] . m(x)`` on the cells' wavelet-modulus means at `wavelets` orientations
    (wavelet_weight (K, C J L, g, g); `ViTConfig.base_wavelets`): their transformer read-out terms are
    zeroed and the map held as the model's linear base (`ViTConfig.linear_base`). The other outputs are
    unchanged. What `structattn run --prefer-ridge` does to the targets where ridge does as well as the
    ViT (docs/training.md, rounds 10c and 16c)."""
    from dataclasses import replace

    if model.cfg.readout not in SPATIAL:
        raise ValueError(f"model: expected a readout of {SPATIAL} to hold a linear base, got {model.cfg.readout!r}")
    if (wavelet_weight is None) != (not wavelets):
        raise ValueError(f"wavelet_weight: give it exactly when wavelets > 0 (got wavelets={wavelets!r})")
    with torch.random.fork_rng(devices=[]):  # its throw-away init must not move the caller's random stream
        new = ViTRegressor(replace(model.cfg, linear_base=True, base_wavelets=wavelets))
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or set(missing) - {"base_weight"}:
        raise ValueError(f"model: its weights do not fit its own config (missing {missing}, unexpected {unexpected})")
    w, b, wv = new._check_base(weight, bias, wavelet_weight)
    k = torch.as_tensor(sorted(set(int(t) for t in targets)), dtype=torch.long)
    if len(k) and (k.min() < 0 or k.max() >= model.cfg.n_outputs):
        raise ValueError(f"targets: expected output indices in [0, {model.cfg.n_outputs}), got {targets!r}")
    with torch.no_grad():
        new.head.weight[k] = 0.0
        new.read_what[k] = 0.0
        if model.cfg.readout == "spatial_embed":
            new.read_embed[k] = 0.0
        new.head.bias[k] = b[k]
        new.base_weight[k] = new._token_layout(w[k], None if wv is None else wv[k])
    return new.train(model.training)
