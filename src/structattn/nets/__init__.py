"""Pure nn.Modules (no training code here)."""

from .vit import ViTConfig, ViTRegressor

__all__ = ["ViTConfig", "ViTRegressor"]
