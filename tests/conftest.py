"""Shared fixtures: a small synthetic sample and one small trained run reused by many tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Under pytest-xdist (`make test` runs one worker per core) each worker gets its share of the cores, so workers
# do not oversubscribe a 2-core machine; a plain `pytest` keeps up to 2 threads.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Small but learnable: 160 px image, 22x22 = 484 points, a 2-layer ViT.
SMALL_SOURCE = "synthetic:seed=1,size=160,spacing=6,radius=12"  # canonical: as config.json records it
# The synthetic rule reads an isotropic disk centred on the point, so dihedral augmentation is a
# valid choice for it (the one a user with such a property would make; the default is none), and
# the explanation tests on this run were calibrated with the linear token embedding (stem 0) and the
# [CLS] readout. With the run default `readout="spatial"` this 2-layer, dihedral-augmented model's
# attention maps fall to the centre prior's level (gradattn AUROC 0.57 vs 0.60 on V+, attention mass
# ratio 1.17): the per-target token weighting learns a radial profile, which is what the prior is.
# docs/training.md (round 5) reports it; these tests keep checking the [CLS]-row explanations, of the
# model without the wavelet-modulus token features (default since round 16; tests of those are in
# test_wavelet.py and test_learned.py).
SMALL_RUN = dict(source=SMALL_SOURCE, window=24, patch=4, dim=48, depth=2, heads=4, epochs=40, patience=20, lr=3e-3,
                 blocks=3, progress=False, seed=0, augment="dihedral", stem=0, weight_decay=0.05, readout="cls",
                 wavelets=0)


@pytest.fixture(scope="session")
def small_sample():
    from structattn.data import load_sample

    return load_sample(SMALL_SOURCE)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """One trained run folder on the small synthetic sample (shared, read-only for tests)."""
    from structattn.pipeline import RunConfig, run_pipeline

    out = tmp_path_factory.mktemp("runs") / "small"
    result = run_pipeline(RunConfig(**SMALL_RUN), out)
    return result


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a shared 2-core machine a second one mostly waits (see docs/loops.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
