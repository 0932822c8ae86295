"""HF's warm start: CG begins from ζ·p_prev (ζ = 0.95; Martens 2010 Sec. 4.5)."""

from __future__ import annotations

import pytest
import torch

from lstmlab.objective import FunctionObjective
from lstmlab.optim import HessianFree
from lstmlab.optim.hf import warm_start_point


def test_warm_start_point():
    p = torch.tensor([1.0, -2.0])
    torch.testing.assert_close(warm_start_point(p, 0.95), torch.tensor([0.95, -1.9]))
    assert warm_start_point(None, 0.95) is None
    assert warm_start_point(p, 0.0) is None


class Recording(FunctionObjective):
    """Records every vector handed to a curvature product (a test double)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.products: list[torch.Tensor] = []

    def curvature_operator(self, kind="gn", structural_weight=0.0):
        op = super().curvature_operator(kind, structural_weight)

        def recorded(v):
            self.products.append(v.clone())
            return op(v)

        return recorded


def two_steps(**kw):
    n = 40
    g = torch.Generator().manual_seed(3)
    Q = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = Q @ Q.T / n + torch.diag(torch.logspace(-2, 1, n, dtype=torch.float64))
    b = torch.randn(n, generator=g, dtype=torch.float64)
    obj = Recording(
        lambda x: 0.5 * x @ A @ x - b @ x + 0.1 * (x**4).sum(), torch.zeros(n, dtype=torch.float64)
    )
    hf = HessianFree(damping=0.1, structural_weight=0.0, max_cg=5, **kw)
    hf.step(obj)
    p_prev = hf.p_prev.clone()
    obj.products.clear()
    info = hf.step(obj)
    return obj.products, p_prev, info


@pytest.mark.parametrize("zeta", [0.95, 0.5])
def test_second_solve_starts_from_zeta_times_the_previous_solution(zeta):
    products, p_prev, info = two_steps(warm_start=zeta) if zeta != 0.95 else two_steps()
    # CG's first product is A·x0 (for the residual b − A x0): x0 must be ζ·p_prev
    torch.testing.assert_close(products[0], zeta * p_prev, rtol=0, atol=0)
    assert len(products) == info.cg_iterations + 1


def test_without_warm_start_cg_starts_from_zero():
    products, p_prev, info = two_steps(warm_start=0.0)
    assert len(products) == info.cg_iterations  # no product for a starting residual
    assert not torch.allclose(products[0] / products[0].norm(), p_prev / p_prev.norm())


def test_warm_start_schedule():
    products, p_prev, _ = two_steps(
        warm_start={"type": "piecewise", "boundaries": [1], "values": [0.9, 0.3]}
    )
    torch.testing.assert_close(products[0], 0.3 * p_prev, rtol=0, atol=0)
