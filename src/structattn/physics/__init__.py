"""Physics: domain segmentation of the structure image and attribution by domain class."""

from .domains import (
    DomainAnalysis,
    analyze_domains,
    domains_from_explanations,
    read_explanations,
    run_domains,
    segmentation_for,
    write_run_domains,
)
from .enrichment import EnrichmentResult, EnrichmentSplit, domain_enrichment
from .segment import CLASS_ORDER, Segmentation, label_patches, segment_domains

__all__ = [
    "CLASS_ORDER",
    "DomainAnalysis",
    "EnrichmentResult",
    "EnrichmentSplit",
    "Segmentation",
    "analyze_domains",
    "domain_enrichment",
    "domains_from_explanations",
    "label_patches",
    "read_explanations",
    "run_domains",
    "segment_domains",
    "segmentation_for",
    "write_run_domains",
]
