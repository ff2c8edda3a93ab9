"""`structattn domains RUN` and the domains step inside `structattn run` (tiny run: 1 epoch)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    from structattn.pipeline import RunConfig, run_pipeline

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = RunConfig(source="synthetic:seed=0", epochs=1, dim=16, depth=1, heads=2, progress=False, points="40", ensemble=1,
                    wavelets=0, ridge_wavelets=0)  # about domains: the wavelet features only slow its explain stage
    run_pipeline(cfg, out, log=lambda m: None)
    return out


def test_run_writes_domains_by_default(tiny_run):
    m = json.loads((tiny_run / "metrics.json").read_text())
    d = m["domains"]
    assert d["segmentation"]["method"] == "given"  # the synthetic sample carries labels
    assert set(d["enrichment"]["attention"]) == {"V+", "V-", "imprint", "height"}
    assert "split" in d["enrichment"]["attention"]["V+"]
    with h5py.File(tiny_run / "domains.h5") as f:
        assert f["attention/V+/per_point"].shape == (40, 5)
    assert "Domain patterns" in (tiny_run / "report.html").read_text()


def test_domains_command_resegments_and_rewrites(tiny_run):
    from structattn.cli import main

    assert main(["domains", str(tiny_run), "--source", "segment", "--n-boot", "100"]) == 0
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["domains"]["segmentation"]["method"] == "gmm+morphology" and "targets" in m
    rows = m["domains"]["enrichment"]["attention"]["V+"]["classes"]
    assert all(np.isfinite(r["enrichment"]) for r in rows if r["enrichment"] is not None)
    assert main(["domains", str(tiny_run.parent / "missing")]) == 2
