"""CG-backtracking (Martens 2010 Sec. 4.6): alone on designed losses, and inside an HF step."""

from __future__ import annotations

import math

import pytest
import torch

from lstmlab.objective import FunctionObjective
from lstmlab.optim import HessianFree
from lstmlab.optim.cg_backtracking import cg_backtrack


def candidates(losses: list[float]):
    """Kept iterates at CG iterations 5, 7, 10, 14, … whose loss is the first coordinate."""
    its = [5, 7, 10, 14, 18, 24][: len(losses)]
    return [(i, torch.tensor([f]), -float(i)) for i, f in zip(its, losses, strict=True)]


def first_coordinate(p: torch.Tensor) -> float:
    return float(p[0])


def test_goes_back_while_the_loss_decreases_and_stops_at_the_first_rise():
    # f at kept iterates 5, 7, 10, 14: 3, 2, 2.5, 4 — the last is worse than 10 and 7
    r = cg_backtrack(candidates([3.0, 2.0, 2.5, 4.0]), first_coordinate)
    assert (r.index, r.iteration, r.loss, r.phi) == (1, 7, 2.0, -7.0)
    assert r.evaluations == 4  # 14, 10, 7 and 5 (which stopped the walk)


def test_stops_at_a_local_dip_even_if_an_earlier_one_is_lower():
    # Martens' rule walks back only while each step improves: 1.0 at iteration 5 is not reached
    r = cg_backtrack(candidates([1.0, 3.0, 2.0, 2.5]), first_coordinate)
    assert r.iteration == 10 and r.evaluations == 3


def test_keeps_the_last_iterate_when_it_is_best():
    r = cg_backtrack(candidates([4.0, 3.0, 2.0, 1.0]), first_coordinate)
    assert r.iteration == 14 and r.evaluations == 2


def test_non_finite_losses_count_as_no_decrease():
    r = cg_backtrack(candidates([1.0, math.nan, 5.0]), first_coordinate)
    assert r.iteration == 10 and r.loss == 5.0
    r = cg_backtrack(candidates([1.0, 2.0, math.inf]), first_coordinate)
    assert r.iteration == 5 and r.loss == 1.0


def test_disabled_takes_the_last_iterate_with_one_evaluation():
    r = cg_backtrack(candidates([3.0, 2.0, 2.5, 4.0]), first_coordinate, enabled=False)
    assert r.iteration == 14 and r.evaluations == 1 and r.loss == 4.0


def test_needs_a_candidate():
    with pytest.raises(ValueError, match="candidate"):
        cg_backtrack([], first_coordinate)


def overshooting_problem():
    """f(x) = ½ xᵀDx − bᵀx + c·(bᵀx)², with HF given only D as curvature.

    Along CG's iterates x_i on the model, u_i = bᵀx_i grows from 0 to u* = bᵀD⁻¹b and the true
    loss is −u_i/2 + c·u_i² (x_iᵀDx_i = bᵀx_i on Krylov minimisers): with c = 1/(2u*) it falls
    until u = u*/2 and rises back to 0 at the converged solution. With 200 eigenvalues spread
    over 1..1e4, CG's kept iterates 19, 25, 32 have u/u* = 0.42, 0.54, 0.66 (and grow to 0.99 at
    100), so backtracking from iteration 100 walks back to 25, which beats 19.
    """
    n = 200
    d = torch.logspace(0, 4, n, dtype=torch.float64)
    b = torch.ones(n, dtype=torch.float64)
    c = 1.0 / (2 * float((b / d) @ b))

    def f(x):
        u = b @ x
        return 0.5 * (d * x * x).sum() - u + c * u * u

    x0 = torch.zeros(n, dtype=torch.float64)
    return FunctionObjective(f, x0, gauss_newton=lambda x, v: d * v), f


def hf_step(backtrack: bool):
    obj, f = overshooting_problem()
    hf = HessianFree(
        damping=0.0,
        lm=None,
        structural_weight=0.0,
        cg_tol=0.0,
        max_cg=100,
        line_search=False,
        backtrack=backtrack,
    )
    info = hf.step(obj)
    return info, float(f(obj.get_params()))


def test_hf_chooses_an_earlier_kept_iterate_when_the_last_is_worse():
    with_bt, f_bt = hf_step(True)
    without, f_last = hf_step(False)
    assert without.extra["backtrack_iterate"] == without.cg_iterations  # the last iterate
    assert with_bt.cg_iterations == without.cg_iterations == 100
    assert with_bt.extra["backtrack_iterate"] == 25
    assert with_bt.extra["backtrack_evals"] == 8  # 100, 90, 69, 54, 41, 32, 25 and 19
    assert f_bt < f_last


# ---------------------------------------------------------------- the released code's rule
def test_best_rule_takes_the_lowest_of_all_even_behind_a_rise():
    # the walk-back stops at iteration 10 (2.0 behind a rise to 3.0); "best" finds 1.0 at 5
    r = cg_backtrack(candidates([1.0, 3.0, 2.0, 2.5]), first_coordinate, rule="best")
    assert (r.index, r.iteration, r.loss, r.phi) == (0, 5, 1.0, -5.0)
    assert r.evaluations == 4  # every candidate scored


def test_best_rule_ties_take_the_earliest_and_nonfinite_counts_as_no_decrease():
    r = cg_backtrack(candidates([2.0, math.nan, 1.0, 1.0]), first_coordinate, rule="best")
    assert r.iteration == 10
    r = cg_backtrack(candidates([math.inf, math.nan]), first_coordinate, rule="best")
    assert r.iteration == 7 and r.loss == math.inf  # none finite: the last, as the walk-back
    r = cg_backtrack(candidates([2.0, 1.0]), first_coordinate, rule="best", enabled=False)
    assert r.iteration == 7 and r.evaluations == 1


def test_best_rule_grid_and_unknown_rule():
    from lstmlab.optim.cg_backtracking import every_indices

    assert every_indices(35, 10) == {1, 11, 21, 31}
    assert every_indices(1, 10) == {1}
    with pytest.raises(ValueError, match="^rule: unknown 'max'; valid: walk-back, best"):
        cg_backtrack(candidates([1.0]), first_coordinate, rule="max")
    with pytest.raises(ValueError, match="^backtrack_rule: unknown 'max'"):
        HessianFree(backtrack_rule="max")
    with pytest.raises(ValueError, match="^backtrack_every: must be >= 1"):
        HessianFree(backtrack_every=0)
