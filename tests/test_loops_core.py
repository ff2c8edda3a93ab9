"""Loop analysis on synthetic loops with known answers (fixed seeds, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn.loops import (
    DESCRIPTORS,
    LoopFitter,
    compute_descriptors,
    loop_model_np,
    loop_model_torch,
    preprocess_loops,
    split_branches,
    switching_descriptors_from_params,
)
from structattn.loops.direct import direct_descriptors
from structattn.loops.model import bglib_loop_fit_function, loop_model_jacobian_torch

# The real file's waveform: 0 -> +8.5 -> -8.5 -> -0.53 V in 0.53125 V steps.
V_REAL = np.concatenate([np.arange(0, 17), np.arange(16, -17, -1)[1:], np.arange(-16, 0)[1:]]) * 0.53125


def synthetic(n: int, *, seed: int, noise: float, voltage=V_REAL, symmetric=False):
    """n loops with random known parameters; noise as a fraction of the loop height."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.3, 1.5, (n, 4))
    if symmetric:
        w[:, 1], w[:, 3] = w[:, 0], w[:, 2]
    p = np.column_stack(
        [
            rng.uniform(-1, 1, n),
            rng.uniform(0.5, 2, n) * rng.choice([-1, 1], n),
            rng.uniform(-6, -1, n),
            rng.uniform(1, 6, n),
            rng.uniform(-0.02, 0.02, n),
            w,
        ]
    )
    clean = loop_model_np(voltage, p, rising=split_branches(voltage).rising_mask)
    noisy = clean + noise * np.abs(p[:, 1:2]) * rng.normal(size=clean.shape)
    return p, clean, noisy


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- waveform


def test_branches_start_at_zero_reassemble_across_wrap():
    b = split_branches(V_REAL)
    assert b.n_cycles == 1
    fall, rise = b.cycles[0]
    assert V_REAL[fall[0]] == 8.5 and np.all(np.diff(V_REAL[fall]) < 0)
    # the rising branch starts at -8.5 V (index 48) and continues across the wrap to +7.97 V
    assert V_REAL[rise[0]] == -8.5 and np.all(np.diff(V_REAL[rise]) > 0)
    assert sorted(np.concatenate([fall, rise]).tolist()) == list(range(V_REAL.size))


def test_branches_start_at_negative_vmax():
    v = np.concatenate([np.linspace(-8, 8, 17), np.linspace(7, -7, 15)])
    b = split_branches(v)
    assert b.n_cycles == 1
    assert b.rising[0].tolist() == list(range(16))
    assert b.falling[0].tolist() == list(range(16, 32))


def test_branches_two_cycles_and_sine():
    b = split_branches(np.tile(V_REAL, 2))
    assert b.n_cycles == 2 and len(b.rising) == 2 and len(b.falling) == 2
    for fall, rise in b.cycles:  # each pair: a falling branch then the rising branch that follows it
        assert (fall[-1] + 1) % (2 * V_REAL.size) == rise[0]
    t = np.linspace(0, 2 * np.pi, 80, endpoint=False)
    b = split_branches(8 * np.sin(t))
    assert b.n_cycles == 1 and b.direction.sum() in (-2, 0, 2)


@pytest.mark.parametrize(
    "voltage, match",
    [(np.zeros((3, 4)), "1-D"), (np.array([0.0, 1, np.nan, 2, 3, 1]), "finite"), (np.ones(10), "constant"), (np.arange(10.0), "falling")],
)
def test_branches_bad_waveform_names_voltage(voltage, match):
    with pytest.raises(ValueError, match=f"voltage.*{match}"):
        split_branches(voltage)


# ---------------------------------------------------------------- model


def test_analytic_jacobian_matches_autograd():
    v = torch.as_tensor(V_REAL)
    rising = torch.as_tensor(split_branches(V_REAL).rising_mask)
    p = torch.tensor([[0.1, 1.0, -2.1, 3.1, 0.05, 1.0, 1.5, 0.7, 1.2], [-0.2, -0.5, -1.0, 1.3, 0.0, 0.4, 0.3, 0.6, 0.5]], dtype=torch.float64)
    f, jac = loop_model_jacobian_torch(v, p, rising=rising)
    auto = torch.func.vmap(torch.func.jacrev(lambda q: loop_model_torch(v, q[None], rising=rising)[0]))(p)
    assert torch.allclose(jac, auto, atol=1e-9)
    assert np.allclose(f.numpy(), loop_model_np(V_REAL, p.numpy(), rising=rising.numpy()))


def test_mask_model_equals_bglib_half_split():
    # BGlib: falling branch on the first half, rising on the second
    vdc = np.concatenate([np.linspace(8, -8, 32), np.linspace(-8, 8, 32)])
    p = np.array([0.1, 1.0, -2.0, 3.0, 0.05, 1.0, 1.5, 0.7, 1.2])
    rising = np.arange(64) >= 32
    assert np.allclose(bglib_loop_fit_function(vdc, *p), loop_model_np(vdc, p[None], rising=rising)[0])


def test_crossing_equals_bglib_coercive_for_symmetric_widths():
    p = np.array([[0.2, 1.5, -2.5, 3.0, 0.0, 0.4, 0.4, 0.7, 0.7]])
    a = switching_descriptors_from_params(p)
    b = switching_descriptors_from_params(p, coercive="bglib")
    assert np.allclose(a["V+"], 3.0) and np.allclose(a["V-"], -2.5)
    assert np.allclose(a["V+"], b["V+"]) and np.allclose(a["work_of_switching"], 5.5 * 1.5)


# ---------------------------------------------------------------- descriptors


def test_direct_descriptors_match_analytic_values():
    # fine noise-free loops, symmetric widths, no background: closed-form answers
    v = np.concatenate([np.linspace(0, 8, 161), np.linspace(8, -8, 321)[1:], np.linspace(-8, 0, 161)[1:-1]])
    p = np.array([[0.2, 1.5, -2.5, 3.0, 0.0, 0.4, 0.4, 0.4, 0.4], [0.2, -1.5, -1.0, 2.0, 0.0, 0.3, 0.3, 0.3, 0.3]])
    loops = loop_model_np(v, p, rising=split_branches(v).rising_mask)
    got, _ = direct_descriptors(loops, v, split_branches(v))
    a0, a1, a2, a3, b = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 5]
    from scipy.special import erfinv

    expected = {
        "V+": a3,
        "V-": a2,
        "imprint": (a2 + a3) / 2,
        "R+": a0 + a1,
        "R-": a0,
        "switchable_polarization": a1,
        "work_of_switching": np.abs(a1) * (a3 - a2),
        "nucleation_bias_+": a3 + b * erfinv(2 * 0.03 - 1),  # y = t on the rising branch
        "nucleation_bias_-": a2 + b * erfinv(1 - 2 * 0.03),  # y = 1 - t on the falling branch
    }
    assert set(expected) == set(DESCRIPTORS)
    for k, want in expected.items():
        assert np.allclose(got[k], want, atol=5e-3), (k, got[k], want)
    fitted = switching_descriptors_from_params(p)
    for k, want in expected.items():
        assert np.allclose(fitted[k], want, atol=1e-6), k


def test_fit_recovers_coercive_voltages_with_5pct_noise():
    p, _, noisy = synthetic(200, seed=3, noise=0.05)
    res = compute_descriptors(noisy, V_REAL, seed=0)
    true = switching_descriptors_from_params(p)
    for k in ("V+", "V-"):
        rel = np.abs(res.values[k] - true[k]) / np.abs(true[k])
        assert np.median(rel) < 0.05, (k, np.median(rel))
    assert np.median(res.fit_r2) > 0.95
    assert res.quality.mean() > 0.9


def test_fit_is_deterministic_and_sklearn_shaped():
    _, _, noisy = synthetic(20, seed=4, noise=0.05)
    a = LoopFitter(voltage=V_REAL, n_starts=4, seed=7)
    assert a.fit(noisy) is a
    b = LoopFitter(voltage=V_REAL, n_starts=4, seed=7).fit(noisy)
    assert np.array_equal(a.params_, b.params_)
    t = a.transform()
    assert t.shape == (20, 9) and list(a.get_feature_names_out()) == list(DESCRIPTORS)
    assert a.fitted_.shape == noisy.shape and a.r2_.shape == (20,) and a.rmse_.shape == (20,)
    with pytest.raises(RuntimeError, match="fit"):
        LoopFitter(voltage=V_REAL).transform()


# ---------------------------------------------------------------- preprocessing and flags


def test_spike_repair_restores_known_clean_loop():
    p, clean, _ = synthetic(30, seed=5, noise=0.0)
    rng = np.random.default_rng(0)
    spiky = clean.copy()
    where = np.zeros_like(clean, dtype=bool)
    for i in range(30):
        idx = rng.choice(V_REAL.size, 3, replace=False)  # ~5 % of the points
        where[i, idx] = True
        spiky[i, idx] += rng.choice([-1, 1], 3) * rng.uniform(5, 50, 3) * np.abs(p[i, 1])
    pp = preprocess_loops(spiky, V_REAL)
    assert np.array_equal(pp.spike_mask, where)
    height = np.abs(p[:, 1:2])
    assert np.max(np.abs(pp.clean - clean) / height) < 0.15  # repaired to the running median
    assert pp.flags["spike_repaired"].all() and not pp.flags["flat"].any()


def test_flat_noise_and_nan_loops_are_flagged_not_raised():
    p, clean, noisy = synthetic(4, seed=6, noise=0.02)
    rng = np.random.default_rng(1)
    loops = np.vstack([noisy, np.full(V_REAL.size, 3.0), rng.normal(0, 1e-3, V_REAL.size), np.full(V_REAL.size, np.nan)])
    loops[0, 10] = np.nan
    res = compute_descriptors(loops, V_REAL, method="fit")
    assert res.flags["flat"][4] and res.flags["no_hysteresis"][5] and res.flags["invalid"][6]
    assert res.flags["has_nan"][0] and not res.flags["invalid"][0]
    assert not res.quality[4:].any() and res.quality[:4].all()
    assert np.all(np.isfinite(res.clean_loops))


@pytest.mark.parametrize("method", ["fit", "direct"])
def test_result_shapes_and_table(method):
    _, _, noisy = synthetic(6, seed=8, noise=0.05)
    res = compute_descriptors(noisy, V_REAL, method=method)
    assert set(res.values) >= set(DESCRIPTORS)
    assert res.table("V+,V-,imprint").shape == (6, 3)
    assert res.table(["R+"]).shape == (6, 1)
    with pytest.raises(ValueError, match=r"unknown descriptor.*'Vc'.*valid.*V\+"):
        res.table(["V+", "Vc"])
    if method == "direct":
        assert res.params is None and res.fitted is None and np.isnan(res.fit_r2).all()
    else:
        assert res.params.shape == (6, 9) and res.fitted.shape == noisy.shape


@pytest.mark.parametrize(
    "loops, voltage, match",
    [
        (np.zeros(64), V_REAL, "loops: expected a 2-D"),
        (np.zeros((3, 64)), V_REAL[:60], "voltage: expected 64 values.*got 60"),
        (np.zeros((3, 64)), np.where(np.arange(64) == 3, np.nan, V_REAL), "voltage: expected finite"),
        (np.zeros((0, 64)), V_REAL, "loops: expected at least one"),
        (np.zeros((3, 64)), V_REAL.reshape(8, 8), "voltage: expected a 1-D"),
    ],
)
def test_boundary_errors_name_the_parameter(loops, voltage, match):
    with pytest.raises(ValueError, match=match):
        compute_descriptors(loops, voltage)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="method: expected 'fit' or 'direct', got 'bglib'"):
        compute_descriptors(np.zeros((2, 64)), V_REAL, method="bglib")
