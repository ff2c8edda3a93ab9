"""Loops in the pipeline: BEPS .h5 reading into a Sample, descriptor targets,
structure image option, report section."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from structattn.data.io import load_sample

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pto_beps_50x50.h5"
pytestmark = [pytest.mark.skipif(not DATA.exists(), reason=f"real data not found at {DATA}"),
              pytest.mark.usefixtures("one_torch_thread")]



@pytest.fixture(scope="module")
def beps():
    return load_sample(DATA)


def test_load_sample_reads_beps_h5_with_structure_from_loops(beps):
    s = beps
    assert s.image.shape == (1, 50, 50) and s.channels == ("response@0V",)
    assert s.loops.shape == (2500, 64) and s.voltage.shape == (64,) and s.positions.shape == (2500, 2)
    assert np.all(np.isfinite(s.image)) and s.meta["structure_from"] == "response@0V"
    assert s.pixel_size == pytest.approx(2e-6 / 49)


def test_structure_from_descriptor_and_bad_name():
    s = load_sample(DATA, structure_from="imprint")
    assert s.channels == ("imprint",) and np.all(np.isfinite(s.image))
    assert np.all(np.abs(s.image) <= 8.5)  # volts, inside the bias range
    with pytest.raises(ValueError, match="--structure-from: expected one of.*response@0V.*got 'height'"):
        load_sample(DATA, structure_from="height")


def test_descriptor_targets_resolved_from_loops(beps):
    from structattn.targets import resolve_targets

    t = resolve_targets(beps, "V+,V-,imprint")
    assert t.values.shape == (2500, 3) and t.names == ("V+", "V-", "imprint") and t.units == ("V", "V", "V")
    assert t.valid is not None and 0.5 < t.valid.mean() < 1.0
    assert t.info["loops"]["median_fit_r2"] > 0.9
    with pytest.raises(ValueError, match=r"'Vc'.*loop descriptors: \['V\+'"):
        resolve_targets(beps, "V+,Vc")


def test_loop_fit_is_reused_for_the_same_loops_and_redone_for_others(beps, monkeypatch):
    """The report's loop sections reuse the targets stage's fit (same loops by content), and a
    change to any loop gives a fresh fit."""
    from structattn import loops, targets

    calls = []
    real = loops.compute_descriptors
    monkeypatch.setattr(loops, "compute_descriptors", lambda *a, **k: calls.append(1) or real(*a, **k))
    sub = beps.subset(np.arange(200))
    first = targets._loop_analysis(sub)
    again = targets._loop_analysis(beps.subset(np.arange(200)))  # a new object, the same content
    assert again is first and len(calls) == 1
    changed = beps.subset(np.arange(200))
    changed.loops[7] = changed.loops[7][::-1]
    other = targets._loop_analysis(changed)
    assert len(calls) == 2 and other is not first
    assert not np.array_equal(other.values["V+"][7], first.values["V+"][7], equal_nan=True)
    np.testing.assert_array_equal(other.values["V+"][:7], first.values["V+"][:7])


def test_cli_structure_from_option_reaches_run_config():
    from structattn.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["run", str(DATA), "--out", "x", "--structure-from", "V+", "--targets", "V+,V-"])
    cfg = _config_from_args(args, args.bundle)
    assert cfg.structure_from == "V+" and cfg.targets == "V+,V-"


def test_report_loop_section_renders(beps):
    from structattn.report.loop_section import loop_analysis

    sub = beps.subset(np.arange(500))  # first 10 rows: still a full grid
    ctx = SimpleNamespace(sample=sub, run=SimpleNamespace(config={"targets": {"names": ["V+", "V-"]}}))
    html = loop_analysis(ctx)
    assert "median R²" in html and html.count("<img") == 3
    assert loop_analysis(SimpleNamespace(sample=SimpleNamespace(loops=None), run=None)) is None
