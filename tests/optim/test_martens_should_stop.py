"""Martens' relative-progress stop (Martens 2010 Sec. 4.4) on designed φ sequences and in CG."""

from __future__ import annotations

import math

import pytest
import torch

from lstmlab.optim.cg import conjugate_gradient, martens_should_stop


def first_stop(phis: list[float], tol: float = 5e-4) -> int | None:
    for i in range(len(phis)):
        if martens_should_stop(phis[: i + 1], tol):
            return i
    return None


def ramp_then_flat(flat_from: int, n: int) -> list[float]:
    """φ_i = −i up to ``flat_from``, then −flat_from: steady progress, then none at all."""
    return [-float(min(i, flat_from)) for i in range(n + 1)]


def test_stops_ten_iterations_after_progress_ends():
    # for i ≤ 50 the relative progress over k = 10 steps is k/i ≫ k·tol; from i = 60 on,
    # φ_i = φ_{i−10} exactly, so the first stop is i = 60 and not one iteration earlier
    assert first_stop(ramp_then_flat(50, 100)) == 60


def test_window_grows_as_a_tenth_of_i():
    # flat from 200: with k = max(10, ⌈0.1 i⌉) = 22 at i = 220 the progress over the window is
    # 2/200 = 0.010 < 22·5e-4 = 0.011 (first stop); at i = 219 it is 3/200 > 0.011. A window
    # fixed at 10 would stop at 210.
    assert first_stop(ramp_then_flat(200, 300)) == 220


def test_never_stops_while_progress_is_steady_or_phi_not_negative():
    assert first_stop([-float(i) for i in range(300)]) is None  # k/i > k·tol until i = 2000
    assert first_stop([0.0] * 50) is None  # φ ≥ 0: no progress to measure yet
    assert first_stop([1.0 - i for i in range(3)] + [1.0] * 40) is None


def test_tolerance_scales_the_stop():
    # φ_i = −(1 − 0.9^i): relative progress over k steps ≈ 0.9^{i−k}(1 − 0.9^k) / 1
    phis = [-(1 - 0.9**i) for i in range(400)]
    loose, tight = first_stop(phis, 5e-3), first_stop(phis, 5e-5)
    assert loose is not None and tight is not None and loose < tight
    i = tight
    k = max(10, math.ceil(0.1 * i))
    assert (phis[i] - phis[i - k]) / phis[i] < k * 5e-5
    assert (phis[i - 1] - phis[i - 1 - k]) / phis[i - 1] >= max(10, math.ceil(0.1 * (i - 1))) * 5e-5


def test_conjugate_gradient_stops_where_the_rule_first_holds():
    # an ill-conditioned diagonal system: CG makes fast early progress, then crawls
    n = 400
    eig = torch.logspace(0, 5, n, dtype=torch.float64)
    b = torch.ones(n, dtype=torch.float64)
    res = conjugate_gradient(lambda v: eig * v, b, max_iter=n, residual_tol=1e-14)
    assert res.stop == "martens"
    assert res.iterations == first_stop(res.phis) < n
    # and without the rule (tol = 0) CG runs on
    more = conjugate_gradient(lambda v: eig * v, b, tol=0.0, max_iter=n, residual_tol=1e-14)
    assert more.stop != "martens" and more.iterations > res.iterations + 10


@pytest.mark.parametrize("tol", [5e-4, 5e-3])
def test_phi_recorded_is_the_quadratic(tol):
    A = torch.diag(torch.linspace(1, 50, 30, dtype=torch.float64))
    b = torch.linspace(-1, 1, 30, dtype=torch.float64)
    res = conjugate_gradient(lambda v: A @ v, b, tol=tol, max_iter=30)
    assert res.phi == pytest.approx(float(0.5 * res.x @ A @ res.x - b @ res.x), rel=1e-10)
