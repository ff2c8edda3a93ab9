"""Domain segmentation, attribution-by-domain enrichment, and the PFM reader.

Fixed seeds throughout; the whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from structattn.data.patches import extract_patches
from structattn.data.pfm import read_pfm
from structattn.data.synthetic import LABEL_NAMES, make_synthetic
from structattn.physics import Segmentation, domain_enrichment, label_patches, segment_domains

PFM_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pto_pfm_images"
if not PFM_DIR.exists():  # worktrees sit beside main: ../shared from any of them
    PFM_DIR = Path("/work/shared/data/pto_pfm_images")
PFM_FILES = sorted(PFM_DIR.glob("PTO_Funakubo000*.h5"))


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(seed=0)


@pytest.fixture(scope="module")
def synth_seg(synth):
    return segment_domains(synth.image, synth.channels, seed=0)


def _as_truth_index(seg: Segmentation) -> np.ndarray:
    """Segmentation labels re-indexed into LABEL_NAMES (-1 for classes the generator lacks)."""
    lut = np.array([LABEL_NAMES.index(n) if n in LABEL_NAMES else -1 for n in seg.names])
    return lut[seg.labels]


# --- segmentation ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_segmentation_recovers_synthetic_labels(seed):
    # Thresholds: walls are 1-4 px geometric rims, so a one-pixel shift of every class
    # boundary (unavoidable after blur + noise) already costs ~8% of all pixels; measured
    # accuracy is 0.905-0.909 on seeds 0-2. 0.85 leaves margin for that and still fails on
    # a c+/c- swap (~0.2), on losing the a-domains (~0.75) or on walls read as a (~0.8).
    # c+/c- must NOT be swapped: the generator puts c+ at -90 deg = default c_plus_phase.
    s = make_synthetic(seed=seed) if seed else make_synthetic(seed=0)
    seg = segment_domains(s.image, s.channels, seed=0)
    pred = _as_truth_index(seg)
    acc = float((pred == s.labels).mean())
    assert acc >= 0.85, acc
    recall = {n: float((pred[s.labels == k] == k).mean()) for k, n in enumerate(LABEL_NAMES)}
    assert recall["c+"] >= 0.95 and recall["c-"] >= 0.95, recall  # bulk polarity: measured 0.99-1.0
    assert recall["a"] >= 0.6, recall  # measured 0.70; losses sit where bands cross c/c walls
    assert recall["wall_cc"] >= 0.7, recall  # measured 0.83
    assert recall["wall_ac"] >= 0.6, recall  # measured 0.72
    assert seg.method == "gmm+morphology"
    assert set(seg.names) >= {"c+", "c-", "a", "wall_cc", "wall_ac"}


def test_segmentation_same_seed_same_labels(synth, synth_seg):
    again = segment_domains(synth.image, synth.channels, seed=0)
    assert np.array_equal(again.labels, synth_seg.labels) and again.names == synth_seg.names


def test_c_plus_convention_swaps_names(synth, synth_seg):
    swapped = segment_domains(synth.image, synth.channels, c_plus_phase=90.0)
    a = _as_truth_index(synth_seg)
    b = _as_truth_index(swapped)
    cp, cm = LABEL_NAMES.index("c+"), LABEL_NAMES.index("c-")
    # Same partition with names exchanged; ties (p exactly 0, equidistant pixels) may differ.
    assert float(((a == cp) == (b == cm)).mean()) > 0.99
    assert float(((a == cm) == (b == cp)).mean()) > 0.99
    assert "deg" in swapped.notes["c+"]


def test_wrapped_phase_offset_does_not_matter(synth, synth_seg):
    # Real instruments store phase as e.g. -90..270 deg with an arbitrary offset: shifting
    # by 360 deg changes nothing, and a common offset just moves the c+ reference with it.
    img = synth.image.copy()
    ch = synth.channels.index("phase")
    img[ch] = img[ch] + 360.0
    seg = segment_domains(img, synth.channels)
    assert np.array_equal(seg.labels, synth_seg.labels)
    img[ch] = synth.image[ch] + 150.0
    seg = segment_domains(img, synth.channels, c_plus_phase=-90.0 + 150.0)
    assert float((_as_truth_index(seg) == _as_truth_index(synth_seg)).mean()) > 0.99


def test_missing_channel_error_names_channels(synth):
    with pytest.raises(ValueError, match=r"amplitude.*'amplitude', 'phase', 'height'|amplitude.*available"):
        segment_domains(synth.image, ("amp", "phase", "height"))
    with pytest.raises(ValueError, match=r"phase.*available channels: \['amplitude', 'ph', 'height'\]"):
        segment_domains(synth.image, ("amplitude", "ph", "height"))
    with pytest.raises(ValueError, match="image"):
        segment_domains(synth.image[0], ("amplitude",))


def test_no_a_domains_when_amplitude_is_uniform():
    rng = np.random.default_rng(0)
    h = w = 64
    phase = np.where(np.arange(w)[None, :] < 32, -90.0, 90.0) * np.ones((h, 1)) + rng.normal(0, 5, (h, w))
    amp = 1.0 + rng.normal(0, 0.03, (h, w))
    seg = segment_domains(np.stack([amp, phase]), ("amplitude", "phase"))
    assert "a" not in seg.names and {"c+", "c-", "wall_cc"} <= set(seg.names)
    assert "no a" in seg.notes["_amplitude_ratio"] or "a" not in seg.notes
    lab = _as_truth_index(seg)
    assert (lab[:, :28] == 0).all() and (lab[:, 36:] == 1).all()  # c+ left, c- right


def test_user_labels_override(synth):
    seg = Segmentation.from_labels(labels=synth.labels, names=synth.label_names)
    assert seg.method == "given" and seg.names == LABEL_NAMES
    assert abs(sum(seg.fractions.values()) - 1.0) < 1e-9
    with pytest.raises(ValueError, match="names"):
        Segmentation.from_labels(labels=synth.labels, names=("c+", "c-"))


def test_label_patches_align_with_image_patches(synth):
    lp = label_patches(synth.labels, synth.positions[:20], window=16)
    ref = extract_patches(synth.labels[None].astype(float), synth.positions[:20], window=16)[:, 0]
    assert lp.dtype == np.int64 and np.array_equal(lp, ref.astype(np.int64))
    r, c = np.rint(synth.positions[0]).astype(int)
    assert lp[0, 8, 8] == synth.labels[r, c]


# --- enrichment ----------------------------------------------------------------------------


def test_enrichment_constructed_known_value():
    # Point A: class 1 covers half the patch and gets all attribution (share 1, area 0.5).
    # Point B: class 1 covers 1/4 and gets half (share 0.5, area 0.25).
    # Ratio of means: (1 + 0.5)/2 / ((0.5 + 0.25)/2) = 2.0; class 0: 0.25 / 0.625 = 0.4.
    lab = np.zeros((2, 4, 4), np.int64)
    lab[0, :, :2] = 1
    lab[1, :, :1] = 1
    maps = np.zeros((2, 4, 4))
    maps[0, :, :2] = 1.0
    maps[1, :, :1] = 1.0
    maps[1, :, 1:] = 1.0 / 3.0  # 12 px sharing the other half
    r = domain_enrichment(maps, lab, names=("c+", "a"), n_boot=50)
    np.testing.assert_allclose(r.enrichment, [0.4, 2.0])
    np.testing.assert_allclose(r.per_point, [[0.0, 2.0], [2.0 / 3.0, 2.0]])


def test_enrichment_ci_excludes_one_when_concentrated_and_includes_it_for_noise():
    rng = np.random.default_rng(0)
    m, w = 200, 12
    lab = (rng.random((m, w, w)) < 0.3).astype(np.int64)  # class 1 ~30% of each patch
    focused = np.where(lab == 1, 1.0, 0.2) * rng.random((m, w, w))
    r = domain_enrichment(focused, lab, names=("c", "a"), n_boot=500)
    assert r.ci[1, 0] > 1.0 and r.enriched()["a"] and r.depleted()["c"]
    # Expected value: E[share] / E[area] with weights 1 vs 0.2 -> 1 / (0.3 + 0.7 * 0.2) = 2.27.
    assert 2.0 < r.enrichment[1] < 2.6
    noise = rng.random((m, w, w))
    r0 = domain_enrichment(noise, lab, names=("c", "a"), n_boot=500)
    assert (r0.ci[:, 0] < 1.0).all() and (r0.ci[:, 1] > 1.0).all(), r0.ci


@pytest.mark.parametrize("reference", ["area", "profile"])
def test_enrichment_reads_an_hdf5_stack_in_chunks_with_the_in_memory_answer(reference, tmp_path, monkeypatch):
    """Runs with many explained points pass the h5py datasets of explanations.h5: the maps are
    read CHUNK points at a time, and the answer is the one of the whole array in memory."""
    import h5py

    from structattn.physics import enrichment

    rng = np.random.default_rng(2)
    m, w = 250, 8
    lab = rng.integers(0, 3, (m, w, w))
    maps = np.where(lab == 2, 1.0, 0.3) * rng.random((m, w, w)) * np.hanning(w)[None, :, None]
    maps[7] = 0.0  # an empty map stays out, in both
    want = domain_enrichment(maps, lab, names=("a", "b", "c"), n_boot=200, reference=reference)
    with h5py.File(tmp_path / "maps.h5", "w") as f:
        f["m"] = maps.astype(np.float32)
    monkeypatch.setattr(enrichment, "CHUNK", 64)  # 250 points: 4 chunks, the last one short
    read = []
    with h5py.File(tmp_path / "maps.h5", "r") as f:
        ds = f["m"]

        class Spy:  # records every read of the dataset
            shape = ds.shape

            def __getitem__(self, key):
                read.append(key)
                return ds[key]

        got = domain_enrichment(Spy(), lab, names=("a", "b", "c"), n_boot=200, reference=reference)
    assert all(isinstance(k, slice) and (k.stop - k.start) <= 64 for k in read) and len(read) >= 4
    np.testing.assert_allclose(got.enrichment, want.enrichment, rtol=1e-6)
    np.testing.assert_allclose(got.ci, want.ci, rtol=1e-6)
    np.testing.assert_array_equal(got.valid, want.valid)


def test_enrichment_signed_absent_and_empty_maps():
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 2, (30, 8, 8))
    maps = rng.normal(size=(30, 8, 8))
    a = domain_enrichment(maps, lab, names=("x", "y", "never"), n_boot=100)
    b = domain_enrichment(-maps, lab, names=("x", "y", "never"), n_boot=100)
    np.testing.assert_allclose(a.enrichment, b.enrichment)  # |attribution|: sign ignored
    assert np.isnan(a.enrichment[2]) and np.isnan(a.per_point[:, 2]).all()  # absent class
    maps[3] = 0.0
    c = domain_enrichment(maps, lab, names=("x", "y"), n_boot=100)
    assert not c.valid[3] and c.n_points == 29 and c.to_dict()["n_empty_maps"] == 1
    c2 = domain_enrichment(maps, lab, names=("x", "y"), n_boot=100)
    np.testing.assert_array_equal(c.ci, c2.ci)  # same seed, same interval


def test_enrichment_input_errors():
    lab = np.zeros((3, 4, 4), np.int64)
    with pytest.raises(ValueError, match="label_patches"):
        domain_enrichment(np.ones((3, 4, 5)), lab, names=("a",))
    with pytest.raises(ValueError, match="names"):
        domain_enrichment(np.ones((3, 4, 4)), lab + 1, names=("a",))
    with pytest.raises(ValueError, match="maps.*non-finite"):
        domain_enrichment(np.full((3, 4, 4), np.nan), lab, names=("a",))
    with pytest.raises(TypeError, match="integer"):
        domain_enrichment(np.ones((3, 4, 4)), lab.astype(float), names=("a",))


def test_split_by_low_high(synth):
    lp = label_patches(synth.labels, synth.positions, window=16)
    rng = np.random.default_rng(0)
    maps = (lp == 2) + 0.1 * rng.random(lp.shape)
    r = domain_enrichment(maps, lp, names=synth.label_names, n_boot=100)
    sp = r.split_by(synth.targets[:, 0])
    n = synth.n_points
    assert abs(sp.low.n_points - n / 3) < 5 and abs(sp.high.n_points - n / 3) < 5
    assert sp.thresholds[0] < sp.thresholds[1]
    assert sp.diff_ci.shape == (len(synth.label_names), 2)
    d = sp.to_dict()
    assert {"low", "high", "diff_high_minus_low", "thresholds"} <= set(d)
    with pytest.raises(ValueError, match="values"):
        r.split_by(np.zeros(5))


def test_attention_on_a_pixels_is_enriched_for_a_not_cplus(synth):
    # A synthetic "attention" like the generator's rule for V+: soft weight on a-pixels
    # inside the causal disk, plus diffuse background everywhere.
    w = 24
    lp = label_patches(synth.labels, synth.positions, window=w)
    yy, xx = np.mgrid[0:w, 0:w] - w // 2
    disk = np.exp(-(yy**2 + xx**2) / (2 * 6.0**2))
    rng = np.random.default_rng(0)
    att = (lp == LABEL_NAMES.index("a")) * disk[None] + 0.05 * rng.random(lp.shape)
    att /= att.sum(axis=(1, 2), keepdims=True)
    r = domain_enrichment(att, lp, names=synth.label_names, n_boot=300)
    i_a, i_cp = LABEL_NAMES.index("a"), LABEL_NAMES.index("c+")
    assert r.ci[i_a, 0] > 1.0, r.ci[i_a]
    assert not r.enriched()["c+"] and r.ci[i_cp, 0] < 1.0


def test_enrichment_on_unsupervised_segmentation(synth, synth_seg):
    # The pipeline case: true-rule attention, labels from the segmentation (not the truth).
    w = 24
    truth = label_patches(synth.labels, synth.positions, window=w)
    seg = label_patches(synth_seg.labels, synth.positions, window=w)
    att = (truth == LABEL_NAMES.index("a")).astype(float) + 0.05
    r = domain_enrichment(att, seg, names=synth_seg.names, n_boot=300)
    assert r.enriched()["a"] and not r.enriched()["c+"] and not r.enriched()["c-"]


# --- real PFM images ------------------------------------------------------------------------


@pytest.mark.skipif(len(PFM_FILES) != 7, reason="real PFM images not found next to the project")
def test_real_pfm_images_read_and_segment():
    for i, path in enumerate(PFM_FILES):
        # SciFiReaders once (slow import), h5py for the rest: both must agree on layout.
        pfm = read_pfm(path, reader="auto" if i == 0 else "h5py")
        assert pfm.channels == ("height", "amplitude", "deflection", "phase")
        assert pfm.image.shape == (4, 256, 256) and pfm.image.dtype == np.float32
        assert pfm.units["phase"] == "deg" and 1e-9 < pfm.pixel_size < 3e-8
        seg = segment_domains(pfm.image, pfm.channels)
        assert seg.labels.shape == (256, 256)
        assert {"c+", "c-"} & set(seg.names)
        assert seg.labels.min() >= 0 and seg.labels.max() < len(seg.names)


def test_read_pfm_errors(tmp_path):
    bad = tmp_path / "broken_scan.h5"
    bad.write_bytes(b"not an hdf5 file" * 8)
    with pytest.raises(ValueError, match="broken_scan.h5"):
        read_pfm(bad, reader="h5py")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_pfm(tmp_path / "nope.h5")
    with pytest.raises(ValueError, match="reader"):
        read_pfm(bad, reader="igor")


def test_figures_draw(synth, synth_seg):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from structattn.report.domain_figures import (
        plot_enrichment,
        plot_enrichment_matrix,
        plot_point_enrichment,
        plot_segmentation,
    )

    fig, axs = plt.subplots(1, 4)
    plot_segmentation(synth_seg.labels, synth_seg.names, ax=axs[0], title="seg")
    plot_enrichment(("a", "b"), np.array([2.0, 0.5]), np.array([[1.5, 2.5], [0.4, 0.6]]), ax=axs[1],
                    groups={"low": (np.array([1.0, 1.0]), np.array([[0.9, 1.1], [0.9, 1.1]]))})
    plot_point_enrichment(synth.positions, np.linspace(0, 3, synth.n_points), shape=synth.shape, ax=axs[2])
    e = np.array([[2.0, 0.5, np.nan], [1.0, 1.1, 0.9]])
    ci = np.stack([e * 0.9, e * 1.1], axis=-1)
    plot_enrichment_matrix(["attention / V+", "ig / V+"], ("a", "c+", "wall"), e, ci, ax=axs[3])
    plt.close(fig)

    from structattn.report.domain_figures import domain_section_figures

    L = len(synth_seg.names)
    figs = domain_section_figures(
        labels=synth_seg.labels, names=synth_seg.names, background=synth.image[0], positions=synth.positions,
        rows=["attention / V+"], enrichment=np.ones((1, L)), ci=np.ones((1, L, 2)),
        per_point=np.ones((synth.n_points, L)),
        split=("low V+", np.ones(L), np.ones((L, 2)), "high V+", np.ones(L), np.ones((L, 2))),
    )
    assert set(figs) == {"segmentation", "enrichment", "class_maps", "split"}
    for f in figs.values():
        plt.close(f)


# --- whole-run analysis --------------------------------------------------------------------


def test_analyze_domains_all_methods_and_targets(synth, tmp_path):
    import json

    import h5py

    from structattn.physics import analyze_domains, segmentation_for

    seg = segmentation_for(synth)  # the sample carries labels: they win over segmenting
    assert seg.method == "given" and seg.names == LABEL_NAMES
    assert segmentation_for(synth, source="segment").method == "gmm+morphology"
    idx = np.arange(0, synth.n_points, 3)
    lp = label_patches(synth.labels, synth.positions[idx], window=16)
    rng = np.random.default_rng(0)
    maps = {
        "attention": {"V+": (lp == 2) + 0.1 * rng.random(lp.shape), "V-": (lp == 3) + 0.1 * rng.random(lp.shape)},
        "ig": {"V+": rng.normal(size=lp.shape)},
    }
    values = {t: synth.targets[idx, synth.target_names.index(t)] for t in ("V+", "V-")}
    da = analyze_domains(segmentation=seg, positions=synth.positions[idx], window=16, maps=maps,
                         values=values, point_index=idx, n_boot=100)
    assert da.results["attention"]["V+"].enriched()["a"]
    assert da.results["attention"]["V-"].enriched()["wall_cc"]
    assert not da.results["attention"]["V-"].enriched()["a"]
    d = da.to_dict()
    json.dumps(d, allow_nan=False)  # valid JSON, NaN turned into null
    assert "split" in d["enrichment"]["attention"]["V+"] and "split" in d["enrichment"]["ig"]["V+"]
    da.write_h5(tmp_path / "domains.h5")
    with h5py.File(tmp_path / "domains.h5") as f:
        assert f["attention/V+/per_point"].shape == (len(idx), len(LABEL_NAMES))
        assert f["labels"].shape == synth.shape
    with pytest.raises(ValueError, match=r"maps\['ig'\]\['V\+'\]"):
        analyze_domains(segmentation=seg, positions=synth.positions[idx], window=16,
                        maps={"ig": {"V+": np.zeros((3, 16, 16))}})


def test_profile_reference_removes_spatial_bias():
    # Class 1 always sits at the patch centre; a class-blind, centre-looking map "enriches"
    # it against area, but not against the map's own average profile.
    rng = np.random.default_rng(0)
    m, w = 100, 12
    lab = np.zeros((m, w, w), np.int64)
    lab[:, 4:8, 4:8] = 1
    lab |= (rng.random((m, w, w)) < 0.1).astype(np.int64)  # some class-1 pixels anywhere
    yy, xx = np.mgrid[0:w, 0:w] - w / 2 + 0.5
    centre = np.exp(-(yy**2 + xx**2) / 8.0)[None] * (1 + 0.1 * rng.random((m, w, w)))
    by_area = domain_enrichment(centre, lab, names=("c", "a"), n_boot=200)
    by_prof = domain_enrichment(centre, lab, names=("c", "a"), n_boot=200, reference="profile")
    assert by_area.enriched()["a"]
    assert by_prof.ci[1, 0] < 1.0 < by_prof.ci[1, 1], by_prof.ci
    assert by_prof.to_dict()["reference"] == "profile"
    with pytest.raises(ValueError, match="reference"):
        domain_enrichment(centre, lab, names=("c", "a"), reference="disk")


def test_domains_from_explanations_file(synth, tmp_path):
    import h5py

    from structattn.physics import domains_from_explanations

    idx = np.arange(0, synth.n_points, 5)
    lp = label_patches(synth.labels, synth.positions[idx], window=16)
    with h5py.File(tmp_path / "explanations.h5", "w") as f:
        f["point_index"] = idx
        f["attention/V+"] = ((lp == 2) + 0.1).astype(np.float32)
        f["attention/V-"] = ((lp == 3) + 0.1).astype(np.float32)
    da = domains_from_explanations(tmp_path / "explanations.h5", sample=synth, n_boot=100)
    assert da.window == 16 and np.array_equal(da.point_index, idx)
    assert da.results["attention"]["V+"].enriched()["a"] and "V-" in da.splits["attention"]
    import json

    from structattn.physics import write_run_domains

    (tmp_path / "metrics.json").write_text(json.dumps({"V+": {"r2": 0.9}}))
    write_run_domains(tmp_path, da)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["V+"] == {"r2": 0.9} and metrics["domains"]["file"] == "domains.h5"
    assert (tmp_path / "domains.h5").exists()
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="point_index"):
        domains_from_explanations(tmp_path / "bad.h5", sample=synth)


def test_segment_parameter_errors(synth):
    with pytest.raises(ValueError, match="a_min_radius"):
        segment_domains(synth.image, synth.channels, a_min_radius=0)
    with pytest.raises(ValueError, match="low_ratio"):
        segment_domains(synth.image, synth.channels, low_ratio=1.5)
    with pytest.raises(ValueError, match="channels"):
        segment_domains(synth.image, ("amplitude", "phase"))
