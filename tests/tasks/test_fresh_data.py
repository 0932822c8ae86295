"""Training data drawn afresh at every step (``task.options.fresh``), as M&S's released HF-RNN
code draws its batches anew at every HF step (issue 24)."""

from __future__ import annotations

import pytest
import torch

import lstmlab
from lstmlab.cli import main
from lstmlab.training import run
from lstmlab.training.build import DeviceSplit
from lstmlab.training.checkpoint import load_checkpoint
from lstmlab.training.config import resolve
from lstmlab.training.loop import minibatch

PROBLEMS = [
    ("adding", {"convention": "ms2011", "T": 30}),
    ("multiplication", {"convention": "1997", "T": 20}),
    ("xor", {"T": 30}),
    ("temporal_order", {"T": 30, "bits": 3}),
    ("permutation", {"T": 20, "symbols": 8}),
    ("memorization", {"T": 20}),
]


@pytest.mark.parametrize(("problem", "options"), PROBLEMS, ids=[p for p, _ in PROBLEMS])
def test_each_draw_is_new_and_reproducible(problem, options):
    task = lstmlab.tasks.make(problem, n_train=40, n_test=10, fresh=True, **options)
    a, again, b = task.train.draw(0, 25), task.train.draw(0, 25), task.train.draw(1, 25)
    assert len(a) == 25 and a.max_length <= task.train.max_length
    assert torch.equal(a.features, again.features) and torch.equal(a.targets, again.targets)
    assert not torch.equal(a.features, b.features)
    fixed = task.train.features[:25]
    if a.features.shape == fixed.shape:  # (else they differ anyway)
        assert not torch.equal(a.features, fixed)
    assert task.info["fresh"] is True
    # the fixed splits are the ones the task without ``fresh`` has
    plain = lstmlab.tasks.make(problem, n_train=40, n_test=10, **options)
    assert torch.equal(plain.train.features, task.train.features)
    assert torch.equal(plain.test.features, task.test.features)
    assert plain.train.draw is None


def test_minibatches_of_a_fresh_split_change_every_step():
    task = lstmlab.tasks.make("adding", convention="ms2011", T=30, n_train=20, fresh=True)
    data = DeviceSplit(task.train, torch.device("cpu"), torch.float64)
    assert data.fresh
    # batch ≥ n_train: one minibatch an epoch, a new one every epoch
    first, second = minibatch(data, 50, 0, 0, 0), minibatch(data, 50, 0, 1, 0)
    assert len(first) == 20 and not torch.equal(first.inputs, second.inputs)
    assert torch.equal(first.inputs, minibatch(data, 50, 0, 0, 0).inputs)
    # two minibatches an epoch: number epoch · 2 + index
    assert torch.equal(minibatch(data, 10, 0, 1, 1).inputs, data.drawn(3, 10).inputs)
    fixed = DeviceSplit(
        lstmlab.tasks.make("adding", convention="ms2011", T=30, n_train=20).train,
        torch.device("cpu"),
        torch.float64,
    )
    assert not fixed.fresh
    assert torch.equal(minibatch(fixed, 50, 0, 0, 0).inputs, minibatch(fixed, 50, 0, 1, 0).inputs)


def test_fresh_must_be_a_bool():
    with pytest.raises(ValueError, match="fresh must be true or false"):
        lstmlab.tasks.make("adding", convention="ms2011", T=30, fresh="yes")


TINY = {
    "task.options.T": "20",
    "task.options.n_train": "20",
    "task.options.n_test": "20",
    "task.options.fresh": "true",
    "optimizer.name": "hf",
    "optimizer.options.max_cg": "3",
    "optimizer.batch_size": "20",
    "stop.max_epochs": "100",
}


def full_and_resumed(tmp_path, ov: dict, stop_at: int, total: int = 4):
    """The summaries of a run of ``total`` iterations and of one stopped at ``stop_at`` and
    resumed to ``total``; asserts their final parameters are equal to the bit."""
    full = run.start(resolve(overrides={**ov, "stop.max_iterations": str(total)}),
                     tmp_path / "full", progress="none")  # fmt: skip
    part = {**ov, "stop.max_iterations": str(stop_at)}
    run.start(resolve(overrides=part), tmp_path / "part", progress="none")
    resumed = run.resume(
        tmp_path / "part", stop_overrides={"max_iterations": total}, progress="none"
    )
    a = load_checkpoint(tmp_path / "full" / "checkpoint.safetensors")["model"]
    b = load_checkpoint(tmp_path / "part" / "checkpoint.safetensors")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    return full, resumed


def test_a_fresh_run_resumes_to_the_uninterrupted_result(tmp_path):
    full, resumed = full_and_resumed(tmp_path, TINY, stop_at=2)
    assert resumed["final"] == full["final"] and resumed["samples"] == full["samples"] == 80
    # and it is not the run on the fixed set
    ov = {**TINY, "task.options.fresh": "false", "stop.max_iterations": "4"}
    fixed = run.start(resolve(overrides=ov), tmp_path / "fixed", progress="none")
    assert fixed["final"] != full["final"]


def test_a_fresh_run_stopped_mid_epoch_resumes_to_the_same_draws(tmp_path):
    """Two minibatches an epoch (n_train 40, B_g 20), stopped after 3: minibatch k = 2·epoch +
    index of the counters the checkpoint holds."""
    full, resumed = full_and_resumed(tmp_path, {**TINY, "task.options.n_train": "40"}, stop_at=3)
    assert resumed["final"] == full["final"] and resumed["epochs"] == full["epochs"] == 2


def test_cli_trains_on_fresh_data(tmp_path, capsys):
    flags = [x for k, v in {**TINY, "stop.max_iterations": "2"}.items() for x in (f"--{k}", v)]
    code = main(
        ["train", "multiplication", "--run-dir", str(tmp_path / "r"), "--progress", "none", *flags]
    )
    assert code == 0
    assert (tmp_path / "r" / "summary.json").exists()


def test_workers_refuse_fresh_data_with_one_line(monkeypatch):
    """The group check runs before any worker starts training (here: a world of two as the
    session sees it; the refusal comes before any collective call)."""
    from lstmlab.distributed import comm
    from lstmlab.distributed.session import Session
    from lstmlab.training.build import build_all
    from lstmlab.training.config import ConfigError

    built = build_all(resolve(overrides={**TINY, "stop.max_iterations": "2"}))
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ConfigError, match=r"^task.options.fresh: data drawn afresh"):
        Session().prepare(built.cfg, built)


def test_dry_run_says_what_the_released_options_do(tmp_path, capsys):
    flags = [x for k, v in {**TINY, "stop.max_iterations": "2"}.items() for x in (f"--{k}", v)]
    extra = ["--optimizer.options.search_batch", "0.1", "--optimizer.options.weight_decay", "2e-5"]
    extra += ["--optimizer.options.backtrack_rule", "best"]
    assert main(["train", "multiplication", "--dry-run", *flags, *extra]) == 0
    out = capsys.readouterr().out
    assert "scores the CG iterates 1, 11, 21, … and the last, and takes the lowest" in out
    assert "every minibatch newly drawn" in out
    assert "line search on subsets of B_g (0.1 each)" in out
    assert "weight decay ½·2e-05·‖θ‖²" in out
    assert main(["train", "multiplication", "--dry-run", *tiny_fixed()]) == 0
    out = capsys.readouterr().out
    assert "newly drawn" not in out and "weight decay" not in out and "subsets of B_g" not in out
    assert "CG iterates 1, 11" not in out


def tiny_fixed() -> list[str]:
    ov = {**TINY, "task.options.fresh": "false", "stop.max_iterations": "2"}
    return [x for k, v in ov.items() for x in (f"--{k}", v)]
