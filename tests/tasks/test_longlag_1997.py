"""The 1997 convention (H&S 1997 Exp. 4-5) checked exactly and statistically."""

from __future__ import annotations

import numpy as np
import pytest

from lstmlab.tasks import make

N = 20_000


def draw(problem: str, T: int, seed: int = 0):
    task = make(problem, convention="1997", T=T, n_train=N, n_test=10, seed=seed)
    s = task.train
    x = s.inputs.double().numpy()
    return task, x[..., 0], x[..., 1], s.targets.double().numpy()[:, 0], s.lengths.numpy()


@pytest.fixture(
    scope="module",
    params=[("adding", 100), ("multiplication", 100), ("adding", 40)],
    ids=lambda p: f"{p[0]}-T{p[1]}",
)
def data(request):
    problem, T = request.param
    return (problem, T, *draw(problem, T))


def test_lengths_uniform_on_closed_range(data):
    problem, T, task, v, m, y, L = data
    assert L.min() == T and L.max() == T + T // 10
    counts = np.bincount(L - T)
    expected = N / (T // 10 + 1)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_padding_is_zero(data):
    problem, T, task, v, m, y, L = data
    pad = np.arange(v.shape[1])[None, :] >= L[:, None]
    assert not v[pad].any() and not m[pad].any()


def test_markers_exact(data):
    problem, T, task, v, m, y, L = data
    rows = np.arange(N)
    assert set(np.unique(m)) <= {-1.0, 0.0, 1.0}
    assert np.all((m == 1).sum(1) == 2)
    pos = np.sort(np.argwhere(m == 1)[:, 1].reshape(N, 2), axis=1)
    assert np.all(pos[:, 0] < 10)  # X1 is one of the first 10 pairs (the earlier one is)
    assert np.all(pos[:, 1] <= T // 2 - 1)  # X2 among the first T/2 - 1 unmarked pairs
    assert pos[:, 1].max() == T // 2 - 1
    assert np.all(m[rows, L - 1] == -1)  # last pair
    first_marked = m[:, 0] == 1
    assert np.all(m[~first_marked, 0] == -1)  # first pair, unless marked
    assert np.all((m == -1).sum(1) == 2 - first_marked)  # no other -1


def test_marked_positions_distribution(data):
    """P(k marked) = 1/10 + 9/10 * 1/(T/2-1) for k < 10, 1/(T/2-1) for 10 <= k < T/2."""
    problem, T, task, v, m, y, L = data
    freq = (m == 1).sum(0)[: T // 2 + 2] / N
    c = T // 2 - 1
    p = np.zeros_like(freq)
    p[:10] = 0.1 + 0.9 / c
    p[10 : T // 2] = 1 / c
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / N) + 1e-12)


def test_first_pair_rule(data):
    problem, T, task, v, m, y, L = data
    first_marked = m[:, 0] == 1
    expected = 0.1 + 0.9 / (T // 2 - 1)
    assert abs(first_marked.mean() - expected) < 5 * np.sqrt(expected / N)
    assert np.all(v[first_marked, 0] == (0.0 if problem == "adding" else 1.0))


def test_values_and_targets(data):
    problem, T, task, v, m, y, L = data
    valid = (np.arange(v.shape[1])[None, :] < L[:, None]) & (m != 1)
    free = v[valid]
    if problem == "adding":
        assert free.min() >= -1 and free.max() < 1
        assert abs(free.mean()) < 0.01 and abs(free.var() - 1 / 3) < 0.01
        expected = 0.5 + (v * (m == 1)).sum(1) / 4
    else:
        assert free.min() >= 0 and free.max() < 1
        assert abs(free.mean() - 0.5) < 0.01 and abs(free.var() - 1 / 12) < 0.005
        expected = np.where(m == 1, v, 1.0).prod(1)
    np.testing.assert_allclose(y, expected, atol=1e-6)
    assert y.min() >= 0 and y.max() <= 1


def test_model_facts_and_criterion():
    task = make("multiplication", convention="1997", T=20, n_train=10, n_test=50)
    assert task.model_kwargs() == {
        "input_size": 2,
        "output_size": 1,
        "output": "sigmoid",
        "read": "last",
    }
    t = task.test.targets
    perfect = task.evaluate(t, task.test)
    assert perfect["mae"] == 0 and perfect["n_wrong"] == 0 and task.solved(perfect)
    off = t.clone()
    off[0] += 0.05  # one sequence wrong: mean error tiny, but the 1997 rule wants none wrong
    m = task.evaluate(off, task.test)
    assert m["n_wrong"] == 1 and m["mae"] < 0.01 and not task.solved(m)
    assert make(
        "multiplication", convention="1997", T=20, n_train=10, n_test=50, max_wrong=1
    ).solved(m)


def test_seed000_preset():
    task = make("seed000")
    assert (len(task.train), len(task.test)) == (10_000, 3_000)
    assert task.info["convention"] == "1997" and task.info["T"] == 100
    assert task.output == "sigmoid" and task.info["rule"] == "seed000"
    t = task.test.targets
    off = t + 0.009  # every sequence within 0.04 but MAE 0.009 < 0.01: seed 000's criterion
    assert task.solved(task.evaluate(off, task.test))
    assert not task.solved(task.evaluate(t + 0.011, task.test))
