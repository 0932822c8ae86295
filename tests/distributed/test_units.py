"""One-process pieces of lstmlab.distributed: no-op helpers, shard sizes, the thread rule,
the launcher's argument handling, the simulated slow worker, and the one-process session."""

from __future__ import annotations

import time

import pytest
import torch

from lstmlab.distributed import (
    DistributedObjective,
    SpeedMeter,
    comm,
    get_rank,
    get_world_size,
    split_counts,
)
from lstmlab.distributed.launch import strip_option
from lstmlab.distributed.shards import ShardedSplit
from lstmlab.distributed.threads import WIDE, choose_threads, default_threads


def test_helpers_are_noops_in_one_process():
    assert get_rank() == 0 and get_world_size() == 1 and comm.is_main()
    t = torch.arange(3.0)
    assert comm.all_reduce_sum(t) is t and torch.equal(t, torch.arange(3.0))
    assert comm.broadcast_object({"a": 1}) == {"a": 1}
    assert comm.gather_objects(5) == [5]
    comm.check_same({"x": 1}, "config")  # nothing to compare with
    assert comm.all_gather_floats([1.0, 2.0]).tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize(
    "n, weights, expected",
    [
        (11, [1.0, 2.5, 1.3], [3, 5, 3]),
        (10, [1.0, 1.0], [5, 5]),
        (3, [1.0, 100.0, 1.0], [1, 1, 1]),  # everyone gets one row while n >= workers
        (2, [1.0, 1.0, 1.0], [1, 1, 0]),
        (100, [3.0, 1.0], [75, 25]),
    ],
)
def test_split_counts(n, weights, expected):
    assert split_counts(n, weights) == expected
    assert sum(split_counts(n, weights)) == n


def test_split_counts_rejects_bad_weights():
    with pytest.raises(ValueError, match="positive"):
        split_counts(5, [1.0, 0.0])


def test_one_process_objective_wrapper_equals_the_objective():
    from lstmlab.data import Batch
    from lstmlab.nn.sequence_model import SequenceModel
    from lstmlab.objective import Objective

    model = SequenceModel(2, 3, 2, dtype=torch.float64, seed=0)
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        torch.randn(4, 5, 2, generator=g, dtype=torch.float64),
        torch.randn(4, 5, 2, generator=g, dtype=torch.float64),
        torch.tensor([5, 3, 4, 1]),
    )
    ref = Objective(model, batch)
    dist_obj = DistributedObjective(Objective(model, batch), model)
    f0, g0 = ref.loss_and_grad()
    f1, g1 = dist_obj.loss_and_grad()
    assert f0 == f1 and torch.equal(g0, g1)
    v = torch.ones_like(g0)
    assert torch.equal(ref.gauss_newton_product(v), dist_obj.gauss_newton_product(v))
    assert dist_obj.counter.n_grad == 1 and dist_obj.counter.n_curv == 1
    # grad (3), the fast GN set-up (one forward pass: 1), one GN product (4), per sequence
    assert dist_obj.counter.p_d == 3 * 4 + 1 * 4 + 4 * 4


def test_speed_meter_simulates_a_slow_worker():
    fast, slow = SpeedMeter(), SpeedMeter(slowdown=3.0)
    for m in (fast, slow):
        m.run(time.sleep, 0.05)
    assert slow.seconds >= 0.14 and slow.seconds > fast.seconds >= 0.05  # sleeps 2 x its work
    with pytest.raises(ValueError, match="slowdown"):
        SpeedMeter(0.5)


class _Data:
    def __len__(self):
        return 10

    def batch(self, rows):
        return rows


def test_sharded_split_in_one_process_holds_every_row():
    split = ShardedSplit(_Data(), balance="speed")
    b = split.batch(None)
    assert len(b) == 10 and b.counts == (10,) and torch.equal(b.local, torch.arange(10))
    assert split.batch(None) is b  # the full batch is cached
    with pytest.raises(ValueError, match="balance"):
        ShardedSplit(_Data(), balance="fast")


def test_thread_rule():
    assert default_threads(4, cores=16) == 1  # small nets: one thread whatever the cores
    assert default_threads(WIDE, cores=16) == 16
    assert default_threads(WIDE, cores=16, workers=4) == 4
    assert default_threads(WIDE, cores=16, busy=12) == 4  # other jobs hold 12 cores
    assert default_threads(WIDE, cores=2, workers=3) == 1


def test_choose_threads_order(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(5, 4) == (5, "--threads")
    assert choose_threads(None, 4) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert choose_threads(None, 4) == (1, "rule")
    with pytest.raises(ValueError, match="--threads"):
        choose_threads(0, 4)


def test_strip_option():
    argv = ["train", "x", "--workers", "3", "--seed", "1", "--workers=2", "--threads", "4"]
    assert strip_option(argv, "--workers") == ["train", "x", "--seed", "1", "--threads", "4"]


def test_rebalanced_follows_speed_only_when_it_pays():
    from lstmlab.distributed.shards import rebalanced

    # worker 2 is 3x slower: equal shards wait for it; speed shards do not
    new = rebalanced(90, [1.0, 1.0, 1.0], [3.0, 3.0, 1.0])
    assert new == [3.0, 3.0, 1.0] and split_counts(90, new) == [38, 38, 14]
    assert rebalanced(90, [3.0, 3.0, 1.0], [3.0, 3.0, 1.1]) is None  # < 5 % better: keep
    assert rebalanced(90, [1.0, 1.0], [1.0, 1.02]) is None
