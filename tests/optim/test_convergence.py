"""L-BFGS and nonlinear CG reach scipy's minimum; HF solves a convex quadratic in ≤ n CG steps."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from lstmlab.objective import FunctionObjective
from lstmlab.optim import LBFGS, SGD, Adam, HessianFree, NonlinearCG


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def logistic_problem(seed=0, n=60, d=4):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = (X @ w + 0.5 * torch.randn(n, generator=g, dtype=torch.float64) > 0).to(torch.float64)

    def f(x):
        z = X @ x[:-1] + x[-1]
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 1e-2 * (x**2).sum()

    return f, d + 1


def scipy_min(fn, x0):
    def fg(xn):
        x = torch.tensor(xn, requires_grad=True)
        v = fn(x)
        (g,) = torch.autograd.grad(v, x)
        return float(v.detach()), g.numpy()

    r = scipy.optimize.minimize(fg, x0.numpy(), jac=True, method="BFGS", options={"gtol": 1e-10})
    return torch.tensor(r.x), r.fun


def run(opt, obj, steps):
    for _ in range(steps):
        info = opt.step(obj)
        if info.reason.startswith(("gradient below", "loss change")):
            break
    return obj.get_params()


OPTS = {
    "lbfgs": lambda: LBFGS(history=10),
    "ncg-pr+": lambda: NonlinearCG("pr+"),
    "ncg-hs": lambda: NonlinearCG("hs"),
    # minFunc's CG: Hestenes–Stiefel, c2 = 0.2, quadratic first trial step
    "ncg-minfunc": lambda: NonlinearCG("hs", c2=0.2, step_init="quadratic"),
}


@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("problem", ["rosenbrock", "logistic"])
def test_reaches_scipy_minimum(name, problem):
    if problem == "rosenbrock":
        fn, x0 = rosenbrock, torch.tensor([-1.2, 1.0, -0.5, 0.8], dtype=torch.float64)
    else:
        fn, n = logistic_problem()
        x0 = torch.zeros(n, dtype=torch.float64)
    x_ref, f_ref = scipy_min(fn, x0)
    obj = FunctionObjective(fn, x0)
    x = run(OPTS[name](), obj, 3000)
    assert float(fn(x)) == pytest.approx(f_ref, abs=1e-9)
    assert torch.allclose(x, x_ref, atol=1e-4)


def test_hf_solves_convex_quadratic_in_n_cg_iterations():
    n = 12
    g = torch.Generator().manual_seed(1)
    Q = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = Q @ Q.T + 0.1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x_star = torch.linalg.solve(A, b)
    obj = FunctionObjective(lambda x: 0.5 * x @ A @ x - b @ x, torch.zeros(n, dtype=torch.float64))
    hf = HessianFree(damping=0.0, lm=None, structural_weight=0.0, max_cg=n)
    info = hf.step(obj)
    assert info.cg_iterations <= n and info.cg_stop in ("residual", "max_iter")
    assert info.step_size == 1.0
    assert torch.allclose(obj.get_params(), x_star, atol=1e-8)


@pytest.mark.parametrize("precond", [None, "diagonal", "lbfgs"])
def test_hf_converges_on_logistic(precond):
    fn, n = logistic_problem()
    x_ref, f_ref = scipy_min(fn, torch.zeros(n, dtype=torch.float64))
    obj = FunctionObjective(fn, torch.zeros(n, dtype=torch.float64))
    hf = HessianFree(damping=1e-3, structural_weight=0.0, preconditioner=precond)
    for _ in range(15):
        hf.step(obj)
    assert float(fn(obj.get_params())) == pytest.approx(f_ref, abs=1e-8)


@pytest.mark.parametrize("curvature", ["hessian", "fd"])
def test_hf_exact_and_fd_curvature_on_rosenbrock(curvature):
    obj = FunctionObjective(rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64))
    hf = HessianFree(curvature=curvature, damping=1.0, structural_weight=0.0)
    for _ in range(100):
        hf.step(obj)
    assert torch.allclose(obj.get_params(), torch.ones(2, dtype=torch.float64), atol=1e-4)


def test_adam_matches_torch():
    fn, n = logistic_problem()
    x0 = torch.zeros(n, dtype=torch.float64)
    obj = FunctionObjective(fn, x0)
    ours = Adam(lr=0.05)
    p = torch.nn.Parameter(x0.clone())
    ref = torch.optim.Adam([p], lr=0.05)
    for _ in range(20):
        ours.step(obj)
        ref.zero_grad()
        fn(p).backward()
        ref.step()
    assert torch.allclose(obj.get_params(), p.detach(), atol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True], ids=["classical", "nesterov"])
def test_momentum_matches_formula(nesterov):
    fn, n = logistic_problem()
    obj = FunctionObjective(fn, torch.zeros(n, dtype=torch.float64))
    opt = SGD(lr=0.5, momentum=0.9, nesterov=nesterov, rescale=True)
    x, v = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for _ in range(5):
        opt.step(obj)
        at = (x + 0.9 * v if nesterov else x).requires_grad_(True)
        (g,) = torch.autograd.grad(fn(at), at)
        v = 0.9 * v - 0.5 * 0.1 * g
        x = x.detach() + v
    assert torch.allclose(obj.get_params(), x, atol=1e-14)


def test_sgd_clipping():
    obj = FunctionObjective(lambda x: (x * torch.tensor([100.0, 0.1])).sum(), torch.zeros(2))
    SGD(lr=1.0, clip_value=1.0).step(obj)
    assert torch.allclose(obj.get_params(), torch.tensor([-1.0, -0.1]))
    obj = FunctionObjective(lambda x: (x * torch.tensor([3.0, 4.0])).sum(), torch.zeros(2))
    SGD(lr=1.0, clip_norm=1.0).step(obj)
    assert torch.allclose(obj.get_params(), torch.tensor([-0.6, -0.8]))


@pytest.mark.parametrize("norm", [0.3, 0.999999, 1.0, 2.0, 50.0])
def test_norm_clipping_is_torchs_clip_grad_norm(norm):
    from lstmlab.optim.sgd import clip_gradient

    g = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = g * (norm / g.norm())
    p = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
    p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_([p], 1.0)
    assert torch.equal(clip_gradient(g, None, 1.0), p.grad)


def test_schedules_accepted():
    obj = FunctionObjective(lambda x: 0.5 * (x**2).sum(), torch.ones(2, dtype=torch.float64))
    opt = SGD(lr={"type": "piecewise", "boundaries": [1], "values": [0.5, 0.25]})
    opt.step(obj)
    assert torch.allclose(obj.get_params(), torch.full((2,), 0.5, dtype=torch.float64))
    opt.step(obj)
    assert torch.allclose(obj.get_params(), torch.full((2,), 0.375, dtype=torch.float64))
    np.testing.assert_allclose(opt.hp("lr"), 0.25)


@pytest.mark.parametrize("curvature", ["hessian", "fd"])
def test_hf_discards_negative_curvature_and_still_descends(curvature):
    """f = x0² − x1² + x1⁴/4 + 0.1 x1 started on the ridge (x1 = 0.1, curvature −2 + 3·0.01 < 0):
    CG meets negative curvature at once, with small λ; HF must discard that direction, step
    along the gradient (downhill: towards larger x1) and reach the local minimum x1 ≈ 1.3885
    (a root of x³ − 2x + 0.1), not reject step after step."""

    def f(x):
        return x[0] ** 2 - x[1] ** 2 + x[1] ** 4 / 4 + 0.1 * x[1]

    obj = FunctionObjective(f, torch.tensor([0.5, 0.1], dtype=torch.float64))
    hf = HessianFree(curvature=curvature, damping=1e-3, structural_weight=0.0)
    infos = [hf.step(obj) for _ in range(40)]
    assert infos[0].cg_stop == "negative_curvature"
    assert sum(i.accepted for i in infos) >= 20
    x = obj.get_params()
    assert abs(float(x[0])) < 1e-4 and float(x[1]) == pytest.approx(1.3885, abs=1e-3)


def test_hf_drops_a_warm_start_that_meets_negative_curvature():
    """f = ½x0² − ½x1² at (1, 0), g = (1, 0), warm start 0.95·(0, 2): CG's first direction has
    negative curvature and the warm start itself is no descent direction. HF discards both and
    steps along −g instead of rejecting (and warm-starting from the same point again)."""
    obj = FunctionObjective(
        lambda x: 0.5 * x[0] ** 2 - 0.5 * x[1] ** 2, torch.tensor([1.0, 0.0], dtype=torch.float64)
    )
    hf = HessianFree(curvature="hessian", damping=1e-3, structural_weight=0.0)
    hf.p_prev = torch.tensor([0.0, 2.0], dtype=torch.float64)
    info = hf.step(obj)
    assert info.cg_stop == "negative_curvature"
    assert info.accepted and info.new_loss < info.loss
    assert float(obj.get_params()[0]) < 1.0 and float(obj.get_params()[1]) == 0.0


def test_ncg_without_history_starts_each_step_afresh():
    """keep_history=False: a step on a new objective is what a fresh optimizer does there."""
    fn, n = logistic_problem()
    fn2, _ = logistic_problem(seed=1)
    kw = dict(iterations=3, c2=0.2, step_init="quadratic")
    results = {}
    for keep in (False, True):
        opt = NonlinearCG("hs", keep_history=keep, **kw)
        obj1 = FunctionObjective(fn, torch.zeros(n, dtype=torch.float64))
        opt.step(obj1)
        x1 = obj1.get_params()
        obj2 = FunctionObjective(fn2, x1)
        opt.step(obj2)
        results[keep] = obj2.get_params()
    fresh = FunctionObjective(fn2, x1)
    NonlinearCG("hs", **kw).step(fresh)
    assert torch.equal(results[False], fresh.get_params())
    assert not torch.equal(results[True], fresh.get_params())  # kept: continues d₋ instead


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"beta": "fr"}, "beta"),
        ({"step_init": "newton"}, "step_init"),
        ({"c2": 1e-5}, "c2"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_ncg_rejects_bad_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        NonlinearCG(**kw)
