"""All 2500 real PbTiO3 BEPS loops: processed without an exception, spikes
repaired, flat loops flagged, fit quality reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from structattn.loops import LoopAnalysisConfig, compute_descriptors

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pto_beps_50x50.h5"


@pytest.fixture(scope="module")
def real():
    if not DATA.exists():
        pytest.skip(f"real data not found at {DATA}")
    h5py = pytest.importorskip("h5py")
    with h5py.File(DATA, "r") as f:
        loops = f["Channel_000/generic/generic"][()].reshape(-1, 64)  # (2500, 64): X, Y flattened
        voltage = f["Channel_000/generic/Voltage"][()]
    # 4 starts and 1 thread keep this test quick on a shared 2-core machine; the
    # documented figures use the default 8 starts.
    res = compute_descriptors(loops, voltage, config=LoopAnalysisConfig(n_starts=4, num_threads=1))
    return loops, voltage, res


def test_all_real_loops_processed(real):
    loops, _, res = real
    assert res.clean_loops.shape == loops.shape == (2500, 64)
    for name, val in res.values.items():
        assert val.shape == (2500,) and np.all(np.isfinite(val[res.quality])), name
    assert 0.5 < res.quality.mean() < 1.0  # real data: most usable, not all


def test_real_spikes_repaired(real):
    loops, _, res = real
    # the data README: about 5 % of points are spikes (its own, looser measure);
    # the repair touches a few per cent of points, in about half of the loops
    frac = (res.clean_loops != loops).mean()
    assert 0.015 < frac < 0.08
    repaired = res.flags["spike_repaired"]
    assert 0.3 < repaired.mean() < 0.8
    # where spikes were repaired, they had set the loop's span: it shrinks a lot
    ratio = np.ptp(res.clean_loops[repaired], axis=1) / np.ptp(loops[repaired], axis=1)
    assert np.median(ratio) < 0.5
    # loops without spikes are left exactly as measured
    assert np.array_equal(res.clean_loops[~repaired], loops[~repaired])


def test_real_flat_loops_flagged_and_fit_quality(real):
    _, _, res = real
    flagged = res.flags["flat"] | res.flags["no_hysteresis"]
    assert flagged.any()
    assert np.median(res.fit_r2) > 0.9
    assert np.median(res.fit_r2[res.quality]) > np.median(res.fit_r2[flagged])


def test_read_beps_nsid_grid_and_structure_image(real):
    from structattn.loops import read_beps_nsid, structure_from_loops

    loops, voltage, res = real
    grid = read_beps_nsid(DATA)
    assert grid.shape == (50, 50) and grid.loops.shape == (2500, 64)
    assert np.array_equal(grid.voltage, voltage)
    assert abs(grid.pixel_size - 2e-6 / 49) < 1e-12
    # rows follow Y, columns X: point (row 3, col 7) is the file's [X=7, Y=3]
    import h5py

    with h5py.File(DATA, "r") as f:
        raw = f["Channel_000/generic/generic"][7, 3, :]
    assert np.array_equal(grid.loops[3 * 50 + 7], raw)
    assert np.array_equal(grid.positions[3 * 50 + 7], [3.0, 7.0])
    img = structure_from_loops(grid.loops, grid.voltage, grid.shape)  # response at 0 V, first point here
    assert img.shape == (50, 50) and img[3, 7] == raw[0]
    res_grid = compute_descriptors(grid.loops, grid.voltage, method="direct")
    vmap = structure_from_loops(grid.loops, grid.voltage, grid.shape, source="V+", analysis=res_grid)
    assert vmap.shape == (50, 50) and np.all(np.isfinite(vmap))
    with pytest.raises(ValueError, match="source: expected one of.*response@0V.*got 'height'"):
        structure_from_loops(grid.loops, grid.voltage, grid.shape, source="height")


def test_loop_figures_render(real, tmp_path):
    from structattn.loops import DESCRIPTORS
    from structattn.report.loop_figures import descriptor_maps_figure, example_fits_figure, fit_quality_figure, pick_example_fits

    loops, voltage, res = real
    units = {k: u for k, (u, _) in DESCRIPTORS.items()}
    descriptor_maps_figure(res.values, (50, 50), names=["V+", "V-"], units=units, quality=res.quality).savefig(tmp_path / "m.png")
    fit_quality_figure(res.fit_r2, (50, 50), quality=res.quality).savefig(tmp_path / "q.png")
    idx = pick_example_fits(res.fit_r2, quality=res.quality, count=4)
    assert len(idx) == 4 and res.quality[idx].all() and res.fit_r2[idx[0]] >= res.fit_r2[idx[-1]]
    example_fits_figure(voltage, res.clean_loops, res.fitted, indices=idx, r2=res.fit_r2, raw=loops).savefig(tmp_path / "f.png")
    assert all((tmp_path / n).stat().st_size > 1000 for n in ("m.png", "q.png", "f.png"))
