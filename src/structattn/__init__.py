"""structattn: structure-property learning with Vision Transformers, explained with attention."""

__version__ = "0.1.0"

