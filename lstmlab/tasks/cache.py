"""A user cache for parsed corpora (parsing music21's chorales takes most of a minute).

Location: ``$LSTMLAB_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/lstmlab``, else
``~/.cache/lstmlab``. An entry is one ``.npz`` file of named arrays, named after a hash of its
key (source, source version, options, format version). Writes are atomic: a temporary file in
the same directory is written, flushed to disk and ``os.replace``-d into place, so a reader
sees the old entry or the new one, never half of one. Each entry stores the SHA-256 of its
arrays and its key; an entry that cannot be read, whose checksum or key does not match, is
rebuilt (with a ``CacheWarning``), never trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["cache_dir", "cached_arrays", "CacheWarning", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META = "__lstmlab_meta__"


class CacheWarning(UserWarning):
    """A cache entry was damaged or stale and has been rebuilt."""


def cache_dir() -> Path:
    """The cache directory (not created here)."""
    env = os.environ.get("LSTMLAB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lstmlab"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _key_json(key: dict) -> str:
    return json.dumps({"format": FORMAT_VERSION, **key}, sort_keys=True, default=str)


def entry_path(name: str, key: dict) -> Path:
    """Where the entry for ``key`` lives."""
    h = hashlib.sha256(_key_json(key).encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{h}.npz"


def _load(path: Path, key_json: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop(_META)))
    if meta.get("key") != key_json:
        raise ValueError("key mismatch")
    if meta.get("sha256") != _digest(arrays):
        raise ValueError("checksum mismatch")
    return arrays


def _save(path: Path, arrays: dict[str, np.ndarray], key_json: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"key": key_json, "sha256": _digest(arrays)})
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_META: np.array(meta)})
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_arrays(
    name: str, key: dict, build: Callable[[], dict[str, np.ndarray]], *, use_cache: bool = True
) -> dict[str, np.ndarray]:
    """The arrays for ``key``: from the cache if a sound entry exists, else ``build()`` (then
    stored). ``use_cache=False`` builds without reading or writing the cache. A cache that
    cannot be written (read-only home, full disk) is skipped with a warning."""
    if not use_cache:
        return build()
    path = entry_path(name, key)
    key_json = _key_json(key)
    if path.exists():
        try:
            return _load(path, key_json)
        except Exception as exc:  # any damage at all: rebuild
            warnings.warn(
                f"cache entry {path} is damaged ({type(exc).__name__}: {exc}); rebuilding it",
                CacheWarning,
                stacklevel=2,
            )
    arrays = build()
    try:
        _save(path, arrays, key_json)
    except OSError as exc:
        warnings.warn(f"could not write cache entry {path}: {exc}", CacheWarning, stacklevel=2)
    return arrays
