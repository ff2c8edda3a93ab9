"""Issue 14: from the microscope's own files to a bundle and a run.

Readers (every shared real file), co-registration math, the USID SHO-fit layout, plain-array
grids, `structattn bundle` end to end, fuzzed files (one-line errors, inputs untouched) and one
`structattn run --image --loops` with a tiny model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from structattn.cli import main
from structattn.data import load_bundle
from structattn.data.coregister import place_grid, sample_from_files
from structattn.data.grids import read_grid
from structattn.data.readers import read_image

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
GWY = DATA / "instrument" / "PTO_110_Virgin0001.gwy"
IBW = DATA / "instrument" / "BTFO_DSO_pfm.ibw"
BEPS = DATA / "pto_beps_50x50.h5"
PFM = sorted((DATA / "pto_pfm_images").glob("PTO_Funakubo000*.h5"))
# scan sizes (width = height, metres) stated by the files; the PFM ones as in shared/data/README.md
SCAN = {GWY.name: 1.003921568627451e-05, IBW.name: 2e-6, "PTO_Funakubo0001.h5": 1e-6, "PTO_Funakubo0002.h5": 5e-6,
        "PTO_Funakubo0003.h5": 1e-6, "PTO_Funakubo0004.h5": 3e-6, "PTO_Funakubo0005.h5": 1e-6,
        "PTO_Funakubo0006.h5": 5e-6, "PTO_Funakubo0007.h5": 1e-6}
IMAGES = [GWY, IBW] + PFM
needs_data = pytest.mark.skipif(not (BEPS.is_file() and GWY.is_file() and IBW.is_file() and len(PFM) == 7),
                                reason="shared real data not found next to the project")


def _state(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _writable_copy(src: Path, dst: Path) -> Path:
    """A writable copy: a reader that opens files r+ would succeed on it (and change its mtime)."""
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)
    os.utime(dst, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))  # an mtime any write would move
    return dst


# ------------------------------------------------------------------------------------ readers


@needs_data
@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_every_shared_image_reads_with_names_units_and_scan_size(path, tmp_path):
    copy = _writable_copy(path, tmp_path / path.name)
    before = _state(copy)
    img = read_image(copy)
    assert _state(copy) == before  # bytes and mtime unchanged
    assert img.channels == ("height", "amplitude", "phase")
    assert img.image.shape == (3, 256, 256) and img.image.dtype == np.float32
    assert img.units == {"height": "m", "amplitude": "m", "phase": "deg"}
    assert img.scan_size == pytest.approx((SCAN[path.name],) * 2, rel=1e-9)
    assert img.pixel_size == pytest.approx(SCAN[path.name] / 255)
    assert img.meta["all_channels"] == ["height", "amplitude", "deflection", "phase"]
    # channel choice by name, in the asked order
    two = read_image(copy, channels="phase,deflection")
    assert two.channels == ("phase", "deflection")
    np.testing.assert_array_equal(two.image[0], img.image[2])


@needs_data
def test_read_pfm_scifireaders_path_never_opens_for_writing(tmp_path):
    # SciFiReaders' NSIDReader opens r+ and moved the mtime of a writable file; ours must not.
    from structattn.data.pfm import read_pfm

    copy = _writable_copy(PFM[0], tmp_path / "scan.h5")
    before = _state(copy)
    pfm = read_pfm(copy, reader="scifireaders")
    assert pfm.meta["reader"] == "scifireaders" and pfm.image.shape == (4, 256, 256)
    assert _state(copy) == before


@needs_data
def test_shared_beps_grid_reads_as_50x50_over_2um(tmp_path):
    from structattn.loops import read_beps_nsid

    copy = _writable_copy(BEPS, tmp_path / "beps.h5")
    before = _state(copy)
    g = read_grid(copy)
    assert _state(copy) == before
    assert g.loops.shape == (50, 50, 64) and g.extent == pytest.approx((2e-6, 2e-6))
    assert g.voltage[0] == 0 and g.voltage.max() == pytest.approx(8.5) and g.voltage.min() == pytest.approx(-8.5)
    ref = read_beps_nsid(copy)
    np.testing.assert_array_equal(g.loops.reshape(2500, 64), ref.loops)


# ------------------------------------------------------------------------------ co-registration


def test_place_grid_maps_known_extent_and_offset_to_known_pixels():
    # 101 x 201 px image of a 1 x 2 um scan: 10 nm per pixel both ways
    pos, reg = place_grid((3, 5), (101, 201), scan_size=(2e-6, 1e-6), extent=(4e-7, 2e-7), offset=(5e-7, 3e-7))
    # point (i, j) at x = 0.5 + 0.1 j um -> col 50 + 10 j; y = 0.3 + 0.1 i um -> row 30 + 10 i
    want = np.array([[30 + 10 * i, 50 + 10 * j] for i in range(3) for j in range(5)], float)
    np.testing.assert_allclose(pos, want, atol=1e-9)
    assert reg.mode == "physical" and reg.pixel_box == pytest.approx((30, 50, 50, 90))
    # same scan area: first and last points on the image's edges, no physical size needed
    pos, reg = place_grid((50, 50), (256, 256))
    assert pos[0].tolist() == [0, 0] and pos[-1].tolist() == [255, 255] and pos[1, 1] == pytest.approx(255 / 49)
    assert reg.mode == "same scan area"
    # the grid's own extent is used when only an offset is given
    pos, _ = place_grid((2, 2), (11, 11), scan_size=(1e-6, 1e-6), offset=(0, 0), grid_extent=(5e-7, 5e-7))
    np.testing.assert_allclose(pos[-1], [5, 5])


def test_place_grid_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"--extent/--offset: the grid 'g.h5'.*outside the image 'i.ibw'"):
        place_grid((3, 3), (64, 64), scan_size=(1e-6, 1e-6), extent=(1e-6, 1e-6), offset=(1e-7, 0),
                   image_name="i.ibw", grid_name="g.h5")
    with pytest.raises(ValueError, match="states no physical scan size"):
        place_grid((3, 3), (64, 64), scan_size=None, extent=(1e-6, 1e-6))
    with pytest.raises(ValueError, match="--offset: the grid"):
        place_grid((3, 3), (64, 64), scan_size=(1e-6, 1e-6), offset=(0, 0))
    with pytest.raises(ValueError, match="--extent: expected positive"):
        place_grid((3, 3), (64, 64), scan_size=(1e-6, 1e-6), extent="0,1e-6")
    with pytest.raises(ValueError, match="--offset: expected two numbers"):
        place_grid((3, 3), (64, 64), scan_size=(1e-6, 1e-6), extent="1e-7,1e-7", offset="a,b")


# ------------------------------------------------------------------------------ USID SHO fit


def _write_usid(path: Path, amp: np.ndarray, phase: np.ndarray, dc: np.ndarray, *, with_phase: bool = True,
                fit: bool = True) -> None:
    """A small pyUSID / BGlib-like BEPS file.

    amp, phase: (rows, cols, n_dc, 2 fields, 2 cycles) of the SHO fit. Spectroscopic order as BGlib:
    Field fastest (in-field 0, out-of-field 1), then DC_Offset, then Cycle. Positions: X fastest.
    """
    rows, cols, n_dc = amp.shape[:3]
    str_attr = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        chan = f.create_group("Measurement_000/Channel_000")
        yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        p_ind = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.uint32)  # X fastest
        pi = chan.create_dataset("Position_Indices", data=p_ind)
        pv = chan.create_dataset("Position_Values", data=p_ind * np.array([0.5, 0.25]))  # um
        for d in (pi, pv):
            d.attrs.create("labels", ["X", "Y"], dtype=str_attr)
            d.attrs.create("units", ["um", "um"], dtype=str_attr)
        field, dci, cyc = np.meshgrid(np.arange(2), np.arange(n_dc), np.arange(2), indexing="ij")
        order = np.lexsort((field.ravel(), dci.ravel(), cyc.ravel()))  # field fastest, cycle slowest
        s_ind = np.vstack([dci.ravel()[order], field.ravel()[order], cyc.ravel()[order]]).astype(np.uint32)
        s_val = s_ind.astype(float)
        s_val[0] = dc[s_ind[0]]
        # raw spectra (complex, with a Frequency dimension) as the translator writes them
        raw = chan.create_dataset("Raw_Data", data=np.ones((rows * cols, 3 * s_ind.shape[1]), np.complex64))
        r_ind = np.vstack([np.tile(np.arange(3), s_ind.shape[1]), np.repeat(s_ind, 3, axis=1)]).astype(np.uint32)
        ri = chan.create_dataset("Spectroscopic_Indices", data=r_ind)
        rv = chan.create_dataset("Spectroscopic_Values", data=r_ind.astype(float))
        for d in (ri, rv):
            d.attrs.create("labels", ["Frequency", "DC_Offset", "Field", "Cycle"], dtype=str_attr)
        for k, d in (("Position_Indices", pi), ("Position_Values", pv), ("Spectroscopic_Indices", ri),
                     ("Spectroscopic_Values", rv)):
            raw.attrs[k] = d.ref
        raw.attrs["quantity"], raw.attrs["units"] = "Deflection", "V"
        if not fit:
            return
        sho = chan.create_group("Raw_Data-SHO_Fit_000")
        si = sho.create_dataset("Spectroscopic_Indices", data=s_ind)
        sv = sho.create_dataset("Spectroscopic_Values", data=s_val)
        for d in (si, sv):
            d.attrs.create("labels", ["DC_Offset", "Field", "Cycle"], dtype=str_attr)
            d.attrs.create("units", ["V", "", ""], dtype=str_attr)
        names = ["Amplitude [V]", "Frequency [Hz]", "Quality Factor"] + (["Phase [rad]"] if with_phase else []) \
            + ["R2 Criterion"]
        sho32 = np.dtype([(n, np.float32) for n in names])
        rec = np.zeros((rows * cols, s_ind.shape[1]), sho32)
        flat_amp = amp.reshape(rows * cols, n_dc, 2, 2)
        flat_ph = phase.reshape(rows * cols, n_dc, 2, 2)
        rec["Amplitude [V]"] = flat_amp[:, s_ind[0], s_ind[1], s_ind[2]]
        if with_phase:
            rec["Phase [rad]"] = flat_ph[:, s_ind[0], s_ind[1], s_ind[2]]
        rec["Frequency [Hz]"] = 3.5e5
        for name in ("Guess", "Fit"):
            d = sho.create_dataset(name, data=rec if name == "Fit" else np.zeros_like(rec))
            for k, a in (("Position_Indices", pi), ("Position_Values", pv), ("Spectroscopic_Indices", si),
                         ("Spectroscopic_Values", sv)):
                d.attrs[k] = a.ref
            d.attrs["quantity"], d.attrs["units"] = "SHO", "compound"


@pytest.fixture
def sho_arrays():
    rng = np.random.default_rng(0)
    rows, cols, n_dc = 3, 4, 16  # not square: a transposed grid would show
    dc = 8 * np.sin(np.linspace(0, 2 * np.pi, n_dc, endpoint=False))
    amp = rng.uniform(0.5, 2.0, (rows, cols, n_dc, 2, 2)).astype(np.float32)
    phase = rng.uniform(-np.pi, np.pi, (rows, cols, n_dc, 2, 2)).astype(np.float32)
    return amp, phase, dc


def test_usid_sho_fit_reads_amplitude_cos_phase(tmp_path, sho_arrays):
    amp, phase, dc = sho_arrays
    path = _writable_copy_of_new(tmp_path / "beps_usid.h5", lambda p: _write_usid(p, amp, phase, dc))
    before = _state(path)
    g = read_grid(path)  # default: out-of-field (1), cycle 0
    assert _state(path) == before
    assert g.loops.shape == (3, 4, 16) and g.meta["dataset"].endswith("SHO_Fit_000/Fit")
    np.testing.assert_allclose(g.loops, amp[..., 1, 0] * np.cos(phase[..., 1, 0]), rtol=1e-6)
    np.testing.assert_allclose(g.voltage, dc)
    assert g.extent == pytest.approx((1.5e-6, 0.5e-6))  # X 0..1.5 um, Y 0..0.5 um
    g = read_grid(path, field="in-field", cycle=1)
    np.testing.assert_allclose(g.loops, amp[..., 0, 1] * np.cos(phase[..., 0, 1]), rtol=1e-6)
    assert g.meta["choices"] == {"Field": "in-field", "Cycle": 1}
    with pytest.raises(ValueError, match="--cycle 2: the file has 2 cycle"):
        read_grid(path, cycle=2)


def test_usid_raw_spectra_only_asks_for_an_sho_fit(tmp_path, sho_arrays):
    amp, phase, dc = sho_arrays
    path = tmp_path / "raw_only.h5"
    _write_usid(path, amp, phase, dc, fit=False)
    with pytest.raises(ValueError, match=r"loops 'raw_only.h5': dataset .*Raw_Data.* \(complex\); fit them first"):
        read_grid(path)


def _writable_copy_of_new(path: Path, write) -> Path:
    write(path)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return path


# ------------------------------------------------------------------------------ plain arrays


def test_npy_and_npz_grids(tmp_path):
    loops = np.random.default_rng(1).standard_normal((4, 6, 10))
    volt = np.linspace(-5, 5, 10)
    np.savez(tmp_path / "g.npz", loops=loops, voltage=volt, extent=[3e-7, 1e-7])
    g = read_grid(tmp_path / "g.npz")
    np.testing.assert_array_equal(g.loops, loops)
    assert g.shape == (4, 6) and g.extent == (3e-7, 1e-7)
    np.save(tmp_path / "g.npy", loops)
    with pytest.raises(ValueError, match=r"loops 'g.npy': a .npy grid holds no voltage"):
        read_grid(tmp_path / "g.npy")
    g = read_grid(tmp_path / "g.npy", voltage=",".join(str(v) for v in volt))
    np.testing.assert_allclose(g.voltage, volt)
    np.testing.assert_array_equal(g.loops, loops)
    with pytest.raises(ValueError, match=r"field 'voltage' must have one value per loop step \(V=10\)"):
        read_grid(tmp_path / "g.npy", voltage=[1.0, 2.0])
    np.savez(tmp_path / "flat.npz", loops=loops.reshape(24, 10), voltage=volt)
    with pytest.raises(ValueError, match=r"field 'loops' must be \(rows, cols, V\)"):
        read_grid(tmp_path / "flat.npz")


# ------------------------------------------------------------------------- structattn bundle


@needs_data
def test_bundle_command_places_the_grid_where_the_extent_says(tmp_path, capsys):
    loops = np.random.default_rng(2).standard_normal((5, 4, 12))
    np.savez(tmp_path / "grid.npz", loops=loops, voltage=np.linspace(0, 1, 12))
    out = tmp_path / "s.npz"
    # ibw: 2 um over 256 px; grid 4 cols x 5 rows over 0.6 x 0.8 um from (0.5, 0.2) um
    rc = main(["bundle", "--image", str(IBW), "--loops", str(tmp_path / "grid.npz"), "--out", str(out),
               "--extent", "6e-7,8e-7", "--offset", "5e-7,2e-7"])
    assert rc == 0, capsys.readouterr().err
    s = load_bundle(out)
    px = 2e-6 / 255
    want = np.array([[(2e-7 + i * 2e-7) / px, (5e-7 + j * 2e-7) / px] for i in range(5) for j in range(4)])
    np.testing.assert_allclose(s.positions, want, rtol=1e-9)
    np.testing.assert_array_equal(s.loops, loops.reshape(20, 12))  # row-major: point k = row k // 4, col k % 4
    assert s.channels == ("height", "amplitude", "phase")
    assert s.meta["channel_units"] == {"height": "m", "amplitude": "m", "phase": "deg"}
    assert s.meta["registration"]["mode"] == "physical" and s.pixel_size == pytest.approx(px)
    np.testing.assert_array_equal(s.image, read_image(IBW).image)
    assert main(["bundle", "--image", str(IBW), "--loops", str(tmp_path / "grid.npz"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err  # never overwritten silently


# ------------------------------------------------------------------------------ fuzzed files


def _truncate(src: Path, dst: Path, keep: int) -> Path:
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


FUZZ = {
    # name: (build inputs -> (args, files), text the error must contain besides the file name)
    "truncated_gwy": "image",
    "truncated_ibw": "image",
    "truncated_h5": "loops",
    "wrong_dtype": "field 'loops' has dtype",
    "missing_channel": "channel 'piezo' not found",
    "usid_missing_phase": "no field 'Phase [rad]'",
    "grid_outside_image": "--extent/--offset",
}


@needs_data
@pytest.mark.parametrize("case", list(FUZZ))
def test_fuzzed_files_fail_in_one_line_naming_file_and_field_and_stay_untouched(case, tmp_path, capsys, sho_arrays):
    ibw = _writable_copy(IBW, tmp_path / "scan.ibw")
    beps = _writable_copy(BEPS, tmp_path / "grid.h5")
    image, loops, extra, named = ibw, beps, [], None
    if case == "truncated_gwy":
        image = named = _truncate(GWY, tmp_path / "cut.gwy", 4000)
    elif case == "truncated_ibw":
        image = named = _truncate(IBW, tmp_path / "cut.ibw", 4000)
    elif case == "truncated_h5":
        loops = named = _truncate(BEPS, tmp_path / "cut.h5", 50_000)
    elif case == "wrong_dtype":
        np.savez(tmp_path / "text.npz", loops=np.full((2, 2, 4), "x"), voltage=np.arange(4.0))
        loops = named = tmp_path / "text.npz"
    elif case == "missing_channel":
        image = named = _writable_copy(GWY, tmp_path / "scan.gwy")
        extra = ["--channels", "amplitude,piezo"]
    elif case == "usid_missing_phase":
        amp, phase, dc = sho_arrays
        _write_usid(tmp_path / "nophase.h5", amp, phase, dc, with_phase=False)
        loops = named = tmp_path / "nophase.h5"
    elif case == "grid_outside_image":
        extra, named = ["--extent", "2e-6,2e-6", "--offset", "5e-7,0"], beps
    inputs = [image, loops]
    for p in inputs:
        os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = [_state(p) for p in inputs]
    out = tmp_path / "out.npz"
    rc = main(["bundle", "--image", str(image), "--loops", str(loops), "--out", str(out), *extra])
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, err
    assert captured.out == ""  # no reader chatter (a damaged .gwy once dumped its bytes to stdout)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert named.name in lines[0] and FUZZ[case] in lines[0], lines[0]
    assert [_state(p) for p in inputs] == before  # byte-identical, same modification time
    assert not out.exists()


# ------------------------------------------------------------------- run --image --loops


@needs_data
def test_run_from_image_and_loops_computes_standard_descriptors(tmp_path, capsys):
    from structattn.loops import STANDARD_DESCRIPTORS
    from structattn.runfolder import RunFolder

    beps = read_grid(BEPS)  # a 17 x 17 subgrid of the real loops: fast, and still real
    np.savez(tmp_path / "sub.npz", loops=beps.loops[::3, ::3], voltage=beps.voltage)
    ibw = _writable_copy(IBW, tmp_path / "scan.ibw")
    before = _state(ibw), _state(tmp_path / "sub.npz")
    out = tmp_path / "run"
    rc = main(["run", "--image", str(ibw), "--loops", str(tmp_path / "sub.npz"), "--out", str(out),
               "--epochs", "2", "--dim", "16", "--depth", "1", "--heads", "2", "--window", "16", "--patch", "4",
               "--stem", "0", "--blocks", "3", "--methods", "attention", "--points", "6", "--no-cnn-baseline", "--no-domains", "--quiet", "--ensemble", "1",
               "--readout", "spatial"])
    assert rc == 0, capsys.readouterr().err
    assert (_state(ibw), _state(tmp_path / "sub.npz")) == before
    run = RunFolder(out)
    assert tuple(run.metrics["targets"]) == STANDARD_DESCRIPTORS  # loops and no targets: the standard set
    src = json.loads(run.config["data"]["source"])
    assert src == {"image": str(ibw), "loops": str(tmp_path / "sub.npz")}
    s = run.sample  # rebuilt from the files; the checksum matches the run's
    assert s.n_points == 17 * 17 and s.positions[-1].tolist() == [255, 255]
    assert (out / "registration.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "Points on the image (co-registration)" in html and "covers the same scan area" in html
    assert tuple(s.meta["registration"]["grid_shape"]) == (17, 17)
    # --readout spatial: recorded, and raw attention now follows what each target reads
    assert run.config["model"]["readout"] == "spatial"
    with h5py.File(out / "explanations.h5") as f:
        assert not np.allclose(f["attention/V+"][:], f["attention/imprint"][:])


def test_run_arguments_are_checked(tmp_path, capsys):
    assert main(["run", "--image", "a.ibw", "--out", str(tmp_path / "r")]) == 2
    assert "--loops: --image and --loops go together" in capsys.readouterr().err
    assert main(["run", "x.npz", "--image", "a.ibw", "--loops", "b.h5", "--out", str(tmp_path / "r")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "r")]) == 2
    assert "BUNDLE: give a bundle" in capsys.readouterr().err
    assert main(["run", "x.npz", "--extent", "1e-6,1e-6", "--out", str(tmp_path / "r")]) == 2
    assert "--extent: only used with --image and --loops" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@needs_data
def test_sample_from_files_small_grid_in_large_scan_gets_blocks_that_hold_points():
    # the shared 2 um BEPS grid placed in the middle of the 10 um Gwyddion scan: 51 x 51 px of 256 x 256
    from structattn.train.split import point_bounds, spatial_block_split

    s = sample_from_files(GWY, BEPS, extent="2e-6,2e-6", offset="4e-6,4e-6")
    lo, hi = s.positions.min(0), s.positions.max(0)
    np.testing.assert_allclose(lo, 4e-6 / (SCAN[GWY.name] / 255))
    np.testing.assert_allclose(hi, 6e-6 / (SCAN[GWY.name] / 255))
    bounds = point_bounds(s.positions, s.shape)
    assert bounds is not None and bounds[1] - bounds[0] < 60
    sp = spatial_block_split(s.positions, shape=s.shape, blocks=4, bounds=bounds, seed=0)
    assert len(np.unique(sp.block_of_point)) == 16  # every block holds points
    assert point_bounds(np.array([[0.0, 0.0], [250, 250]]), (256, 256)) is None  # full coverage: the image
