"""The 9-parameter hysteresis-loop model of Jesse, Lee & Kalinin.

S. Jesse, H. N. Lee, S. V. Kalinin, "Quantitative mapping of switching behavior
in piezoresponse force microscopy", Rev. Sci. Instrum. 77, 073702 (2006); in the
form BGlib implements it (pycroscopy/BGlib, ``BGlib/be/analysis/utils/be_loop.py``,
``loop_fit_function`` and ``calc_switching_coef_vec``).

Parameters, in BGlib's order ``[a0, a1, a2, a3, a4, b0, b1, b2, b3]``:

* ``a0``: response of the ``-`` state (bottom level);
* ``a1``: loop height (switchable response); signed, its sign is the loop's
  orientation;
* ``a2``: switching voltage of the falling branch (``V-``);
* ``a3``: switching voltage of the rising branch (``V+``);
* ``a4``: linear (electrostatic / dielectric) background slope per volt;
* ``b0, b1``: widths [V] of the falling-branch transition below / above ``a2``;
* ``b2, b3``: the same for the rising branch around ``a3``.

For a branch with switching voltage ``a`` and widths ``(bl, bh)``::

    g(v) = (bh - bl)/2 * (erf((v - a) * d) + 1) + bl      # ~bl below a, ~bh above, d = 1000/V
    y(v) = (g * erf((v - a) / g) + bl) / (bl + bh)        # 0 far below a, 1 far above
    f(v) = a0 + a1 * y(v) + a4 * v

BGlib evaluates the falling branch on the first half of an "unfolded" loop and
the rising one on the second half; here a per-point branch mask says which, so
any waveform (any start point, several cycles) is modelled without reordering.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import erf as _np_erf
from scipy.special import erfinv as _np_erfinv

__all__ = [
    "PARAM_NAMES",
    "STEP_SHARPNESS",
    "loop_model_np",
    "loop_model_torch",
    "loop_model_jacobian_torch",
    "bglib_loop_fit_function",
    "switching_descriptors_from_params",
]

PARAM_NAMES: tuple[str, ...] = ("a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3")
# BGlib's ``d``: sharpness [1/V] of the step that swaps the width at the switching voltage.
STEP_SHARPNESS = 1000.0
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def bglib_loop_fit_function(vdc: np.ndarray, *coef_vec: float) -> np.ndarray:
    """BGlib's formulation, for cross-checks: falling branch = first half of ``vdc``.

    Args:
        vdc: (V,) unfolded bias, the falling branch first, the rising branch second.
        *coef_vec: the 9 parameters.

    Returns:
        (V,) model loop.
    """
    p = np.asarray(coef_vec, dtype=float)
    half = len(vdc) // 2
    rising = np.zeros(len(vdc), dtype=bool)
    rising[half:] = True
    return loop_model_np(np.asarray(vdc, dtype=float), p[None, :], rising=rising)[0]


def loop_model_np(voltage: np.ndarray, params: np.ndarray, *, rising: np.ndarray) -> np.ndarray:
    """Evaluate the model for a batch of parameter vectors (numpy).

    Args:
        voltage: (V,) bias [V].
        params: (N, 9) parameters in :data:`PARAM_NAMES` order.
        rising: (V,) bool, True where the point lies on a rising branch.

    Returns:
        (N, V) model loops.
    """
    v = np.asarray(voltage, dtype=float)[None, :]  # (1, V)
    p = np.asarray(params, dtype=float)
    r = np.asarray(rising, dtype=bool)[None, :]
    a0, a1, a2, a3, a4, b0, b1, b2, b3 = (p[:, i : i + 1] for i in range(9))  # each (N, 1)
    a = np.where(r, a3, a2)  # (N, V) switching voltage of each point's branch
    bl = np.where(r, b2, b0)
    bh = np.where(r, b3, b1)
    g = (bh - bl) / 2.0 * (_np_erf((v - a) * STEP_SHARPNESS) + 1.0) + bl
    y = (g * _np_erf((v - a) / g) + bl) / (bl + bh)
    return a0 + a1 * y + a4 * v


def _branch_terms(v: torch.Tensor, p: torch.Tensor, r: torch.Tensor):
    """Shared pieces of the torch model; v (1, V), p (B, 9), r (1, V) bool."""
    a0, a1, a2, a3, a4, b0, b1, b2, b3 = (p[:, i : i + 1] for i in range(9))
    a = torch.where(r, a3, a2)  # (B, V)
    bl = torch.where(r, b2, b0)
    bh = torch.where(r, b3, b1)
    s = 0.5 * (torch.erf((v - a) * STEP_SHARPNESS) + 1.0)  # ~step: 0 below a, 1 above
    g = bl + (bh - bl) * s
    u = (v - a) / g
    e = torch.erf(u)
    tot = bl + bh
    y = (g * e + bl) / tot
    return a0, a1, a4, a, bl, bh, s, g, u, e, tot, y


def loop_model_torch(voltage: torch.Tensor, params: torch.Tensor, *, rising: torch.Tensor) -> torch.Tensor:
    """Evaluate the model for a batch of parameter vectors (torch, differentiable).

    Args:
        voltage: (V,) bias [V].
        params: (B, 9) parameters in :data:`PARAM_NAMES` order.
        rising: (V,) bool, True on rising branches.

    Returns:
        (B, V) model loops.
    """
    v = voltage[None, :]
    a0, a1, a4, *_, y = _branch_terms(v, params, rising[None, :])
    return a0 + a1 * y + a4 * v


def loop_model_jacobian_torch(
    voltage: torch.Tensor, params: torch.Tensor, *, rising: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model values and analytic Jacobian with respect to the 9 parameters.

    The derivative of the width-swapping step ``g`` with respect to the switching
    voltage is dropped: it is non-zero only within ~1 mV of ``a`` (``d`` = 1000/V)
    and would only inject huge, useless gradients there.

    Args:
        voltage: (V,) bias [V].
        params: (B, 9) parameters.
        rising: (V,) bool.

    Returns:
        ``(f, J)``: (B, V) model values and (B, V, 9) Jacobian.
    """
    v = voltage[None, :]
    r = rising[None, :]
    a0, a1, a4, a, bl, bh, s, g, u, e, tot, y = _branch_terms(v, params, r)
    f = a0 + a1 * y + a4 * v
    de = _TWO_OVER_SQRT_PI * torch.exp(-u * u)  # erf'(u)
    dn_dg = e - u * de  # d(g*erf((v-a)/g))/dg
    dy_da = -de / tot
    dy_dbl = (dn_dg * (1.0 - s) + 1.0 - y) / tot
    dy_dbh = (dn_dg * s - y) / tot
    ones = torch.ones_like(y)
    zeros = torch.zeros_like(y)
    fa = a1 * dy_da
    fl = a1 * dy_dbl
    fh = a1 * dy_dbh
    rb = r.expand_as(y)
    jac = torch.stack(
        [
            ones,  # a0
            y,  # a1
            torch.where(rb, zeros, fa),  # a2 acts on falling points only
            torch.where(rb, fa, zeros),  # a3 on rising points
            v.expand_as(y),  # a4
            torch.where(rb, zeros, fl),  # b0
            torch.where(rb, zeros, fh),  # b1
            torch.where(rb, fl, zeros),  # b2
            torch.where(rb, fh, zeros),  # b3
        ],
        dim=-1,
    )
    return f, jac


def _nucleation(a: np.ndarray, bl: np.ndarray, bh: np.ndarray, level: float) -> np.ndarray:
    """Voltage where a branch ``y`` (0 -> 1 through ``a``) reaches ``level``.

    Solves ``(g erf((v-a)/g) + bl)/(bl+bh) = level`` on the side of ``a`` where
    the solution lies (``g = bl`` below ``a``, ``bh`` above).
    """
    tot = bl + bh
    below = level * tot < bl  # y(a) = bl/(bl+bh): the solution lies below a
    g = np.where(below, bl, bh)
    with np.errstate(divide="ignore", invalid="ignore"):
        arg = np.clip((level * tot - bl) / g, -1.0, 1.0)
        out = a + g * _np_erfinv(arg)
    return out


def switching_descriptors_from_params(
    params: np.ndarray, *, nucleation_threshold: float = 0.03, coercive: str = "crossing"
) -> dict[str, np.ndarray]:
    """BGlib's switching parameters from fitted loop parameters.

    As BGlib's ``calc_switching_coef_vec``: ``R+ = a0 + a1``, ``R- = a0``,
    switchable polarization ``a1``, imprint the mean of the coercive voltages,
    work of switching ``|V+ - V-| * |a1|``; nucleation biases are where the
    rising branch has switched ``nucleation_threshold`` of the way up (``+``) and
    the falling branch the same fraction of the way down (``-``), solved on the
    correct side of the piecewise width.

    Coercive voltages: BGlib reports ``V+ = a3`` and ``V- = a2``. Those are the
    50 % switching points only when a branch's two widths are equal; with free
    widths ``a`` trades off against the width ratio (a shift of ``a`` is almost
    undone by skewing ``bl/bh``), so on noisy loops it is poorly determined while
    the 50 % crossing is not. ``coercive="crossing"`` (default) therefore reports
    the bias where each fitted branch is half switched; ``"bglib"`` gives
    ``a3``/``a2`` as BGlib does. Both agree for symmetric widths.

    Args:
        params: (N, 9) fitted parameters.
        nucleation_threshold: switched fraction that defines nucleation.
        coercive: ``"crossing"`` or ``"bglib"``, see above.

    Returns:
        name -> (N,) values, names as in :data:`structattn.loops.DESCRIPTORS`.
    """
    if coercive not in ("crossing", "bglib"):
        raise ValueError(f"coercive: expected 'crossing' or 'bglib', got {coercive!r}")
    p = np.asarray(params, dtype=float)
    a0, a1, a2, a3, _, b0, b1, b2, b3 = p.T
    t = nucleation_threshold
    if coercive == "crossing":
        vplus, vminus = _nucleation(a3, b2, b3, 0.5), _nucleation(a2, b0, b1, 0.5)
    else:
        vplus, vminus = a3.copy(), a2.copy()
    return {
        "V+": vplus,
        "V-": vminus,
        "imprint": (vplus + vminus) / 2.0,
        "R+": a0 + a1,
        "R-": a0.copy(),
        "switchable_polarization": a1.copy(),
        "work_of_switching": np.abs(vplus - vminus) * np.abs(a1),
        "nucleation_bias_+": _nucleation(a3, b2, b3, t),
        "nucleation_bias_-": _nucleation(a2, b0, b1, 1.0 - t),
    }
