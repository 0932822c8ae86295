"""L-BFGS and nonlinear CG as seed 000's released script drives minFunc: several calls per
minibatch, each with a fresh history, minFunc's first trial step, a budget of function
evaluations and minFunc's stopping tolerances."""

from __future__ import annotations

import pytest
import torch

import lstmlab.optim.minfunc as minfunc_module
from lstmlab.objective import FunctionObjective
from lstmlab.optim import LBFGS, NonlinearCG

DT = torch.float64


def rosenbrock(n: int = 6) -> FunctionObjective:
    def f(x):
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    return FunctionObjective(f, torch.full((n,), -1.2, dtype=DT))


def make(name: str, **kw):
    if name == "lbfgs":
        return LBFGS(**{"first_step": "call", **kw})
    return NonlinearCG("hs", c2=0.2, **{"step_init": "quadratic", **kw})


@pytest.fixture
def trials(monkeypatch):
    """Every line search's (t₀, x) of the optimizers, in order."""
    seen: list[tuple[float, torch.Tensor]] = []
    real = minfunc_module.strong_wolfe  # the one search both methods call

    def spy(obj, x, t0, d, f, g, **kw):
        seen.append((t0, g.clone(), d.clone(), f))
        return real(obj, x, t0, d, f, g, **kw)

    monkeypatch.setattr(minfunc_module, "strong_wolfe", spy)
    return seen


@pytest.mark.parametrize("name", ["lbfgs", "cg"])
def test_a_fresh_call_starts_with_minfuncs_first_step(name, trials):
    """min(1, 1/‖g‖₁) at the first iteration of every call when the history is not kept, and
    only once per run when it is (L-BFGS) — the line search's first trial."""
    opt = make(name, iterations=3, keep_history=False)
    obj = rosenbrock()
    opt.step(obj)
    opt.step(obj)
    firsts = [trials[0], trials[3]]
    for t0, g, *_ in firsts:
        assert t0 == pytest.approx(min(1.0, 1.0 / float(g.abs().sum())))
    if name == "lbfgs":
        trials.clear()
        for kept in (
            make(name, iterations=3, keep_history=True),
            make(name, iterations=3, keep_history=False, first_step="run"),  # torch's rule
        ):
            trials.clear()
            kept.step(obj)
            kept.step(obj)
            assert trials[0][0] == pytest.approx(min(1.0, 1.0 / float(trials[0][1].abs().sum())))
            assert trials[3][0] == 1.0  # only the run's first trial


@pytest.mark.parametrize("name", ["lbfgs", "cg"])
def test_calls_restart_and_each_stops_at_its_evaluation_budget(name, trials):
    obj = rosenbrock()
    opt = make(name, iterations=1000, keep_history=False, calls=3, max_evals=6)
    info = opt.step(obj)
    assert info.reason == "evaluation budget of the call spent"
    # three calls: three first trials by minFunc's rule, each call ends once its evaluations
    # (its first one included) reach 6
    restarts = [
        i for i, (t0, g, *_) in enumerate(trials) if t0 == min(1.0, 1.0 / float(g.abs().sum()))
    ]
    assert len(restarts) == 3
    assert 3 * 2 <= info.inner_iterations <= 3 * 5
    assert info.line_search_evals >= 3 * 5


@pytest.mark.parametrize("name", ["lbfgs", "cg"])
def test_quadratic_trial_step_after_the_first_iteration(name, trials):
    """minFunc's LS_init = 2: t₀ = min(1, 2 (f − f₋) / gᵀd), from the last two losses."""
    opt = make(name, iterations=12, keep_history=False, step_init="quadratic")
    opt.step(rosenbrock())
    assert len(trials) == 12
    for (_, _, _, f_prev), (t0, g, d, f) in zip(trials, trials[1:], strict=False):
        want = 2.0 * (f - f_prev) / float(g.dot(d))
        assert t0 == pytest.approx(min(1.0, want) if want > 0 else 1.0, rel=1e-12)
    assert any(t0 != 1.0 for t0, *_ in trials[1:])  # the rule was not trivially 1


@pytest.mark.parametrize("name", ["lbfgs", "cg"])
def test_minfuncs_step_tolerance_ends_a_call(name):
    obj = rosenbrock()
    opt = make(name, iterations=1000, keep_history=False, tolerance_step=1e3)
    info = opt.step(obj)
    assert info.reason in ("step below tolerance", "slope below tolerance")
    assert info.inner_iterations <= 1


@pytest.mark.parametrize("name", ["lbfgs", "cg"])
def test_bad_call_options_are_one_line(name):
    with pytest.raises(ValueError, match="^calls: must be an integer >= 1"):
        make(name, calls=0)
    with pytest.raises(ValueError, match="^max_evals: must be an integer >= 2"):
        make(name, max_evals=1)
    with pytest.raises(ValueError, match="^tolerance_step: must be a number >= 0"):
        make(name, tolerance_step=-1.0)
    if name == "lbfgs":
        with pytest.raises(ValueError, match="^first_step: unknown 'each'"):
            make(name, first_step="each")


@pytest.mark.parametrize("name", ["lbfgs", "cg"])
def test_a_search_without_decrease_forgets_the_direction(name, monkeypatch):
    """At the step's first search: rejected, nothing moved; later: the call ends at the last
    good point. Either way the method's memory (L-BFGS pairs, CG's last direction) is dropped."""
    real = minfunc_module.strong_wolfe
    calls = {"n": 0, "fail_at": 0}

    def failing(obj, x, t0, d, f, g, **kw):
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            return f + 1.0, g, t0, 1  # the loss rose
        return real(obj, x, t0, d, f, g, **kw)

    monkeypatch.setattr(minfunc_module, "strong_wolfe", failing)

    def memory(opt) -> bool:
        return bool(opt.S) if name == "lbfgs" else opt.g_prev is not None

    opt, obj = make(name, iterations=4, keep_history=True), rosenbrock()
    opt.step(obj)  # 4 good searches: memory built
    assert memory(opt)
    calls["fail_at"] = calls["n"] + 3  # the third search of the next step
    before = obj.get_params()
    info = opt.step(obj)
    assert info.reason == "line search found no decrease" and not info.rejected
    assert not memory(opt) and not torch.equal(obj.get_params(), before)
    opt.step(obj)
    calls["fail_at"] = calls["n"] + 1  # the first search of the next step
    before = obj.get_params()
    info = opt.step(obj)
    assert info.rejected and "no decrease" in info.reason
    assert not memory(opt) and torch.equal(obj.get_params(), before)
