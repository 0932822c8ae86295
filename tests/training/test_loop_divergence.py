"""The loop stops at the first step that leaves a non-finite parameter, evaluates that network
for the summary, logs the step, and never hands the diverged state to the checkpoint writer."""

from __future__ import annotations

import math

import torch

from lstmlab.data import Batch
from lstmlab.training.loop import train
from lstmlab.training.state import TrainState
from lstmlab.training.stopping import StoppingRule


class Data:
    def __len__(self):
        return 8

    def batch(self, rows=None):
        x = torch.zeros(8, 1, 1)
        return Batch(x, x[:, 0], torch.ones(8, dtype=torch.long))


class Model:
    def __init__(self):
        self.w = torch.ones(3)

    def parameters(self):
        return [self.w]

    def set_epoch(self, e):
        pass


class Opt:
    """Finite steps until the third, which writes an Inf into the parameters."""

    def __init__(self):
        self.n = 0

    def step(self, obj):
        model, _ = obj
        self.n += 1
        model.w[0] = math.inf if self.n == 3 else float(self.n)
        return {"loss": 1.0}


def test_non_finite_parameters_stop_the_run_without_a_checkpoint():
    saved, log = [], []

    class Log:
        def write(self, r):
            log.append(r)

    state = train(
        Model(),
        Opt(),
        Data(),
        lambda m: {"loss": float(m.w.sum())},
        StoppingRule(metric="loss", max_iterations=100),
        Log(),
        state=TrainState(),
        make_objective=lambda m, b: (m, b),
        batch_size=8,
        seed=0,
        eval_every=50,  # the evaluation would not have caught it before iteration 50
        checkpoint_every=1,
        checkpoint=lambda st: saved.append(st.iteration),
    )
    assert state.stop_reason == "diverged" and state.iteration == 3
    assert saved == [0, 1, 2]  # never the diverged state
    assert log[-1]["iteration"] == 3 and log[-1]["test_loss"] == math.inf
