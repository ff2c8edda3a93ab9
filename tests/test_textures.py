"""Real PFM textures for the semi-synthetic benchmark: every shared image reads, and round-trips."""

from pathlib import Path

import numpy as np
import pytest

from structattn.data.semisynthetic import read_texture, save_texture

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
FILES = sorted((DATA / "pto_pfm_images").glob("*.h5")) + sorted(
    p for p in (DATA / "instrument").glob("*") if p.suffix in (".gwy", ".ibw"))


@pytest.mark.skipif(not FILES, reason="shared real data not found")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_shared_image_reads_as_a_texture(path, tmp_path):
    before = path.stat().st_mtime_ns
    img, channels, px = read_texture(path)
    assert path.stat().st_mtime_ns == before  # read, never opened for writing
    assert img.shape == (3, 256, 256) and channels == ("height", "amplitude", "phase")
    assert np.isfinite(img).all() and img.std(axis=(1, 2)).min() > 0
    assert px is not None and 1e-9 < px < 1e-7  # metres per pixel of 1-10 um scans
    save_texture(tmp_path / "t.npz", img, channels, px)
    img2, ch2, px2 = read_texture(tmp_path / "t.npz")
    np.testing.assert_array_equal(img, img2)
    assert ch2 == channels and px2 == pytest.approx(px)


def test_texture_errors_name_the_field(tmp_path):
    np.savez(tmp_path / "bad.npz", image=np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="channels"):
        read_texture(tmp_path / "bad.npz")
    (tmp_path / "bad.gwy").write_bytes(b"not a gwyddion file")
    with pytest.raises(ValueError, match="bad.gwy"):
        read_texture(tmp_path / "bad.gwy")
