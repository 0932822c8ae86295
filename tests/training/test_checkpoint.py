from __future__ import annotations

import errno

import pytest
import torch
from safetensors.torch import save_file

from lstmlab.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)


def _state():
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"w": torch.randn(3, 4, dtype=torch.float64, generator=g)},
        "optimizer": {
            "state": {0: {"S": [torch.ones(2), torch.zeros(2)], "n": 3}},
            "hyper": (1.0, float("inf"), None),
            "name": "LBFGS",
        },
        "rng": torch.get_rng_state(),
        "python": (3, tuple(range(5)), None),
        "nan": float("nan"),
    }


def test_round_trip_keeps_structure_and_bits(tmp_path):
    path = tmp_path / "c.safetensors"
    st = _state()
    save_checkpoint(st, path)
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], st["model"]["w"])
    assert back["model"]["w"].dtype == torch.float64
    assert back["optimizer"]["state"][0]["n"] == 3  # int key survives
    assert back["optimizer"]["hyper"] == (1.0, float("inf"), None)
    assert back["python"] == st["python"]
    assert torch.equal(back["rng"], st["rng"])
    assert back["nan"] != back["nan"]


def test_keeps_previous_and_falls_back_when_newest_is_damaged(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint({"i": 1}, path)
    save_checkpoint({"i": 2}, path)
    assert load_latest(path) == ({"i": 2}, None)
    path.write_bytes(path.read_bytes()[:-7])
    state, skipped = load_latest(path)
    assert state == {"i": 1} and "truncated" in str(skipped)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: p.write_bytes(b"\x00" * 3), "truncated"),
        (lambda p: p.write_bytes(b"garbage that is not a checkpoint at all"), "not a safetensors"),
        (lambda p: save_file({"a": torch.ones(2)}, str(p)), "not an lstmlab checkpoint"),
    ],
    ids=["half", "tiny", "garbage", "foreign"],
)
def test_damaged_checkpoints_give_one_line_errors(tmp_path, damage, words):
    path = tmp_path / "c.safetensors"
    save_checkpoint(_state(), path)
    damage(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_failed_write_leaves_last_good_checkpoint(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint({"i": 1}, path)

    def full_disk(fh, data):
        fh.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        save_checkpoint({"i": 2}, path, write=full_disk)
    assert load_checkpoint(path) == {"i": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


def test_code_is_never_executed_on_load(tmp_path):
    # a pickle-based payload would be a foreign file: rejected before anything is run
    path = tmp_path / "c.safetensors"
    torch.save({"x": 1}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
