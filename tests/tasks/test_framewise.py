"""Framewise labelling and CTC: the .npz format, its validation, scoring, the synthetic set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmlab.tasks import DataError, make
from lstmlab.tasks.framewise import save_npz


def _arrays(n=4, T=6, I=3, ctc=False):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, T, I)).astype(np.float32)
    L = np.array([6, 5, 3, 6][:n])
    if ctc:
        y = np.array([[0, 1, 2], [2, 2, 0], [1, 0, 0], [0, 0, 0]][:n])
        return x, L, y, np.array([3, 2, 1, 1][:n])
    return x, L, rng.integers(0, 3, size=(n, T)), None


def _write_dir(d, ctc=False, **change):
    for s in ("train", "valid", "test"):
        x, L, y, m = _arrays(ctc=ctc)
        a = {"inputs": x, "lengths": L, "labels": y, "label_lengths": m}
        if s == "train":
            a.update(change)
        save_npz(d / f"{s}.npz", **a)


def test_framewise_npz_round_trip(tmp_path):
    _write_dir(tmp_path)
    task = make("framewise", path=tmp_path)
    x, L, y, _ = _arrays()
    assert task.bidirectional and task.read == "every" and task.output == "softmax"
    assert task.output_size == 3 and task.input_size == 3
    b = task.train.batch()
    assert torch.allclose(b.inputs, torch.from_numpy(x)) and b.lengths.tolist() == L.tolist()
    perfect = torch.nn.functional.one_hot(b.targets, 3).float()
    m = task.evaluate(perfect, task.train)
    assert m["frame_error"] == 0 and m["frames"] == L.sum()


def test_single_prefixed_file(tmp_path):
    x, L, y, _ = _arrays()
    np.savez(
        tmp_path / "all.npz",
        train_inputs=x,
        train_lengths=L,
        train_labels=y,
        test_inputs=x,
        test_lengths=L,
        test_labels=y,
    )
    task = make("framewise", path=tmp_path / "all.npz", num_classes=4)
    assert task.valid is None and task.output_size == 4


def test_ctc_targets_shifted_and_scored(tmp_path):
    _write_dir(tmp_path, ctc=True)
    task = make("ctc", path=tmp_path)
    assert task.output == "ctc" and task.output_size == 4  # 3 labels + blank
    b = task.train.batch()
    assert b.target_lengths.tolist() == [3, 2, 1, 1]
    assert b.targets[0].tolist() == [1, 2, 3] and b.targets[1, :2].tolist() == [3, 3]
    # a path that emits each label once, blanks elsewhere, decodes perfectly
    pred = torch.full((4, 6, 4), 0.01)
    pred[..., 0] = 0.97
    rows = zip(b.targets.tolist(), b.target_lengths.tolist(), strict=True)
    for i, (labels, n) in enumerate(rows):
        for j, k in enumerate(labels[:n]):
            pred[i, 2 * j, :] = 0.01
            pred[i, 2 * j, k] = 0.97
    m = task.evaluate(pred, b)
    assert m["label_error_rate"] == 0 and m["seq_error"] == 0 and np.isfinite(m["nll"])
    all_blank = torch.zeros(4, 6, 4)
    all_blank[..., 0] = 1
    assert task.evaluate(all_blank, b)["label_error_rate"] == 1.0


@pytest.mark.parametrize(
    "change,ctc,match",
    [
        ({"inputs": np.full((4, 6, 3), np.nan)}, False, "NaN or infinity"),
        ({"labels": np.full((4, 6), -1)}, False, r"labels must lie in \[0, "),
        ({"lengths": np.array([7, 1, 1, 1])}, False, r"lengths must lie in \[1, 6\]"),
        ({"labels": np.zeros((4, 5), int)}, False, "must be \\(N, T\\)"),
        ({"label_lengths": np.array([0, 1, 1, 1])}, True, "label_lengths"),
        ({"lengths": np.array([2, 5, 3, 6])}, True, "too few for its 3 labels"),
    ],
    ids=["nan", "label-range", "lengths", "label-shape", "label-lengths", "ctc-infeasible"],
)
def test_bad_arrays(tmp_path, change, ctc, match):
    _write_dir(tmp_path, ctc=ctc, **change)
    with pytest.raises(DataError, match=match) as e:
        make("ctc" if ctc else "framewise", path=tmp_path, num_classes=3)
    assert "train.npz" in str(e.value)


def test_labels_out_of_declared_range(tmp_path):
    _write_dir(tmp_path)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 1\]"):
        make("framewise", path=tmp_path, num_classes=2)


def test_missing_and_damaged(tmp_path):
    with pytest.raises(DataError, match="no 'train' split"):
        make("framewise", path=tmp_path)
    (tmp_path / "train.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        make("framewise", path=tmp_path)
    (tmp_path / "train.npz").write_bytes(b"")
    with pytest.raises(DataError, match="file is empty"):
        make("framewise", path=tmp_path)


def test_synthetic_default():
    fw, ctc = make("framewise", n_train=200, n_test=50), make("ctc", n_train=200, n_test=50)
    assert torch.equal(fw.train.features, ctc.train.features)
    b, c = fw.train.batch(), ctc.train.batch()
    # CTC labels are the frame labels with runs merged, shifted by one (blank = 0)
    for i in range(20):
        frames = b.targets[i, : b.lengths[i]].tolist()
        runs = [k for j, k in enumerate(frames) if j == 0 or k != frames[j - 1]]
        assert [k + 1 for k in runs] == c.targets[i, : c.target_lengths[i]].tolist()
    assert 3 <= int(c.target_lengths.min()) and int(c.target_lengths.max()) <= 8
    assert torch.all(b.inputs.abs().sum(-1)[~b.mask()] == 0)


def test_ctc_accepts_log_probabilities():
    task = make("ctc", n_train=20, n_test=20)
    b = task.test.batch()
    probs = torch.softmax(
        torch.randn(
            len(b), b.max_length, task.output_size, generator=torch.Generator().manual_seed(0)
        ),
        -1,
    )
    a, c = task.evaluate(probs, b), task.evaluate(probs.log(), b)
    assert a == pytest.approx(c)
