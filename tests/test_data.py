import numpy as np
import pytest

from structattn.data import Sample, extract_patches, load_bundle, make_synthetic, patch_inside, save_bundle
from structattn.data.synthetic import LABEL_NAMES, causal_masks, disk_fractions


def test_patches_are_centred_on_points():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 50, 60)).astype(np.float32)
    pos = np.array([[10, 12], [25, 30], [40.4, 50.6]])
    p = extract_patches(img, pos, window=8, pad_mode="reflect")
    assert p.shape == (3, 2, 8, 8)
    for (r, c), patch in zip(np.rint(pos).astype(int), p):
        # DESIGN.md alignment: patch = image[r-w/2 : r+w/2, c-w/2 : c+w/2]
        np.testing.assert_array_equal(patch, img[:, r - 4 : r + 4, c - 4 : c + 4])


def test_edge_points_padding_and_exclusion():
    img = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    pos = np.array([[0, 0], [5, 5]])
    p = extract_patches(img, pos, window=4, pad_mode="edge")
    assert p[0, 0, 0, 0] == img[0, 0, 0]  # padded with the edge value
    np.testing.assert_array_equal(patch_inside(pos, shape=(10, 10), window=4), [False, True])
    with pytest.raises(ValueError, match="leaving the image"):
        extract_patches(img, pos, window=4, pad_mode="exclude")
    with pytest.raises(ValueError, match="pad_mode"):
        extract_patches(img, pos, window=4, pad_mode="wrapx")


def test_synthetic_is_deterministic_and_follows_its_rule():
    a, b = make_synthetic(seed=3, size=96, spacing=8), make_synthetic(seed=3, size=96, spacing=8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.loops, b.loops)
    assert not np.array_equal(a.image, make_synthetic(seed=4, size=96, spacing=8).image)
    s = make_synthetic(seed=0)
    f = disk_fractions(s.labels, s.positions, radius=s.truth["radius"], n_classes=len(LABEL_NAMES))
    f_a = f[:, LABEL_NAMES.index("a")]
    v_plus = s.targets[:, list(s.target_names).index("V+")]
    # V+ = 1.5 + 4 f_a + N(0, 0.03): residual std recovers the parameter noise.
    resid = v_plus - (1.5 + 4.0 * f_a)
    assert abs(resid.mean()) < 0.01 and 0.02 < resid.std() < 0.04
    height = s.targets[:, list(s.target_names).index("height")]
    resid = height - (1.0 - 1.2 * f_a)  # height = 1 - 1.2 f_a + N(0, 0.03)
    assert abs(resid.mean()) < 0.01 and 0.02 < resid.std() < 0.04
    # every class present, a-domains a sizeable share
    shares = np.bincount(s.labels.ravel(), minlength=5) / s.labels.size
    assert (shares > 0.03).all() and shares[LABEL_NAMES.index("a")] > 0.1
    # the loops switch where the targets say: rising-branch zero crossing near V+
    v = s.voltage
    rising = np.flatnonzero(np.gradient(v) > 0)[:16]
    i = int(np.argmax(v_plus < 3))
    loop = s.loops[i, rising]
    cross = np.interp(0.0, loop, v[rising])
    assert abs(cross - v_plus[i]) < 0.4


def test_synthetic_source_string_sets_the_radius_and_is_recorded():
    from structattn.data import load_sample

    s = load_sample("synthetic:seed=2,size=96,spacing=8,radius=6")
    assert s.truth["radius"] == 6.0 and s.meta["spec"] == "synthetic:seed=2,size=96,spacing=8,radius=6"
    # the recorded spec reproduces the same sample
    np.testing.assert_array_equal(load_sample(s.meta["spec"]).targets, s.targets)
    assert not np.array_equal(load_sample("synthetic:seed=2,size=96,spacing=8").targets, s.targets)
    with pytest.raises(ValueError, match="radius must be a number"):
        load_sample("synthetic:radius=wide")
    with pytest.raises(ValueError, match="radius=R"):
        load_sample("synthetic:depth=3")
    with pytest.raises(ValueError, match="radius must be >= 1"):
        load_sample("synthetic:radius=0")
    with pytest.raises(ValueError, match="causal_radius: expected a radius >= 1 px"):
        make_synthetic(causal_radius=0.5)


def test_causal_masks_are_the_rule_classes_inside_the_disk():
    s = make_synthetic(seed=0, size=96, spacing=8)
    m = causal_masks(s, target="V+", window=16)
    r, c = np.rint(s.positions[0]).astype(int)
    lab = s.labels[r - 8 : r + 8, c - 8 : c + 8]
    yy, xx = np.mgrid[0:16, 0:16] - 8
    assert s.truth["radius"] == 12.0  # the documented default
    np.testing.assert_array_equal(m[0], (lab == LABEL_NAMES.index("a")) & (yy**2 + xx**2 <= 144))


def test_bundle_round_trip(tmp_path):
    s = make_synthetic(seed=0, size=96, spacing=8)
    path = save_bundle(s, tmp_path / "b.npz")
    t = load_bundle(path)
    np.testing.assert_array_equal(t.image, s.image)
    np.testing.assert_array_equal(t.targets, s.targets)
    assert t.target_names == s.target_names and t.label_names == s.label_names
    assert t.truth == s.truth and t.meta["target_units"]["V+"] == "V"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image=np.zeros((1, 8, 8)), positions=[[9, 1]], targets=[[1.0]]), "outside the 8x8 image"),
        (dict(image=np.full((1, 8, 8), np.nan), positions=[[1, 1]], targets=[[1.0]]), "image: contains 64 non-finite"),
        (dict(image=np.zeros((8, 8)), positions=[[1, 1], [2, 2]], targets=[[1.0]]), r"targets: expected one row per point"),
        (dict(image=np.zeros((8, 8)), positions=[[1, 1]], loops=np.zeros((1, 5)), voltage=np.zeros(4)), "voltage: expected length V=5"),
        (dict(image=np.zeros((8, 8)), positions=[1, 1], targets=[[1.0]]), r"positions: expected a 2-D array"),
        (dict(image=np.zeros((8, 8)), positions=[[1, 1]]), "needs `loops`"),
    ],
)
def test_sample_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sample(**kwargs)


def test_bundle_errors_name_the_problem(tmp_path):
    np.savez(tmp_path / "nopos.npz", image=np.zeros((8, 8)), targets=np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['positions'\]"):
        load_bundle(tmp_path / "nopos.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_bundle(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "missing.npz")
