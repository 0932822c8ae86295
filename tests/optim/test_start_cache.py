"""The start-of-step cache of L-BFGS and nonlinear CG must not outlive the function it cached."""

from __future__ import annotations

import pytest
import torch

from lstmlab.data import Batch
from lstmlab.nn.sequence_model import SequenceModel
from lstmlab.objective import Objective
from lstmlab.optim import LBFGS, NonlinearCG

OPTIMIZERS = {"lbfgs": lambda: LBFGS(history=5), "ncg": lambda: NonlinearCG("pr+")}


def problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, T = 12, 6
    inputs = torch.randn(B, T, 2, generator=g, dtype=torch.float64)
    batch = Batch(inputs, torch.randn(B, 1, generator=g, dtype=torch.float64), torch.full((B,), T))
    schedule = {"type": "linear", "start": 1.0, "end": 3.0, "steps": 2}  # α over epochs
    model = SequenceModel(
        2, 3, 1, read="last", gate_sharpness=schedule, dtype=torch.float64, seed=seed
    )
    return model, batch


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_gate_sharpness_step_between_iterations_recomputes_f_and_g(name):
    model, batch = problem()
    obj = Objective(model, batch)  # full batch: the same objective comes back every step
    opt = OPTIMIZERS[name]()
    opt.step(obj)
    model.set_epoch(1)  # the epoch ends: α goes from 1 to 2
    f_now = Objective(model, batch).loss()
    grads_before = obj.counter.n_grad
    info = opt.step(obj)
    assert info.loss == pytest.approx(f_now, rel=1e-12)
    assert obj.counter.n_grad > grads_before  # a fresh gradient at the step's start


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_unchanged_objective_still_reuses_the_gradient(name):
    model, batch = problem()
    obj = Objective(model, batch)
    opt = OPTIMIZERS[name]()
    first = opt.step(obj)
    evals = first.line_search_evals
    grads = obj.counter.n_grad
    second = opt.step(obj)
    assert second.loss == first.new_loss
    assert obj.counter.n_grad - grads == second.line_search_evals  # none at the start
    assert evals >= 1


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_another_batch_on_the_same_objective_recomputes(name):
    model, batch = problem()
    obj = Objective(model, batch)
    opt = OPTIMIZERS[name]()
    opt.step(obj)
    other = problem(seed=1)[1]
    obj.batch = other
    expected = Objective(model, other).loss()
    assert opt.step(obj).loss == pytest.approx(expected, rel=1e-12)
    obj.batch.targets.mul_(2.0)  # the same batch, changed in place
    expected = Objective(model, other).loss()
    assert opt.step(obj).loss == pytest.approx(expected, rel=1e-12)
