"""Pure nn.Modules (no training code here)."""

from .cnn import CNNConfig, CNNRegressor
from .vit import ViTConfig, ViTRegressor

__all__ = ["CNNConfig", "CNNRegressor", "ViTConfig", "ViTRegressor"]
