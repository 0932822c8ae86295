"""The M&S 2011 convention (Sutskever's released generators) checked exactly and statistically."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from lstmlab.tasks import make
from lstmlab.tasks.longlag_ms2011 import ms_windows
from lstmlab.tasks.metrics import IGNORE

N = 12_000


def pct(p: int, T: int) -> int:
    return (p * T) // 100


@pytest.mark.parametrize("problem", ["adding", "multiplication", "xor"])
@pytest.mark.parametrize("T", [200, 60])
def test_op_problems(problem, T):
    kw = {"convention": "ms2011"} if problem != "xor" else {}
    task = make(problem, T=T, n_train=N, n_test=10, **kw)
    x = task.train.inputs.double().numpy()
    v, m = x[..., 0], x[..., 1]
    y = task.train.targets.double().numpy()[:, 0]
    L = task.train.lengths.numpy()
    rows = np.arange(N)
    lo, hi = (T, pct(110, T)) if problem != "xor" else (pct(50, T), pct(55, T))
    # the answer sits at the read index T_b in [lo, hi): a sequence has T_b + 1 steps
    assert L.min() == lo + 1 and L.max() == hi  # 201..220 at T = 200
    assert ms_windows(problem, T)["read"] == (lo, hi)
    pad = np.arange(v.shape[1])[None, :] >= L[:, None]
    assert not v[pad].any() and not m[pad].any()
    # markers: -1 at 0 and 3 steps before the read step, +1 at A and B, 0 elsewhere
    assert np.all(m[:, 0] == -1) and np.all(m[rows, L - 4] == -1)
    assert np.all((m == -1).sum(1) == 2) and np.all((m == 1).sum(1) == 2)
    pos = np.argwhere(m == 1)[:, 1].reshape(N, 2)
    w = ms_windows(problem, T)
    assert np.all((pos[:, 0] >= w["A"][0]) & (pos[:, 0] < w["A"][1]))
    assert np.all((pos[:, 1] >= w["B"][0]) & (pos[:, 1] < w["B"][1]))
    assert w["A"][0] == max(1, pct(1, T)) and w["A"][1] == pct(10, T)
    for k, p in ((0, "A"), (1, "B")):  # positions uniform over their windows
        counts = np.bincount(pos[:, k] - w[p][0], minlength=w[p][1] - w[p][0])
        e = N / len(counts)
        assert len(counts) == w[p][1] - w[p][0] and np.all(np.abs(counts - e) < 5 * np.sqrt(e))
    a, b = v[rows, pos[:, 0]], v[rows, pos[:, 1]]
    valid = ~pad
    if problem == "xor":
        assert set(np.unique(v[valid])) == {0.0, 1.0}
        np.testing.assert_array_equal(y, np.logical_xor(a, b))
        pairs = np.bincount((2 * a + b).astype(int), minlength=4)
        # operand bits drawn independently, as released: balanced only in expectation
        assert np.all(np.abs(pairs - N / 4) < 5 * np.sqrt(N / 4)) and not np.all(pairs == N // 4)
        assert task.output == "bernoulli"
    else:
        assert v[valid].min() >= 0 and v[valid].max() < 1
        np.testing.assert_allclose(y, a + b if problem == "adding" else a * b, atol=1e-6)
        assert task.output == "linear"


@pytest.mark.parametrize("bits", [2, 3])
def test_temporal_order(bits):
    T = 100
    task = make("temporal_order", bits=bits, T=T, n_train=N, n_test=10)
    s = task.train
    sym, L, cls = s.features.numpy(), s.lengths.numpy(), s.targets.numpy()
    rows = np.arange(N)
    assert task.input_size == 8 and task.output_size == 2**bits and task.read == "last"
    onehot = s.batch(slice(0, 50)).inputs
    assert torch.all(onehot.sum(-1) == (torch.arange(onehot.shape[1]) < s.lengths[:50, None]))
    assert L.min() == T + 1 and L.max() == pct(110, T)  # read index T_b in [T, 1.1T)
    assert np.all(sym[np.arange(sym.shape[1])[None, :] >= L[:, None]] == -1)
    assert np.all(sym[:, 0] == 7) and np.all((sym == 7).sum(1) == 1)  # start symbol B
    # trigger E: one step before the read step (2-bit) or at it (3-bit), as released
    trigger = L - 2 if bits == 2 else L - 1
    assert np.all(sym[rows, trigger] == 6) and np.all((sym == 6).sum(1) == 1)
    if bits == 2:  # the read step shows a random distractor
        last = sym[rows, L - 1]
        assert np.all(last < 4) and np.all(np.abs(np.bincount(last) / N - 0.25) < 0.02)
    rel = np.isin(sym, (4, 5))
    assert np.all(rel.sum(1) == bits)
    pos = np.argwhere(rel)[:, 1].reshape(N, bits)
    w = ms_windows("temporal_order", T, bits)
    for k, key in enumerate("ABC"[:bits]):  # inclusive windows, as released
        assert pos[:, k].min() == w[key][0] and pos[:, k].max() == w[key][1] - 1
    bits_seen = sym[rows[:, None], pos] - 4
    # 2-bit: 2·A + B (earliest most significant); 3-bit: 4·C + 2·B + A (last most significant)
    weights = 2 ** np.arange(bits - 1, -1, -1) if bits == 2 else 2 ** np.arange(bits)
    expected = (bits_seen * weights).sum(1)
    np.testing.assert_array_equal(cls, expected)
    assert np.all(np.bincount(cls) == N // 2**bits)  # balanced classes
    distract = sym[(sym >= 0) & (sym < 4)]
    assert np.all(np.abs(np.bincount(distract) / len(distract) - 0.25) < 0.003)


def test_permutation():
    T, S = 50, 20
    task = make("permutation", T=T, symbols=S, n_train=N, n_test=10)
    s = task.train
    x, y = s.features.numpy(), s.targets.numpy()
    assert np.all(s.lengths.numpy() == T) and task.read == "every" and task.output_size == S
    assert set(np.unique(x[:, 0])) == {0, 1} and (x[:, 0] == 0).sum() == N // 2
    assert x[:, 1:].min() == 2 and x[:, 1:].max() == S - 1
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    np.testing.assert_array_equal(y[:, -1], x[:, 0])
    # wrong is decided at the last step only
    probs = torch.nn.functional.one_hot(torch.from_numpy(y[:100]), S).float()
    b = s.batch(torch.arange(100))
    assert task.evaluate(probs, b)["frac_wrong"] == 0
    probs[:, :-1] = torch.roll(probs[:, :-1], 1, dims=-1)  # every earlier step wrong
    assert task.evaluate(probs, b)["frac_wrong"] == 0
    probs[0, -1] = torch.roll(probs[0, -1], 1, dims=-1)
    assert task.evaluate(probs, b)["frac_wrong"] == pytest.approx(0.01)


@pytest.mark.parametrize("n_sym,alphabet", [(5, 2), (10, 5)], ids=["5of2", "10of5"])
def test_memorization(n_sym, alphabet):
    T = 60
    task = make(f"memorization_{n_sym}of{alphabet}", T=T, n_train=4000, n_test=10)
    s = task.train
    x, y = s.features.numpy(), s.targets.numpy()
    blank, trig = alphabet, alphabet + 1
    assert task.input_size == alphabet + 2 and task.output_size == alphabet + 1
    assert x[:, :n_sym].max() < alphabet and x[:, :n_sym].min() == 0
    assert np.all(x[:, T - n_sym - 1] == trig) and np.all((x == trig).sum(1) == 1)
    rest = np.delete(x, list(range(n_sym)) + [T - n_sym - 1], axis=1)
    assert np.all(rest == blank)
    np.testing.assert_array_equal(y[:, T - n_sym :], x[:, :n_sym])
    assert np.all(y[:, : T - n_sym] == blank)
    freq = np.bincount(x[:, :n_sym].ravel(), minlength=alphabet) / x[:, :n_sym].size
    assert np.all(np.abs(freq - 1 / alphabet) < 0.01)
    ro = make(f"memorization_{n_sym}of{alphabet}", T=T, n_train=50, n_test=10, replay_only=True)
    assert np.all(ro.train.targets.numpy()[:, : T - n_sym] == IGNORE)


def test_success_rule_ms2011():
    task = make("adding", convention="ms2011", T=40, n_train=10, n_test=1000)
    t = task.test.targets
    pred = t.clone()
    pred[:9] += 0.05  # 0.9% wrong
    assert task.solved(task.evaluate(pred, task.test))
    pred[:10] += 0.05
    assert not task.solved(task.evaluate(pred, task.test))


def test_memorization_5of2_shows_every_pattern_once_per_block_of_32():
    T = 30
    task = make("memorization_5of2", T=T, n_train=96, n_test=32)
    for split in (task.train, task.test):
        x = split.features.numpy()[:, :5]
        codes = (x * (2 ** np.arange(4, -1, -1))).sum(1)  # first symbol most significant
        np.testing.assert_array_equal(codes, np.arange(len(x)) % 32)
    # no randomness is left in it (as released): every seed gives the same 32 patterns
    other = make("memorization_5of2", T=T, n_train=96, n_test=32, seed=7)
    assert torch.equal(other.train.features, task.train.features)
    # 10 of 5 has 5^10 patterns: random symbols
    ten = make("memorization_10of5", T=T, n_train=64, n_test=10)
    assert len({tuple(r) for r in ten.train.features.numpy()[:, :10]}) == 64


FINGERPRINT_CASES = {
    "adding": ("adding", {"convention": "ms2011"}),
    "multiplication": ("multiplication", {"convention": "ms2011"}),
    "xor": ("xor", {}),
    "temporal_order": ("temporal_order", {}),
    "temporal_order_3bit": ("temporal_order_3bit", {}),
    "permutation": ("permutation", {"symbols": 20}),
    "memorization_5of2": ("memorization_5of2", {}),
    "memorization_10of5": ("memorization_10of5", {}),
}


def _fingerprint(name: str, kw: dict) -> str:
    task = make(name, T=40, n_train=64, n_test=32, seed=3, **kw)
    h = hashlib.sha256()
    for split in (task.train, task.test):
        for t in (split.features, split.targets, split.lengths):
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("case", FINGERPRINT_CASES)
def test_fingerprints_pinned(case):
    """The released-code conventions (docs/tasks.md, points (a)-(e)) are fixed bit for bit."""
    name, kw = FINGERPRINT_CASES[case]
    assert _fingerprint(name, kw) == FINGERPRINTS[case]


# sha256 (first 16 hex digits) of train and test features, targets, lengths at T = 40, seed 3
FINGERPRINTS = {
    "adding": "c7ddd4cd0d61cc96",
    "multiplication": "90e2a24fbf951b9b",
    "xor": "8527b81921e4e88a",
    "temporal_order": "b75f7592c981abdf",
    "temporal_order_3bit": "0a6a34766c5d7e64",
    "permutation": "07371685ac0617f9",
    "memorization_5of2": "206db49ec9c246df",
    "memorization_10of5": "0d374764625cf0c6",
}
