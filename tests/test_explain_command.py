"""`structattn explain RUN`: adds maps to explanations.h5, scores to metrics.json, a report section."""

from __future__ import annotations

import json

import h5py
import pytest

from structattn.cli import main
from structattn.pipeline import RunConfig, run_pipeline


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    cfg = RunConfig(source="synthetic:seed=0,size=96,spacing=8", window=16, patch=4, dim=16, depth=1, heads=2,
                    epochs=1, blocks=3, methods=("attention",), points="4", progress=False, ensemble=1)
    run_pipeline(cfg, out)
    return out


def test_explain_command_adds_maps_scores_and_report(small_run):
    rc = main(["explain", str(small_run), "--methods", "attention,gradattn,occlusion", "--points", "4", "--quiet"])
    assert rc == 0
    with h5py.File(small_run / "explanations.h5") as f:
        assert len(f["point_index"]) == 4
        for m in ("attention", "gradattn", "occlusion", "centre"):
            assert f[f"{m}/V+"].shape == (4, 16, 16)
    ex = json.loads((small_run / "metrics.json").read_text())["explanations"]
    s = ex["scores"]["V+"]
    assert {"attention", "gradattn", "occlusion", "centre", "_random", "_agreement"} <= set(s)
    assert "randomisation_spearman" in s["gradattn"] and "auroc" in s["occlusion"]
    assert not (small_run / "explanations.h5.tmp").exists()
    assert "Explanations compared" in (small_run / "report.html").read_text()


def test_explain_command_rejects_unknown_method(small_run):
    assert main(["explain", str(small_run), "--methods", "lime", "--quiet"]) == 2
