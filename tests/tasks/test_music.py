"""Polyphonic music: JSB-style pickle/JSON files, piano rolls, NLL per step, bad files,
and music21's chorales."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from lstmlab.tasks import DataError, make

SONGS = {
    "train": [[[60, 64, 67], [62.0, 65], [], [21, 108]], [[48], [50]]],
    "valid": [[[60], [61], [62]]],
    "test": [[[72, 76], [74]]],
}


@pytest.fixture(params=["pickle", "json"])
def jsb_file(request, tmp_path):
    if request.param == "pickle":
        f = tmp_path / "songs.pickle"
        f.write_bytes(pickle.dumps(SONGS, protocol=2))
    else:
        f = tmp_path / "songs.json"
        f.write_text(json.dumps(SONGS), encoding="utf-8")
    return f


def test_rolls_and_next_step_targets(jsb_file):
    task = make("music", path=jsb_file)
    assert task.model_kwargs() == {
        "input_size": 88,
        "output_size": 88,
        "output": "bernoulli",
        "read": "every",
    }
    s = task.train
    assert s.lengths.tolist() == [3, 1]
    b = s.batch()
    x, y = b.inputs, b.targets
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert torch.nonzero(x[0, 0]).flatten().tolist() == [60 - 21, 64 - 21, 67 - 21]
    assert torch.equal(x[0, 1:3], y[0, 0:2])  # targets are the next step
    assert torch.nonzero(y[0, 2]).flatten().tolist() == [0, 87]  # MIDI 21 and 108
    assert y[0, 1].sum() == 0  # a rest


def test_nll_per_step(jsb_file):
    task = make("music", path=jsb_file)
    s = task.train
    half = torch.full((2, s.max_length, 88), 0.5)
    m = task.evaluate(half, s)
    assert m["nll_per_step"] == pytest.approx(88 * math.log(2))
    assert m["steps"] == 4
    perfect = s.batch().targets
    assert task.evaluate(perfect, s)["nll_per_step"] < 1e-6
    assert task.evaluate(perfect, s)["frame_accuracy"] == 1.0


@pytest.mark.parametrize(
    "data,match",
    [
        ({"train": [[[60], [61]]], "test": [[[60], [61]]]}, "no 'valid' split"),
        ({**SONGS, "valid": []}, "split 'valid' has no sequences"),
        ({**SONGS, "test": [[]]}, "test sequence 0: empty sequence"),
        ({**SONGS, "test": [[[60]]]}, "only 1 step"),
        ({**SONGS, "train": [[[60], [20]]]}, "train sequence 0, step 1: pitch 20.0 is outside"),
        ({**SONGS, "train": [[[60], [109]]]}, "outside the piano range"),
        ({**SONGS, "train": [[[60], [60.5]]]}, "outside the piano range"),
        ([1, 2, 3], "expected a dict"),
    ],
    ids=["no-split", "no-sequences", "empty-seq", "one-step", "low", "high", "fraction", "list"],
)
def test_bad_music_files(tmp_path, data, match):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match=match) as e:
        make("music", path=f)
    assert str(f) in str(e.value)


def test_unreadable_music_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        make("music", path=tmp_path / "none.pickle")
    f = tmp_path / "empty.pickle"
    f.write_bytes(b"")
    with pytest.raises(DataError, match="file is empty"):
        make("music", path=f)
    f = tmp_path / "junk.pickle"
    f.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="cannot be read as pickle"):
        make("music", path=f)
    f = tmp_path / "latin.json"
    f.write_bytes(b'{"train": "\xe9"}')
    with pytest.raises(DataError, match="not valid UTF-8"):
        make("music", path=f)


def test_music21_chorales_few():
    pytest.importorskip("music21")
    task = make("music", max_pieces=6)
    assert sum(task.info["pieces"].values()) == 6
    x = task.train.batch().inputs
    voices = x.sum(-1)[task.train.batch().mask()]
    assert voices.max() <= 8 and voices.float().mean() > 3  # four-part chorales
    assert make("music", max_pieces=6).train.features.equal(task.train.features)  # cached


@pytest.mark.slow
def test_music21_chorales_full():
    pytest.importorskip("music21")
    task = make("music")
    n = task.info["pieces"]
    assert sum(n.values()) >= 350 and n["train"] > n["valid"] > 0
    lo = np.nonzero(task.train.features.numpy().any((0, 1)))[0]
    assert lo.min() >= 0 and lo.max() <= 87
