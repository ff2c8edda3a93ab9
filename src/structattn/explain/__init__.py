"""Explanation methods, one call shape: ``Explainer(model).attribute(patches, target=k)``."""

from .attention import AttentionExplainer
from .base import Explainer, tokens_to_pixels

# name -> class; the CLI's --methods picks from these keys.
EXPLAINERS: dict[str, type[Explainer]] = {
    AttentionExplainer.name: AttentionExplainer,
}


def make_explainer(name: str, model) -> Explainer:
    """Build the explainer registered as `name` on `model`."""
    if name not in EXPLAINERS:
        raise ValueError(f"methods: unknown explanation method {name!r}; choose from {sorted(EXPLAINERS)}")
    return EXPLAINERS[name](model)


__all__ = ["EXPLAINERS", "AttentionExplainer", "Explainer", "make_explainer", "tokens_to_pixels"]
