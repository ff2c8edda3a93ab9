"""Loop analysis: branch splitting, spike repair, switching descriptors and the
batched 9-parameter loop fit (Jesse, Lee & Kalinin 2006, as in BGlib).

Main entry point::

    from structattn.loops import compute_descriptors
    res = compute_descriptors(loops, voltage)          # loops (N, V), voltage (V,)
    y = res.table(["V+", "V-", "imprint"])[res.quality]
"""

from .beps import STRUCTURE_SOURCES, BepsGrid, read_beps_nsid, structure_from_loops
from .descriptors import DESCRIPTORS, STANDARD_DESCRIPTORS, LoopAnalysis, LoopAnalysisConfig, compute_descriptors
from .fit import DESCRIPTOR_ORDER, LoopFitter
from .model import PARAM_NAMES, loop_model_np, loop_model_torch, switching_descriptors_from_params
from .preprocess import PreprocessConfig, preprocess_loops
from .waveform import Branches, split_branches

__all__ = [
    "DESCRIPTORS",
    "STANDARD_DESCRIPTORS",
    "STRUCTURE_SOURCES",
    "BepsGrid",
    "read_beps_nsid",
    "structure_from_loops",
    "DESCRIPTOR_ORDER",
    "PARAM_NAMES",
    "Branches",
    "LoopAnalysis",
    "LoopAnalysisConfig",
    "LoopFitter",
    "PreprocessConfig",
    "compute_descriptors",
    "loop_model_np",
    "loop_model_torch",
    "preprocess_loops",
    "split_branches",
    "switching_descriptors_from_params",
]
