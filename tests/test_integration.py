"""Tasks, models and engines together: every task builds a SequenceModel that trains on it."""

from __future__ import annotations

import pytest
import torch

import lstmlab
from lstmlab import SequenceModel

SMALL = {
    "seed000": dict(n_train=32, n_test=16),
    "adding": dict(convention="1997", T=20, n_train=32, n_test=16),
    "multiplication": dict(convention="ms2011", T=20, n_train=32, n_test=16),
    "xor": dict(T=20, n_train=32, n_test=16),
    "temporal_order": dict(T=20, n_train=32, n_test=16),
    "temporal_order_3bit": dict(T=20, n_train=32, n_test=16),
    "permutation": dict(T=20, n_train=32, n_test=16),
    "memorization_5of2": dict(T=20, n_train=32, n_test=16),
    "framewise": dict(n_train=16, n_valid=8, n_test=8),
    "ctc": dict(n_train=16, n_valid=8, n_test=8),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_task_model_engines_agree(name):
    task = (
        lstmlab.tasks.make(name, dtype=torch.float64, **SMALL[name])
        if name
        not in (
            "framewise",
            "ctc",
        )
        else lstmlab.tasks.make(name, **SMALL[name])
    )
    model = SequenceModel(
        hidden_size=4,
        dtype=torch.float64,
        seed=0,
        bidirectional=task.bidirectional,
        **task.model_kwargs(),
    )
    batch = next(iter(task.train.batches(8, shuffle=False))).to(dtype=torch.float64)
    grads = {}
    for engine in ("bptt", "autograd"):
        model.engine = engine
        loss = model.loss(model(batch.inputs, batch.lengths), batch)
        assert torch.isfinite(loss)
        grads[engine] = torch.autograd.grad(loss, list(model.parameters()))
    for a, b in zip(grads["bptt"], grads["autograd"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    metrics = task.evaluate(model.predict(batch.inputs, batch.lengths).detach(), batch)
    assert metrics and all(v == v for v in metrics.values())  # no NaN
    assert task.solved(metrics) in (True, False)


def test_a_few_lbfgs_steps_reduce_the_seed000_loss():
    task = lstmlab.tasks.make("seed000", n_train=64, n_test=16)
    model = SequenceModel(
        hidden_size=4,
        variant="lstm97",
        cells_per_block=2,
        gate_sharpness=3.75,
        dtype=torch.float64,
        seed=0,
        **task.model_kwargs(),
    )
    batch = task.train.batch().to(dtype=torch.float64)
    objective = lstmlab.Objective(model, batch)
    opt = lstmlab.optim.LBFGS(iterations=3)
    first = objective.loss()
    info = opt.step(objective)
    assert info.new_loss < first
    assert info.p_d > 0 and info.p_i > 0
