"""Registry, option validation, minibatches and scorer plumbing."""

from __future__ import annotations

import pytest
import torch

from lstmlab.data import Batch
from lstmlab.tasks import make, names


def test_names_and_unknown_name():
    ns = names()
    for n in (
        "adding",
        "multiplication",
        "xor",
        "temporal_order",
        "permutation",
        "memorization",
        "seed000",
        "text",
        "music",
        "japanese_vowels",
        "framewise",
        "ctc",
    ):
        assert n in ns
    with pytest.raises(ValueError, match="valid names: .*adding"):
        make("addition")


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("adding", {}, "convention"),
        ("adding", {"convention": "1999"}, "convention"),
        ("xor", {"convention": "1997"}, "ms2011"),
        ("adding", {"convention": "1997", "T": 10}, "T must be an integer >= 20"),
        ("xor", {"T": 5}, "T must be"),
        ("memorization_10of5", {"T": 20}, "T must be an integer >= 22"),
        ("temporal_order", {"bits": 4}, "bits"),
        ("adding", {"convention": "1997", "n_train": 0}, "n_train"),
        ("adding", {"convention": "ms2011", "output": "sigmoid"}, "reach 2"),
        ("xor", {"output": "linear"}, "output"),
    ],
)
def test_bad_options(name, kw, match):
    with pytest.raises(ValueError, match=match):
        make(name, **kw)


@pytest.fixture(scope="module")
def task():
    return make("adding", convention="ms2011", T=40, n_train=103, n_valid=7, n_test=20)


def test_batches_cover_every_row_once(task):
    seen = []
    for b in task.train.batches(10, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert isinstance(b, Batch) and len(b) <= 10
        assert b.max_length == int(b.lengths.max())  # trimmed to the batch's longest
        seen.append(b.targets[:, 0])
    assert torch.equal(
        torch.sort(torch.cat(seen)).values, torch.sort(task.train.targets[:, 0]).values
    )
    assert len(list(task.train.batches(10, drop_last=True))) == 10


def test_shuffle_is_deterministic_under_a_generator(task):
    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.cat([b.targets for b in task.train.batches(16, shuffle=True, generator=g)])

    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))


def test_bucketing_groups_similar_lengths(task):
    g = torch.Generator().manual_seed(0)
    batches = list(task.train.batches(10, shuffle=True, generator=g, bucket=True))
    spans = [int(b.lengths.max() - b.lengths.min()) for b in batches]
    assert sum(len(b) for b in batches) == 103
    assert max(spans) <= 2  # 103 rows over 4 lengths: at most one boundary inside a batch


def test_whole_split_tensors(task):
    s = task.train
    assert s.inputs.shape == (103, s.max_length, 2) and s.targets.shape == (103, 1)
    assert s.lengths.shape == (103,) and task.valid is not None and len(task.valid) == 7


def test_evaluate_batches_equals_evaluate(task):
    pred = task.test.targets + 0.03 * torch.linspace(-2, 2, 20).unsqueeze(1)
    whole = task.evaluate(pred, task.test)
    parts = [
        (pred[i : i + 6], task.test.batch(torch.arange(i, min(i + 6, 20)))) for i in range(0, 20, 6)
    ]
    assert task.evaluate_batches(parts) == pytest.approx(whole)
    assert task.per_sequence_wrong(pred, task.test.batch()).sum() == whole["n_wrong"]


def test_no_valid_by_default():
    t = make("xor", T=20, n_train=8, n_test=8)
    assert t.valid is None and set(t.splits()) == {"train", "test"}
