"""Ranking explanation methods by faithfulness on one run (`structattn.evaluate.faithful`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structattn.evaluate.faithful import RANDOMISATION_FAIL, faithful_method, rank_methods


def row(deletion, insertion, rho):
    return {"deletion_auc": deletion, "insertion_auc": insertion, "randomisation_spearman": rho}


RANDOM = {"deletion_auc": 0.5, "insertion_auc": 0.5, "curves": {}}


def test_failing_randomisation_never_leads_even_with_the_best_curves():
    s = {"attention": row(0.05, 0.95, 0.9), "gradattn": row(0.45, 0.55, 0.1), "_random": RANDOM}
    ranked = rank_methods(s)
    assert [r["method"] for r in ranked] == ["gradattn", "attention"]
    assert ranked[0]["passes_randomisation"] is True and ranked[1]["passes_randomisation"] is False
    assert ranked[1]["score"] > ranked[0]["score"]  # the better curves, yet second
    assert faithful_method(s) == "gradattn"


def test_threshold_is_inclusive():
    s = {"a": row(0.1, 0.9, RANDOMISATION_FAIL), "b": row(0.4, 0.6, RANDOMISATION_FAIL - 1e-6)}
    assert [r["method"] for r in rank_methods(s)] == ["b", "a"]


def test_better_than_random_beats_worse_than_random():
    # "worse" has the lower deletion AUC, but its insertion is far worse: its gap is below random's.
    s = {"worse": row(0.40, 0.30, 0.0), "better": row(0.45, 0.70, 0.0), "_random": RANDOM}
    ranked = rank_methods(s)
    assert [r["method"] for r in ranked] == ["better", "worse"]
    assert ranked[0]["score"] == pytest.approx(0.25) and ranked[1]["score"] == pytest.approx(-0.1)
    assert ranked[0]["score"] > 0 > ranked[1]["score"]


def test_score_subtracts_the_random_gap_and_keeps_raw_values():
    s = {"ig": {**row(0.2, 0.7, 0.05), "auroc": 0.8}, "_random": {"deletion_auc": 0.4, "insertion_auc": 0.6}}
    (r,) = rank_methods(s)
    assert r["score"] == pytest.approx((0.7 - 0.2) - (0.6 - 0.4))
    assert (r["deletion_auc"], r["insertion_auc"], r["randomisation_spearman"], r["auroc"]) == (0.2, 0.7, 0.05, 0.8)
    assert r["random_gap"] == pytest.approx(0.2)
    # Without a random order the plain gap ranks (same order, no offset).
    (r,) = rank_methods({"ig": row(0.2, 0.7, 0.05)})
    assert r["score"] == pytest.approx(0.5) and r["random_gap"] is None


def test_centre_prior_and_underscore_entries_are_never_candidates():
    s = {"centre": row(0.0, 1.0, 0.0), "_agreement": {"spearman": {}}, "_random": RANDOM,
         "rollout": row(0.5, 0.5, 0.2)}
    assert [r["method"] for r in rank_methods(s)] == ["rollout"]
    assert faithful_method({"centre": row(0.0, 1.0, 0.0)}) is None


def test_missing_and_nan_values():
    s = {"no_auc": {"randomisation_spearman": 0.0}, "nan_rho": row(0.1, 0.9, float("nan")),
         "ok": row(0.4, 0.6, 0.3), "np": row(np.float64(0.45), np.float32(0.5), np.float64(0.0))}
    ranked = rank_methods(s)
    # passing with a score, passing without one, then not checked (NaN ρ reads as missing)
    assert [r["method"] for r in ranked] == ["ok", "np", "no_auc", "nan_rho"]
    assert ranked[-1]["passes_randomisation"] is None and ranked[2]["score"] is None
    assert all(r["score"] is None or math.isfinite(r["score"]) for r in ranked)


def test_faithful_method_none_when_every_method_fails_or_nothing_to_rank():
    assert faithful_method({"attention": row(0.1, 0.9, 0.99), "rollout": row(0.2, 0.8, 0.7)}) is None
    assert faithful_method({"_random": RANDOM}) is None
    assert faithful_method({"ig": {"randomisation_spearman": 0.0}}) is None  # no AUCs: no evidence


def test_ties_keep_input_order():
    s = {"b": row(0.3, 0.6, 0.1), "a": row(0.3, 0.6, 0.1)}
    assert [r["method"] for r in rank_methods(s)] == ["b", "a"]


def test_errors_name_the_parameter():
    with pytest.raises(TypeError, match="target_scores"):
        rank_methods([("ig", {})])
    with pytest.raises(TypeError, match=r"target_scores\['ig'\]"):
        rank_methods({"ig": 0.3})
