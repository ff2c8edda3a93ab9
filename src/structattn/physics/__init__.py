"""Physics: domain segmentation of the structure image and attribution by domain class."""

from .enrichment import EnrichmentResult, EnrichmentSplit, domain_enrichment
from .segment import CLASS_ORDER, Segmentation, label_patches, segment_domains

__all__ = [
    "CLASS_ORDER",
    "EnrichmentResult",
    "EnrichmentSplit",
    "Segmentation",
    "domain_enrichment",
    "label_patches",
    "segment_domains",
]
