"""The user cache: location, atomic writes, and damaged entries rebuilt rather than trusted."""

from __future__ import annotations

import numpy as np
import pytest

from lstmlab.tasks.cache import CacheWarning, cache_dir, cached_arrays, entry_path


def test_location(monkeypatch, tmp_path):
    monkeypatch.setenv("LSTMLAB_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LSTMLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "lstmlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache_dir() == tmp_path / "h" / ".cache" / "lstmlab"


@pytest.fixture
def store(monkeypatch, tmp_path):
    monkeypatch.setenv("LSTMLAB_CACHE_DIR", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(1000, dtype=np.int64), "b": np.ones((3, 4), np.uint8)}

    return calls, build, {"source": "test", "version": "1"}


def test_built_once_then_read(store, tmp_path):
    calls, build, key = store
    first = cached_arrays("t", key, build)
    second = cached_arrays("t", key, build)
    assert len(calls) == 1 and np.array_equal(first["a"], second["a"])
    assert [p.name for p in tmp_path.iterdir()] == [entry_path("t", key).name]  # no temp left
    cached_arrays("t", {**key, "version": "2"}, build)  # another source version: rebuilt
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "tamper"])
def test_damaged_entry_is_rebuilt(store, damage):
    calls, build, key = store
    cached_arrays("t", key, build)
    path = entry_path("t", key)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * len(raw))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # valid npz, wrong contents: only the checksum can tell
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["a"] = arrays["a"] + 1
        np.savez(path, **arrays)
    with pytest.warns(CacheWarning, match="damaged"):
        again = cached_arrays("t", key, build)
    assert len(calls) == 2 and np.array_equal(again["a"], np.arange(1000))
    assert len(cached_arrays("t", key, build)["a"]) == 1000 and len(calls) == 2  # repaired


def test_no_cache(store, tmp_path):
    calls, build, key = store
    cached_arrays("t", key, build, use_cache=False)
    assert not any(tmp_path.iterdir())
