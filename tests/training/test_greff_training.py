"""What Greff et al.'s runs need from training: patience in epochs, Gaussian input noise,
early stopping on the validation split, and the framewise task built bidirectional."""

from __future__ import annotations

import pytest
import torch
from test_loop import Data, Log, Model, Opt

from lstmlab.training import build
from lstmlab.training.config import ConfigError, resolve
from lstmlab.training.loop import train
from lstmlab.training.state import TrainState
from lstmlab.training.stopping import StoppingRule


class ImprovesThenFlat(Opt):
    """The error halves for the first ``k`` steps, then stays."""

    def __init__(self, k):
        self.k, self.n = k, 0

    def step(self, obj):
        self.n += 1
        return super().step(obj) if self.n <= self.k else {"cost": {}}


@pytest.mark.parametrize("k", [0, 4], ids=["flat", "improves-4-steps"])
def test_patience_counts_epochs_not_evaluations(k):
    # 10 samples in batches of 4: 3 iterations per epoch, one evaluation per iteration
    state = train(
        Model(),
        ImprovesThenFlat(k),
        Data(10),
        lambda m: {"err": m.w},
        StoppingRule("err", patience_epochs=2),
        Log(),
        state=TrainState(),
        make_objective=lambda m, b: (m, b),
        batch_size=4,
        seed=0,
    )
    # the last improvement happens at iteration k, in epoch k // 3 (completed epochs);
    # the run stops at the first iteration where two more epochs have completed
    best_epoch = k // 3
    assert state.best_epoch == best_epoch
    assert state.stop_reason == "patience"
    assert state.epoch == best_epoch + 2 and state.batch_in_epoch == 0
    assert state.iteration == 3 * (best_epoch + 2)


def _tiny(**over):
    base = {
        "task.name": "framewise",
        "task.options.n_train": 20,
        "task.options.n_valid": 10,
        "task.options.n_test": 10,
        "model.variant": "vanilla",
        "model.blocks": 3,
        "model.cells_per_block": 1,
        "optimizer.name": "nesterov",
        "optimizer.batch_size": 5,
    }
    return resolve([], {**base, **over})


def test_input_noise_is_gaussian_on_valid_steps_and_reproducible():
    built = build.build_all(_tiny(**{"task.input_noise": 0.5}))
    clean = build.build_all(_tiny())
    rows = torch.arange(20)
    assert torch.equal(clean.train_data.batch(rows).inputs, clean.train_data.batch(rows).inputs)
    torch.manual_seed(3)
    a = built.train_data.batch(rows)
    torch.manual_seed(3)
    b = built.train_data.batch(rows)
    assert torch.equal(a.inputs, b.inputs)  # the global generator (checkpointed) drives it
    c = built.train_data.batch(rows)
    assert not torch.equal(a.inputs, c.inputs)  # fresh noise at every draw
    x = clean.train_data.batch(rows)
    eps = (a.inputs - x.inputs)[x.mask()]
    assert abs(float(eps.std()) - 0.5) < 0.03 and abs(float(eps.mean())) < 0.03
    assert torch.all((a.inputs - x.inputs)[~x.mask()] == 0)  # padding stays zero
    assert torch.equal(built.test_data.batch().inputs, clean.test_data.batch().inputs)


def test_framewise_task_is_built_bidirectional():
    built = build.build_all(_tiny())
    assert built.task.bidirectional and built.model.rnn.bidirectional
    off = build.build_all(_tiny(**{"model.options.bidirectional": False}))
    assert not off.model.rnn.bidirectional


def test_eval_split_valid_watches_the_validation_split():
    built = build.build_all(_tiny(eval_split="valid"))
    assert built.eval_data.split is built.task.valid
    other = build.build_all(_tiny(eval_split="test"))
    assert other.eval_data.split is other.task.test
    with pytest.raises(ConfigError, match="^eval_split: .*no valid split"):
        build.build_all(_tiny(eval_split="valid", **{"task.options.n_valid": 0}))
