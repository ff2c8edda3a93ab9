"""Unsupervised loop latents: a β-VAE with PCA and NMF baselines of the same size.

The paper's second mode (Slautin et al., arXiv 2508.15493): compress loops to a few latents
without labels, let the Vision Transformer learn those latents from the structure patch,
and read its explanations per latent. See docs/latent.md.
"""

from .api import (
    KINDS,
    LatentResult,
    clip_spikes,
    fit_latents,
    latent_summary,
    latent_targets,
    loop_descriptors,
    make_estimator,
    parse_latent_spec,
    traverse,
)
from .base import LatentEstimator
from .linear import NMFLatent, PCALatent
from .vae import LoopVAE

__all__ = [
    "KINDS",
    "LatentEstimator",
    "LatentResult",
    "LoopVAE",
    "NMFLatent",
    "PCALatent",
    "clip_spikes",
    "fit_latents",
    "latent_summary",
    "latent_targets",
    "loop_descriptors",
    "make_estimator",
    "parse_latent_spec",
    "traverse",
]
