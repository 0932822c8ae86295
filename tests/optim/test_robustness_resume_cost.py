"""Non-finite safety, exact resume and cost accounting of every optimizer."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from optim_toys import TinyRNN, make_batch

from lstmlab.objective import FunctionObjective, Objective
from lstmlab.optim import LBFGS, SGD, Adam, HessianFree, NonlinearCG, stochastic_hf


def logistic(x):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1] > 0).to(torch.float64)
    return torch.nn.functional.binary_cross_entropy_with_logits(X @ x, y) + 0.01 * (x**2).sum()


class Faulty:
    """Proxy objective: loss_and_grad call number k (0-based) in ``bad`` returns NaN."""

    def __init__(self, obj, bad):
        self._obj, self.bad, self.calls = obj, set(bad), 0

    def __getattr__(self, name):
        return getattr(self._obj, name)

    def loss_and_grad(self, x=None):
        f, g = self._obj.loss_and_grad(x)
        k, self.calls = self.calls, self.calls + 1
        if k in self.bad:
            return math.nan, g * math.nan
        return f, g


FACTORIES = {
    "sgd": lambda: SGD(lr=0.5, momentum=0.9),
    "nesterov": lambda: SGD(lr=0.5, momentum=0.9, nesterov=True, clip_norm=1.0),
    "adam": lambda: Adam(lr=0.05),
    "lbfgs": lambda: LBFGS(history=5),
    "lbfgs-minibatch": lambda: LBFGS(history=5, iterations=3, keep_history=False),
    "ncg-pr+": lambda: NonlinearCG("pr+"),
    "ncg-hs": lambda: NonlinearCG("hs", iterations=2),
    "ncg-minfunc-minibatch": lambda: NonlinearCG(
        "hs", iterations=3, c2=0.2, step_init="quadratic", keep_history=False
    ),
    "hf": lambda: HessianFree(damping=0.1),
    "hf-shf-lbfgs": lambda: stochastic_hf(curvature_batch=3, preconditioner="lbfgs", max_cg=20),
    "hf-diag-hessian": lambda: HessianFree(
        curvature="hessian", damping=1.0, preconditioner="diagonal", curvature_batch=0.5
    ),
}


def adjusted(opt) -> bool:
    if isinstance(opt, HessianFree):
        return opt.lam > 0.1 * 1.5  # raised beyond any LM change
    return opt.scale < 1.0


@pytest.mark.parametrize("name", list(FACTORIES))
def test_nonfinite_leaves_parameters_and_adjusts(name):
    base = FunctionObjective(logistic, torch.zeros(3, dtype=torch.float64))
    opt = FACTORIES[name]()
    if isinstance(opt, HessianFree):
        opt.lam = 0.1
    opt.step(base)  # one good step
    x_before = base.get_params()
    faulty = Faulty(base, bad={0})  # the next gradient evaluation is NaN
    info = opt.step(faulty)
    assert info.rejected and not info.accepted and "non-finite" in info.reason
    assert torch.equal(base.get_params(), x_before)
    assert adjusted(opt)
    info = opt.step(base)
    assert not info.rejected and bool(torch.isfinite(base.get_params()).all())


def test_hf_nonfinite_losses_in_backtracking_count_as_no_decrease():
    base = FunctionObjective(logistic, torch.zeros(3, dtype=torch.float64))

    class NanLoss(Faulty):
        def loss(self, x=None):
            return math.nan

    hf = HessianFree(damping=0.1, structural_weight=0.0)
    x0 = base.get_params()
    info = hf.step(NanLoss(base, bad=()))
    assert info.rejected and torch.equal(base.get_params(), x0) and hf.lam > 0.1


# ---------------------------------------------------------------------- exact resume
def _problem(seed=0):
    torch.manual_seed(seed)
    model = TinyRNN(2, 3, 2).double()
    batches = [make_batch(6, 5, 2, 2, seed=s) for s in range(3)]
    return model, batches


def _run(model, opt, batches, steps, start=0, same=False):
    objs = [Objective(model, b) for b in batches]
    for k in range(start, start + steps):
        opt.step(objs[0] if same else objs[k % len(objs)])


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("batching", ["full", "minibatch"])
def test_state_dict_resume_is_bitwise(name, batching):
    same = batching == "full"
    model, batches = _problem()
    model_b = copy.deepcopy(model)
    opt = FACTORIES[name]()
    _run(model, opt, batches, 6, same=same)

    opt_b = FACTORIES[name]()
    _run(model_b, opt_b, batches, 3, same=same)
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model_c = copy.deepcopy(model_b)
    with torch.no_grad():
        for p in model_c.parameters():
            p.fill_(float("nan"))  # nothing may survive from before the load
    model_c.load_state_dict(saved["model"])
    opt_c = FACTORIES[name]()
    opt_c.load_state_dict(saved["opt"])
    _run(model_c, opt_c, batches, 3, start=3, same=same)
    for p, q in zip(model.parameters(), model_c.parameters(), strict=True):
        assert torch.equal(p, q)
    assert opt_c.iteration == opt.iteration == 6


# ---------------------------------------------------------------------- cost accounting
def test_sgd_cost_is_seed001_formula():
    model, batches = _problem()
    opt = SGD(lr=0.1, momentum=0.9)
    infos = [opt.step(Objective(model, batches[k % 3])) for k in range(5)]
    B = 6
    assert infos[-1].p_d == 3 * 5 * B and infos[-1].p_i == 3 * 5
    assert infos[-1].samples == 5 * B
    assert all(i.cost["n_grad"] == 1 and i.cost["n_fun"] == 0 for i in infos)


@pytest.mark.parametrize("name", ["lbfgs", "lbfgs-minibatch", "ncg-pr+", "ncg-hs"])
def test_line_search_methods_count_every_evaluation(name):
    calls = []

    def fn(x):
        calls.append(1)
        return logistic(x)

    obj = FunctionObjective(fn, torch.zeros(3, dtype=torch.float64), n_samples=7)
    opt = FACTORIES[name]()
    for _ in range(4):
        info = opt.step(obj)
    n = len(calls)  # the hand count: every evaluation of fn is a loss-and-gradient
    assert info.p_d == 3 * 7 * n and info.p_i == 3 * n
    assert opt.totals.n_grad == n


def test_hf_cost_equals_hand_count():
    model, batches = _problem()
    Bg, Bc = 6, 3
    sizes = []
    model.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    hf = HessianFree(damping=0.5, curvature_batch=Bc, max_cg=30)
    p_d = p_i = 0.0
    for k in range(3):
        sizes.clear()
        info = hf.step(Objective(model, batches[k]))
        products = info.cg_iterations + (1 if k > 0 else 0)  # + the warm start's A·x0
        ls = info.line_search_evals
        # forward calls: gradient (B_g), curvature set-up (B_c), one per loss evaluation (B_g)
        assert sorted(sizes) == sorted([Bg] + [Bc] + [Bg] * ls)
        p_d += 3 * Bg + 3 * Bc + 4 * Bc * products + 1 * Bg * ls
        p_i += 3 + 3 + 4 * products + 1 * ls
        assert info.p_d == pytest.approx(p_d) and info.p_i == pytest.approx(p_i)
        assert info.cost["n_curv"] == products and info.cg_stop
