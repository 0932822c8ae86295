"""The loop and stopping rule on stand-ins (no real model needed), and in-process resume."""

from __future__ import annotations

import pytest
import torch

from lstmlab.data import Batch
from lstmlab.training.loop import minibatch, train
from lstmlab.training.state import TrainState
from lstmlab.training.stopping import StoppingRule


class Data:
    def __init__(self, n):
        self.x = torch.arange(n, dtype=torch.float64).reshape(n, 1, 1)

    def __len__(self):
        return len(self.x)

    def batch(self, rows=None):
        x = self.x if rows is None else self.x[rows]
        return Batch(x, x[:, 0], torch.ones(len(x), dtype=torch.long))


class Model:
    def __init__(self):
        self.w = 1.0
        self.epochs = []

    def set_epoch(self, e):
        self.epochs.append(e)


class Opt:
    """Halves the stand-in error each step; reports a cost like lstmlab.optim.StepInfo."""

    def step(self, obj):
        model, batch = obj
        model.w *= 0.5
        return {
            "loss": model.w,
            "cost": {"p_d": 3.0 * len(batch), "p_i": 3.0, "samples_grad": float(len(batch))},
        }


class Log:
    def __init__(self):
        self.records = []

    def write(self, r):
        self.records.append(r)


def _run(stopping, n=10, batch_size=4, **kw):
    model, log = Model(), Log()
    state = train(
        model,
        Opt(),
        Data(n),
        lambda m: {"err": m.w},
        stopping,
        log,
        state=TrainState(),
        make_objective=lambda m, b: (m, b),
        batch_size=batch_size,
        seed=0,
        **kw,
    )
    return state, log, model


def test_minibatches_cover_each_epoch_once_and_depend_only_on_counters():
    data = Data(10)
    rows = torch.cat([minibatch(data, 4, 7, 0, i).inputs.flatten() for i in range(3)])
    assert sorted(rows.tolist()) == list(range(10))
    assert torch.equal(minibatch(data, 4, 7, 1, 2).inputs, minibatch(data, 4, 7, 1, 2).inputs)
    assert not torch.equal(minibatch(data, 4, 7, 0, 0).inputs, minibatch(data, 4, 7, 1, 0).inputs)


def test_target_stops_and_counters_add_up():
    state, log, model = _run(StoppingRule("err", target=0.1))
    assert state.stop_reason == "solved" and state.solved
    assert state.iteration == 4  # 1/16 < 0.1
    assert state.samples == 4 + 4 + 2 + 4  # epoch 0: 4, 4, 2; epoch 1: 4
    assert state.P_D == 3.0 * state.samples and state.P_I == 3.0 * state.iteration
    assert state.epoch == 1 and model.epochs == [0, 0, 0, 1]
    assert [r["iteration"] for r in log.records] == [0, 1, 2, 3, 4]
    assert log.records[-1]["test_err"] == 1 / 16


@pytest.mark.parametrize(
    "rule, reason, iterations",
    [
        (dict(max_iterations=3), "max_iterations", 3),
        (dict(max_epochs=2), "max_epochs", 6),
        (dict(max_samples=9), "max_samples", 3),
        (dict(max_pd=30.0), "max_pd", 3),
        (dict(max_pi=12.0), "max_pi", 4),
    ],
    ids=["iterations", "epochs", "samples", "P_D", "P_I"],
)
def test_budgets(rule, reason, iterations):
    state, _, _ = _run(StoppingRule("err", **rule))
    assert (state.stop_reason, state.iteration) == (reason, iterations)


def test_patience_counts_evaluations_without_improvement():
    class Flat(Opt):
        def step(self, obj):
            return {"cost": {}}

    model, log = Model(), Log()
    state = train(
        model,
        Flat(),
        Data(10),
        lambda m: {"err": 1.0},
        StoppingRule("err", patience=3),
        log,
        state=TrainState(),
        make_objective=lambda m, b: (m, b),
        batch_size=4,
        seed=0,
    )
    assert (state.stop_reason, state.iteration, state.evals) == ("patience", 3, 4)


def test_interrupt_stops_cleanly_and_checkpoints():
    saved = []
    calls = iter([False, False, True])
    state, _, _ = _run(
        StoppingRule("err"),
        checkpoint=lambda s: saved.append(s.iteration),
        interrupted=lambda: next(calls),
    )
    assert state.stop_reason == "interrupted" and state.iteration == 2
    assert saved[-1] == 2


def test_eval_every_and_checkpoint_every():
    saved = []
    state, log, _ = _run(
        StoppingRule("err", max_iterations=6),
        eval_every=3,
        checkpoint_every=2,
        checkpoint=lambda s: saved.append(s.iteration),
    )
    assert [r["iteration"] for r in log.records if "test_err" in r] == [0, 3, 6]
    assert saved == [0, 2, 4, 6, 6]
    state, log, _ = _run(StoppingRule("err", max_iterations=4), eval_every=3)
    assert [r["iteration"] for r in log.records if "test_err" in r] == [0, 3, 4]  # final eval


def test_higher_is_better_metric():
    rule = StoppingRule("acc", target=0.9, higher_is_better=True)
    st = TrainState()
    rule.observe(st, {"acc": 0.5})
    rule.observe(st, {"acc": 0.95})
    assert st.best == 0.95 and st.solved


@pytest.mark.parametrize("answer", [True, False])
def test_wall_clock_intervals_follow_the_agreed_answer(answer):
    """``eval_seconds``: the loop acts on ``agree``'s answer (rank 0's in a worker group), not on
    its own clock — here the clock says "due" every step (1e-9 s) and "never" (1e9 s)."""
    asked = []

    def agree(mine):
        asked.append(mine)
        return answer

    for seconds in (1e-9, 1e9):
        asked.clear()
        stopping = StoppingRule(metric="err", max_iterations=5)
        state, log, _ = _run(stopping, eval_every=1000, eval_seconds=seconds, agree=agree)
        evaluated = [r["iteration"] for r in log.records if "test_err" in r]
        assert asked and all(a == (seconds < 1) for a in asked)
        assert evaluated == ([0, 1, 2, 3, 4, 5] if answer else [0, 5])
