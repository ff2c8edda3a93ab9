"""Explanation methods, one call shape: ``Explainer(model).attribute(patches, target=k)``.

Every method returns (B, w, w) maps pixel-aligned with the patches; token-level scores are
repeated over each token's pixels. Signed methods (``shap``, ``ig``, ``occlusion``, ``attnlrp``) keep
their sign; scoring (`structattn.evaluate`) ranks by magnitude.
"""

from .attention import AttentionExplainer
from .attnlrp import AttnLRPExplainer, attnlrp_relevance
from .base import Explainer, tokens_to_pixels
from .captum_methods import IntegratedGradientsExplainer, OcclusionExplainer, pixels_to_tokens
from .gradattn import GradAttnExplainer, gradattn_relevance
from .prior import CentrePriorExplainer, centre_prior
from .rollout import RolloutExplainer, rollout
from .shapley import ShapExplainer

# name -> class; the CLI's --methods picks from these keys.
EXPLAINERS: dict[str, type[Explainer]] = {
    cls.name: cls
    for cls in (
        AttentionExplainer,
        RolloutExplainer,
        GradAttnExplainer,
        ShapExplainer,
        IntegratedGradientsExplainer,
        OcclusionExplainer,
        AttnLRPExplainer,
    )
}
# Baselines scored like the methods but not explanations of the model.
BASELINES: dict[str, type[Explainer]] = {CentrePriorExplainer.name: CentrePriorExplainer}
# The methods that read the model's attention (the paper's claim is about these).
ATTENTION_FAMILY = ("attention", "rollout", "gradattn")


def make_explainer(name: str, model, **options) -> Explainer:
    """Build the explainer registered as `name` (a method or a baseline) on `model`.

    ``options`` are that class's keyword parameters (e.g. ``max_evals`` for ``shap``).
    """
    known = {**EXPLAINERS, **BASELINES}
    if name not in known:
        raise ValueError(f"methods: unknown explanation method {name!r}; choose from {sorted(known)}")
    return known[name](model, **options)


__all__ = [
    "ATTENTION_FAMILY",
    "BASELINES",
    "EXPLAINERS",
    "AttentionExplainer",
    "AttnLRPExplainer",
    "CentrePriorExplainer",
    "Explainer",
    "GradAttnExplainer",
    "IntegratedGradientsExplainer",
    "OcclusionExplainer",
    "RolloutExplainer",
    "ShapExplainer",
    "attnlrp_relevance",
    "centre_prior",
    "gradattn_relevance",
    "make_explainer",
    "pixels_to_tokens",
    "rollout",
    "tokens_to_pixels",
]
