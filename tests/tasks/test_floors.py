"""The trivial predictors behind the floors of docs/tasks.md."""

from __future__ import annotations

import math

import pytest

from lstmlab.tasks import make
from lstmlab.tasks.floors import floor


@pytest.mark.parametrize(
    "name,kw,key,value,tol",
    [
        # xor's operand bits are independent (as released): chance only up to sampling noise
        ("xor", {"T": 40}, "frac_wrong", 0.5, 0.06),
        ("temporal_order", {"T": 40}, "accuracy", 0.25, 1e-9),
        ("temporal_order_3bit", {"T": 40}, "accuracy", 0.125, 1e-9),
    ],
)
def test_balanced_tasks_score_chance(name, kw, key, value, tol):
    task = make(name, n_train=800, n_test=800, **kw)
    m = floor(task)
    assert m[key] == pytest.approx(value, abs=tol) and not task.solved(m)


def test_real_valued_floor_is_far_from_solved():
    task = make("adding", convention="1997", T=30, n_train=2000, n_test=2000)
    m = floor(task)
    assert 0.1 < m["mae"] < 0.25 and m["frac_wrong"] > 0.8 and not task.solved(m)


def test_memorization_unigram_nll():
    task = make("memorization_5of2", T=30, n_train=500, n_test=500)
    m = floor(task)
    assert m["frac_wrong"] == 1.0
    # unigram: blank with 25/30, each symbol 2.5/30
    p = {"blank": 25 / 30, "sym": 2.5 / 30}
    expected = -(25 / 30 * math.log(p["blank"]) + 5 / 30 * math.log(p["sym"]))
    assert m["nll_per_step"] == pytest.approx(expected, rel=0.02)


def test_ctc_floor():
    task = make("ctc", n_train=50, n_test=50)
    assert floor(task)["label_error_rate"] == 1.0
