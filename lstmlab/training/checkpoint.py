"""Checkpoints: atomic, one file, and unable to execute code when loaded.

Format: one safetensors file. Every tensor of the state (model parameters, optimizer history,
RNG states) is stored as a safetensors tensor under a generated key; everything else (counters,
hyperparameters, nesting) is one JSON document in the safetensors header metadata, in which a
tensor appears as ``{"__tensor__": key}``. Loading reads JSON and raw tensor bytes only — unlike
``pickle``/``torch.load`` there is nothing to execute — and restores the exact nested structure
(dicts with non-string keys, tuples, ints, floats including inf/nan, None, strings, tensors with
their dtype, on CPU).

Atomicity (a kill at any moment leaves the last good checkpoint readable): the bytes go to a
temporary file in the same directory, are fsynced, the previous checkpoint is renamed to
``<name>.prev`` and the temporary file is renamed over ``<name>`` (``os.replace`` is atomic on
POSIX); the directory is fsynced. ``load_latest`` falls back to ``.prev`` when the newest file
is missing or unreadable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_latest", "FORMAT"]

FORMAT = "lstmlab-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or not lstmlab's; one-line message."""


# --------------------------------------------------------------------------------------------
# Nested state <-> (JSON tree, flat tensor dict)


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # safetensors wants contiguous CPU tensors that share no memory
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _flatten(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return {"__float__": repr(obj)}
        return obj
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__items__"]}
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"])
    return {k: _unflatten(v, tensors) for k, v in obj.items()}


# --------------------------------------------------------------------------------------------
# Writing and reading


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def encode(state: dict[str, Any]) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors)
    meta = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(tree)}
    return st_save(tensors, metadata=meta)


def save_checkpoint(state: dict[str, Any], path: str | Path, *, write=None) -> None:
    """Write ``state`` atomically to ``path`` and keep the previous file as ``path.prev``.

    ``write(fh, data)`` may be given to replace the raw write (tests use it to fake a full disk).
    """
    path = Path(path)
    data = encode(state)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            (write or _write)(fh, data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write(fh, data: bytes) -> None:
    fh.write(data)


def decode(data: bytes, source: str = "checkpoint") -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"{source}: truncated ({len(data)} bytes), not a checkpoint")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise CheckpointError(f"{source}: not a safetensors file, or truncated")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{source}: corrupt header (not a safetensors file?)") from None
    meta = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not an lstmlab checkpoint (a foreign safetensors file?)")
    if int(meta.get("version", -1)) > VERSION:
        raise CheckpointError(
            f"{source}: written by a newer lstmlab (format version {meta['version']} > {VERSION})"
        )
    try:
        tensors = st_load(data)
        tree = json.loads(meta["state"])
    except (SafetensorError, ValueError, KeyError) as err:
        raise CheckpointError(f"{source}: corrupt or truncated ({err})") from None
    return _unflatten(tree, tensors)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint file; any problem is a ``CheckpointError`` with a one-line reason."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    return decode(data, str(path))


def load_latest(path: str | Path) -> tuple[dict[str, Any], CheckpointError | None]:
    """The newest readable of ``path`` and ``path.prev``.

    Returns ``(state, skipped)`` where ``skipped`` is the newest file's error when the
    previous checkpoint had to be used (the caller warns); raises that error when neither reads.
    """
    path = Path(path)
    first_error: CheckpointError | None = None
    for candidate in (path, path.with_name(path.name + ".prev")):
        try:
            return load_checkpoint(candidate), first_error
        except CheckpointError as err:
            first_error = first_error or err
    assert first_error is not None
    raise first_error
