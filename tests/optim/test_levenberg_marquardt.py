"""The Levenberg–Marquardt rule for λ (Martens 2010 Sec. 4.1), alone and inside an HF step."""

from __future__ import annotations

import math

import pytest
import torch

from lstmlab.objective import FunctionObjective
from lstmlab.optim import HessianFree, LevenbergMarquardt
from lstmlab.optim.damping import as_levenberg_marquardt, reduction_ratio


@pytest.mark.parametrize(
    "rho,factor",
    [
        (-3.0, 1.5),
        (0.1, 1.5),
        (0.2499, 1.5),
        (0.25, 1.0),
        (0.5, 1.0),
        (0.75, 1.0),
        (0.7501, 2 / 3),
        (1.0, 2 / 3),
        (7.0, 2 / 3),
        (math.nan, 1.5),
    ],
)
def test_rule(rho, factor):
    assert LevenbergMarquardt().update(2.0, rho) == pytest.approx(2.0 * factor, rel=1e-15)


def test_clamped_both_ways():
    lm = LevenbergMarquardt(min_value=1e-3, max_value=10.0)
    assert lm.update(1e-3, 1.0) == 1e-3
    assert lm.update(9.0, 0.0) == 10.0
    assert lm.scale(5.0, 10.0) == 10.0


def test_gentle_factors():
    lm = LevenbergMarquardt(decrease=0.99, increase=1.01)
    assert lm.update(1.0, 0.0) == pytest.approx(1.01)
    assert lm.update(1.0, 1.0) == pytest.approx(0.99)


def test_reduction_ratio():
    assert reduction_ratio(1.0, 0.5, -1.0) == 0.5
    assert math.isnan(reduction_ratio(1.0, math.inf, -1.0))
    assert math.isnan(reduction_ratio(1.0, 0.5, 0.0))  # the model predicted no decrease


@pytest.mark.parametrize(
    "value,message",
    [
        ({"decrease": 2.0}, "decrease"),
        ({"increase": 0.5}, "increase"),
        ({"low": 0.9, "high": 0.1}, "low"),
        ({"bogus": 1}, "lm.bogus"),
        ({"decrease": "x"}, "lm.decrease"),
        (3, "lm: must be"),
        ({"min_value": 5.0, "max_value": 1.0}, "min_value"),
    ],
)
def test_bad_tables_name_the_key(value, message):
    with pytest.raises(ValueError, match=message):
        as_levenberg_marquardt(value)


def test_tables_and_off_switches():
    assert as_levenberg_marquardt({"decrease": 0.5}) == LevenbergMarquardt(decrease=0.5)
    assert as_levenberg_marquardt(False) is None and as_levenberg_marquardt("none") is None
    assert as_levenberg_marquardt(None) is None
    assert as_levenberg_marquardt(True) == LevenbergMarquardt()


def scaled_model_step(s: float, lam0: float = 1e-6):
    """One HF step on f(x) = ‖x‖² − bᵀx whose curvature model is s·2I (1 CG iteration).

    From x = 0 with λ ≈ 0: p = b/(2s), f(p) − f(0) = (1/(4s²) − 1/(2s))‖b‖² and the model's
    φ(p) = −‖b‖²/(4s), so ρ = 2 − 1/s exactly (up to λ).
    """
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    obj = FunctionObjective(
        lambda x: (x * x).sum() - b @ x,
        torch.zeros(3, dtype=torch.float64),
        gauss_newton=lambda x, v: 2 * s * v,
    )
    hf = HessianFree(damping=lam0, structural_weight=0.0, line_search=False, warm_start=0.0)
    info = hf.step(obj)
    return info, hf


@pytest.mark.parametrize(
    "s,factor", [(1.0, 2 / 3), (0.6, 1.0), (0.55, 1.5)], ids=["rho=1", "rho=1/3", "rho=0.18"]
)
def test_hf_applies_the_rule_to_the_ratio_it_measured(s, factor):
    info, hf = scaled_model_step(s)
    assert info.cg_iterations == 1
    assert info.rho == pytest.approx(2 - 1 / s, rel=1e-5)
    assert hf.lam == pytest.approx(1e-6 * factor, rel=1e-12)
    assert info.damping == hf.lam
