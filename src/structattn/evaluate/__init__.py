"""Scoring explanations: faithfulness, ground truth, agreement, sanity and cost."""

from ..explain.prior import centre_prior
from .agreement import agreement
from .cost import PassCounter, measure_cost
from .faithful import faithful_method, rank_methods
from .faithfulness import deletion_insertion
from .ground_truth import ground_truth_scores
from .sanity import randomisation_check, randomise_parameters
from .suite import TABLE_COLUMNS, comparison_rows, evaluate_methods, scores_for_json

__all__ = [
    "PassCounter",
    "TABLE_COLUMNS",
    "comparison_rows",
    "agreement",
    "centre_prior",
    "deletion_insertion",
    "evaluate_methods",
    "faithful_method",
    "ground_truth_scores",
    "measure_cost",
    "randomisation_check",
    "randomise_parameters",
    "rank_methods",
    "scores_for_json",
]
