"""explanations.h5: contract layout, merging, atomic write, mismatches refused."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from structattn.explain import read_explanations, write_explanations


def test_layout_merge_and_refusals(tmp_path):
    p = tmp_path / "explanations.h5"
    a = np.random.default_rng(0).random((3, 8, 8))
    write_explanations(p, point_index=[4, 9, 2], maps={"attention": {"V+": a}})
    write_explanations(p, point_index=[4, 9, 2], maps={"shap": {"V+": -a, "V-": a}})
    with h5py.File(p) as f:
        assert f["point_index"][()].tolist() == [4, 9, 2]
        assert f["attention/V+"].dtype == np.float32 and f["shap/V-"].shape == (3, 8, 8)
    idx, maps = read_explanations(p)
    assert set(maps) == {"attention", "shap"} and np.allclose(maps["shap"]["V+"], -a)
    assert not (tmp_path / "explanations.h5.tmp").exists()
    with pytest.raises(ValueError, match="point_index"):
        write_explanations(p, point_index=[1, 2, 3], maps={"ig": {"V+": a}})
    with pytest.raises(ValueError, match=r"maps\['ig'\]\['V\+'\]"):
        write_explanations(p, point_index=[4, 9, 2], maps={"ig": {"V+": a[:2]}})
    write_explanations(p, point_index=[1, 2, 3], maps={"ig": {"V+": a}}, replace=True)
    assert set(read_explanations(p)[1]) == {"ig"}
