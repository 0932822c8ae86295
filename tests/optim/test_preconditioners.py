"""Both HF preconditioners make CG measurably cheaper on an ill-conditioned quadratic."""

from __future__ import annotations

import torch

from lstmlab.objective import FunctionObjective
from lstmlab.optim import HessianFree
from lstmlab.optim.cg import conjugate_gradient
from lstmlab.optim.preconditioners import diagonal_preconditioner, lbfgs_preconditioner

N = 120


def ill_conditioned(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A = S C S: scales S spread over 1..1e3 (condition ≈ 1e6), C = I + a weak coupling."""
    g = torch.Generator().manual_seed(seed)
    s = torch.logspace(0, 3, N, dtype=torch.float64)[torch.randperm(N, generator=g)]
    Q = torch.randn(N, N, generator=g, dtype=torch.float64) / N**0.5
    C = torch.eye(N, dtype=torch.float64) + 0.3 * (Q @ Q.T) / float(torch.linalg.norm(Q @ Q.T, 2))
    A = s[:, None] * C * s[None, :]
    b = torch.randn(N, generator=g, dtype=torch.float64)
    return A, b


def iterations(A, b, M_inv=None, **kw) -> int:
    res = conjugate_gradient(
        lambda v: A @ v, b, M_inv=M_inv, tol=0.0, residual_tol=1e-8, max_iter=20 * N, **kw
    )
    assert res.stop == "residual"
    x = torch.linalg.solve(A, b)
    assert torch.allclose(res.x, x, rtol=1e-4, atol=1e-8 * float(x.abs().max()))
    return res.iterations


def test_diagonal_preconditioner_cuts_cg_iterations():
    A, b = ill_conditioned()
    plain = iterations(A, b)
    for exponent in (1.0, 0.75):
        pre = iterations(A, b, diagonal_preconditioner(torch.diagonal(A), 0.0, exponent))
        assert pre < 0.5 * plain, (exponent, pre, plain)


def test_diagonal_preconditioner_formula():
    d = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    M_inv = diagonal_preconditioner(d, 1.0, 0.5)
    torch.testing.assert_close(M_inv(torch.ones(3, dtype=torch.float64)), 1 / (d + 1).sqrt())


def test_lbfgs_preconditioner_from_a_previous_solve_cuts_cg_iterations():
    A, b = ill_conditioned()
    first = conjugate_gradient(lambda v: A @ v, b, tol=0.0, max_iter=30, keep_pairs=30)
    S, Y = [s for s, _ in first.pairs], [y for _, y in first.pairs]
    b2 = b + 0.1 * torch.randn(N, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    plain = iterations(A, b2)
    pre = iterations(A, b2, lbfgs_preconditioner(S, Y))
    assert pre < 0.75 * plain, (pre, plain)
    assert lbfgs_preconditioner([], []) is None


class KnownDiagonal(FunctionObjective):
    """A quadratic whose empirical-Fisher diagonal is given as diag(A) (a test double)."""

    def __init__(self, A, b):
        super().__init__(lambda x: 0.5 * x @ A @ x - b @ x, torch.zeros(N, dtype=torch.float64))
        self.A = A

    def per_sample_grads_squared(self):
        return torch.diagonal(self.A).clone()


def hf_cg_iterations(preconditioner, steps: int = 1) -> list[int]:
    A, b = ill_conditioned()
    obj = KnownDiagonal(A, b)
    # first solve short (it only provides L-BFGS pairs), the second to a 1e-12 residual
    hf = HessianFree(
        damping=1e-8,
        lm=None,
        structural_weight=0.0,
        cg_tol=0.0,
        warm_start=0.0,
        max_cg={"type": "piecewise", "boundaries": [1], "values": [30, 20 * N]},
        preconditioner=preconditioner,
        lbfgs_history=30,
        diag_exponent=1.0,
    )
    return [hf.step(obj).cg_iterations for _ in range(steps)]


def test_hf_uses_the_diagonal_preconditioner():
    plain = hf_cg_iterations(None, 2)
    pre = hf_cg_iterations("diagonal", 2)
    assert plain[0] == 30 and pre[0] < 30  # the first, capped, solve already finishes early
    assert pre[1] < 0.5 * plain[1], (pre, plain)


def test_hf_uses_the_lbfgs_preconditioner_from_its_previous_solve():
    plain = hf_cg_iterations(None, 2)[1]
    pre = hf_cg_iterations("lbfgs", 2)[1]
    assert pre < 0.75 * plain, (pre, plain)
