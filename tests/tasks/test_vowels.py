"""JapaneseVowels from aeon's .ts files (read as text) and from small written files."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from lstmlab.tasks import DataError, make

HEADER = (
    "# comment\n@problemName Toy\n@dimensions 2\n@equalLength false\n@classLabel true a b\n@data\n"
)


def _write(d, train, test):
    (d / "Toy_TRAIN.ts").write_text(HEADER + train, encoding="utf-8")
    (d / "Toy_TEST.ts").write_text(HEADER + test, encoding="utf-8")


def test_real_japanese_vowels():
    try:  # the files are read without importing aeon
        importlib.metadata.version("aeon")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("aeon is not installed")
    task = make("japanese_vowels", standardize=False)
    assert (len(task.train), len(task.test)) == (270, 370)
    assert task.input_size == 12 and task.output_size == 9 and task.read == "last"
    L = torch.cat([task.train.lengths, task.test.lengths])
    assert L.min() == 7 and L.max() == 29
    assert torch.all(torch.bincount(task.train.targets) == 30)  # 30 utterances per speaker
    assert "aeon" in task.info["source"]
    import sys

    assert "aeon" not in sys.modules


def test_standardize_and_valid_split(tmp_path):
    _write(tmp_path, "1,2,3:4,5,6:a\n7,8:9,10:b\n0,0,0,0:1,1,1,1:a\n", "1,2:3,4:b\n")
    task = make("japanese_vowels", path=tmp_path)
    x = task.train.batch().inputs[task.train.batch().mask()]
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=1e-6)
    assert task.train.lengths.tolist() == [3, 2, 4] and task.test.targets.tolist() == [1]
    t2 = make("japanese_vowels", path=tmp_path, n_valid=1)
    assert len(t2.train) == 2 and len(t2.valid) == 1
    acc = task.evaluate(torch.tensor([[0.2, 0.8]]), task.test)
    assert acc["accuracy"] == 1.0


@pytest.mark.parametrize(
    "train,match",
    [
        ("1,nan:2,3:a\n", "NaN"),
        ("1,2:3,4:c\n", "label 'c' not among declared"),
        ("1,2:a\n", "has 1 dimensions, header says 2"),
        ("1,x:2,3:a\n", "not a number"),
        ("", "no cases after @data"),
    ],
    ids=["nan", "label", "dims", "text", "no-cases"],
)
def test_bad_ts_files(tmp_path, train, match):
    _write(tmp_path, train, "1,2:3,4:b\n")
    with pytest.raises(DataError, match=match) as e:
        make("japanese_vowels", path=tmp_path)
    assert "Toy_TRAIN.ts" in str(e.value)


def test_missing_ts(tmp_path):
    with pytest.raises(DataError, match="TRAIN.ts"):
        make("japanese_vowels", path=tmp_path)
