"""Training (PyTorch Lightning), the spatial split and regression metrics."""

from .metrics import regression_scores
from .split import SpatialSplit, spatial_block_split
from .trainer import TrainConfig, TrainedModel, fit_vit

__all__ = ["SpatialSplit", "TrainConfig", "TrainedModel", "fit_vit", "regression_scores", "spatial_block_split"]
