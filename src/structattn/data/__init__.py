"""Samples, readers, patch extraction and the synthetic generator."""

from .bundle import load_bundle, save_bundle
from .io import load_sample, sample_checksum
from .patches import extract_patches, patch_inside
from .sample import Sample
from .synthetic import causal_masks, make_synthetic

__all__ = [
    "Sample",
    "causal_masks",
    "extract_patches",
    "load_bundle",
    "load_sample",
    "make_synthetic",
    "patch_inside",
    "sample_checksum",
    "save_bundle",
]
