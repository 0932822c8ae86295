"""The Armijo backtracking search (Martens & Sutskever 2012 Sec. 8.8), alone and inside HF."""

from __future__ import annotations

import math

import pytest
import torch

from lstmlab.objective import FunctionObjective
from lstmlab.optim import HessianFree
from lstmlab.optim.line_search import armijo


def parabola(t: float) -> float:
    return (t - 0.3) ** 2  # f0 = 0.09, slope −0.6


def test_first_sufficient_decrease_on_the_geometric_grid():
    # t = 1: 0.49, 0.8: 0.25, 0.64: 0.1156 all above 0.09 − 0.006 t; 0.512: 0.0449 is below
    calls = []

    def loss(t):
        calls.append(t)
        return parabola(t)

    t, f, n = armijo(loss, 0.09, -0.6)
    assert t == pytest.approx(0.512) and f == pytest.approx(0.212**2) and n == 4
    assert calls == pytest.approx([1.0, 0.8, 0.64, 0.512])


def test_shrink_factor_and_known_f1():
    t, _, n = armijo(parabola, 0.09, -0.6, f1=parabola(1.0), shrink=0.5)
    assert t == 0.5 and n == 1  # f(1) not evaluated again; f(0.5) = 0.04 passes


def test_sufficient_decrease_constant_matters():
    # f decreases, but only at 0.5 % of the slope: c = 1e-2 asks for more, c = 1e-3 does not
    def weak(t):
        return 1.0 - 0.005 * t

    assert armijo(weak, 1.0, -1.0, max_evals=30)[0] is None
    assert armijo(weak, 1.0, -1.0, c=1e-3)[0] == 1.0


def test_accepts_the_full_step_when_it_suffices():
    assert armijo(lambda t: 1.0 - 0.5 * t, 1.0, -1.0) == (1.0, 0.5, 1)


def test_non_finite_values_are_failures_and_the_budget_is_kept():
    t, _, n = armijo(lambda t: math.nan if t > 0.6 else parabola(t), 0.09, -0.6)
    assert t == pytest.approx(0.512) and n == 4
    t, f, n = armijo(lambda t: math.inf, 0.09, -0.6, max_evals=7)
    assert t is None and f == 0.09 and n == 7


def test_hf_scales_an_overlong_step():
    """Curvature model 0.4× the true one: the full step p = b/(0.8) overshoots f = ‖x‖² − bᵀx.

    Along t·p the loss is (0.25·t²/0.16 − 0.5·t/0.4)·‖b‖² relative to f(0): Armijo (c = 0.01)
    first holds at t = 0.8² = 0.64 (t = 1 and 0.8 fail), which HF must take.
    """
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    fn = lambda x: (x * x).sum() - b @ x  # noqa: E731

    def run(line_search: bool):
        obj = FunctionObjective(
            fn, torch.zeros(3, dtype=torch.float64), gauss_newton=lambda x, v: 0.8 * v
        )
        hf = HessianFree(damping=1e-9, lm=None, structural_weight=0.0, line_search=line_search)
        return hf.step(obj), obj

    info, obj = run(True)
    bb = float(b @ b)
    phi = lambda t: (0.25 * t * t / 0.16 - 0.5 * t / 0.4) * bb  # noqa: E731
    ok = [t for t in (1.0, 0.8, 0.64, 0.512) if phi(t) <= 0.01 * t * (-bb / 0.8)]
    assert ok[0] == pytest.approx(0.64)
    assert info.step_size == pytest.approx(0.64)
    assert info.new_loss == pytest.approx(phi(0.64), rel=1e-6)
    torch.testing.assert_close(obj.get_params(), 0.64 * b / 0.8, rtol=1e-6, atol=1e-9)
    off, _ = run(False)
    assert off.step_size == 1.0 and off.new_loss == pytest.approx(phi(1.0), rel=1e-6)
