"""Checkpoints: atomic, one file, and unable to execute code when loaded.

Format: one safetensors file. Every tensor of the state (model parameters, optimizer history,
RNG states) is stored as a safetensors tensor under a generated key; everything else (counters,
hyperparameters, nesting) is one JSON document in the safetensors header metadata, in which a
tensor appears as ``{"__tensor__": key}``. Loading reads JSON and raw tensor bytes only — unlike
``pickle``/``torch.load`` there is nothing to execute — and restores the exact nested structure
(dicts with non-string keys, tuples, ints, floats including inf/nan, None, strings, tensors with
their dtype, on CPU).

Verified (format 2): the header also holds ``sha256``, a digest of the state document, of
``config_sha256`` and of every tensor's name, dtype, shape and bytes, and ``config_sha256``, the digest the caller gives
of the config the state belongs to (``config_digest``). ``load_checkpoint`` recomputes the
first and refuses a file whose digest differs (one flipped byte anywhere is caught: in the
tensor bytes by the digest, in the header by the digest or by the JSON/safetensors parser);
``load_latest(path, config_digest=...)`` also refuses a checkpoint of another config. Both
refusals are ``CheckpointError``s, so ``load_latest`` falls back to ``.prev`` exactly as for a
truncated file. A file without a digest (format 1, or one whose ``sha256`` was removed) is
refused as a ``CheckpointError`` too, unless the caller passes ``allow_unverified=True``
(``--allow-unverified``); then it loads, and the state carries ``UNVERIFIED`` (the reason) so
the caller warns.

Finite (``finite=("model",)``): ``save_checkpoint`` refuses, before writing a byte, a state
whose tensors under those keys are not all finite (``NonFiniteError``), so a diverged run can
never replace its last good checkpoint; ``load_checkpoint`` refuses such a file the same way
(a NaN written by hand with a recomputed digest still falls back to ``.prev``).

Atomicity (a kill at any moment leaves the last good checkpoint readable): the bytes go to a
temporary file in the same directory, are fsynced, the previous checkpoint is renamed to
``<name>.prev`` and the temporary file is renamed over ``<name>`` (``os.replace`` is atomic on
POSIX); the directory is fsynced. ``load_latest`` falls back to ``.prev`` when the newest file
is missing or unreadable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lstmlab.files import LIMITS, UnreadableFile, read_user_file

__all__ = [
    "CheckpointError",
    "NonFiniteError",
    "save_checkpoint",
    "load_checkpoint",
    "load_latest",
    "config_digest",
    "non_finite",
    "FORMAT",
]

FORMAT = "lstmlab-checkpoint"
VERSION = 2
UNVERIFIED = "_unverified"  # key of a state loaded without its checksum: why (for the warning)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or not lstmlab's; one-line message."""


class NonFiniteError(CheckpointError):
    """A state holding NaN/Inf where finite values are required (never written, never loaded)."""


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


def _digest(document: str, tensors: dict[str, torch.Tensor], config_sha: str = "") -> str:
    """SHA-256 of the state document, the config digest and every tensor's name, dtype, shape
    and bytes."""
    h = hashlib.sha256(document.encode("utf-8"))
    h.update(f"\0config\0{config_sha}".encode())
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def config_digest(config: Any) -> str:
    """SHA-256 of a JSON-able config (canonical: sorted keys, standard JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _tensors_under(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors_under(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors_under(v)


def non_finite(state: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first ``key/name`` under ``keys`` whose floating tensor holds NaN/Inf, or None."""
    for key in keys:
        sub = state.get(key)
        items = sub.items() if isinstance(sub, dict) else [(key, sub)]
        for name, value in items:
            for t in _tensors_under(value):
                if t.is_floating_point() or t.is_complex():
                    t = t.detach()
                    if not (bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())):
                        return f"{key}/{name}"
    return None


def encode(state: dict[str, Any], *, config_digest: str | None = None) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors)
    document = json.dumps(tree)
    meta = {
        "format": FORMAT,
        "version": str(VERSION),
        "state": document,
        "sha256": _digest(document, tensors, config_digest or ""),
    }
    if config_digest is not None:
        meta["config_sha256"] = config_digest
    return st_save(tensors, metadata=meta)


def save_checkpoint(
    state: dict[str, Any],
    path: str | Path,
    *,
    write=None,
    config_digest: str | None = None,
    finite: tuple[str, ...] = (),
    keep_prev: bool = True,
) -> None:
    """Write ``state`` atomically to ``path`` and keep the previous file as ``path.prev``.

    ``finite``: keys of ``state`` whose tensors must be finite; otherwise ``NonFiniteError``
    and nothing is written. ``config_digest`` is stored for ``load_latest`` to check.
    ``write(fh, data)`` may be given to replace the raw write (tests use it to fake a full disk).
    ``keep_prev=False``: the new file replaces the old one (as atomically: a kill leaves the
    one or the other), no ``.prev`` is kept, and one left by an earlier write is removed.
    """
    path = Path(path)
    bad = non_finite(state, finite)
    if bad is not None:
        raise NonFiniteError(f"{path}: not written: {bad} holds NaN or Inf")
    data = encode(state, config_digest=config_digest)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            (write or _write)(fh, data)
            fh.flush()
            os.fsync(fh.fileno())
        prev = path.with_name(path.name + ".prev")
        if keep_prev and path.exists():
            os.replace(path, prev)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not keep_prev:  # the new file is in place: a .prev that will not go is no failure
        with contextlib.suppress(OSError):
            prev.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _write(fh, data: bytes) -> None:
    fh.write(data)


def decode(
    data: bytes,
    source: str = "checkpoint",
    *,
    config_digest: str | None = None,
    finite: tuple[str, ...] = (),
    allow_unverified: bool = False,
) -> dict[str, Any]:
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
    if not isinstance(meta, dict):
        meta = {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not an lstmlab checkpoint (a foreign safetensors file?)")
    try:
        version = int(meta["version"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{source}: corrupt header (no format version)") from None
    if version < 1:
        raise CheckpointError(f"{source}: corrupt header (format version {version})")
    if version > VERSION:
        raise CheckpointError(
            f"{source}: written by a newer lstmlab (format version {meta['version']} > {VERSION})"
        )
    try:
        tensors = st_load(data)
        document = meta["state"]
        tree = json.loads(document)
    except (SafetensorError, ValueError, KeyError, TypeError) as err:
        reason = (str(err).splitlines() or [""])[0]
        raise CheckpointError(f"{source}: corrupt or truncated ({reason})") from None
    unverified = None
    if version < 2 or "sha256" not in meta:
        unverified = f"{source}: carries no checksum (format version {version}" + (
            ", its sha256 removed)" if version >= 2 else ")"
        )
        if not allow_unverified:
            raise CheckpointError(
                f"{unverified}, so it cannot be verified; refused (`--allow-unverified` loads "
                "it anyway, with a warning)"
            )
    if unverified is None:
        stored = meta.get("config_sha256")
        if meta.get("sha256") != _digest(
            document, tensors, stored if isinstance(stored, str) else ""
        ):
            raise CheckpointError(f"{source}: checksum mismatch (the file is damaged)")
        if config_digest is not None and stored is not None and stored != config_digest:
            raise CheckpointError(
                f"{source}: belongs to another config (config checksum mismatch; was "
                "config.toml edited?)"
            )
    try:
        state = _unflatten(tree, tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{source}: corrupt state ({type(err).__name__})") from None
    bad = non_finite(state, finite) if isinstance(state, dict) else None
    if bad is not None:
        raise NonFiniteError(f"{source}: {bad} holds NaN or Inf")
    if unverified is not None and isinstance(state, dict):
        state[UNVERIFIED] = f"{unverified}; loaded not verified (--allow-unverified)"
    return state


def load_checkpoint(
    path: str | Path,
    *,
    config_digest: str | None = None,
    finite: tuple[str, ...] = (),
    allow_unverified: bool = False,
) -> dict[str, Any]:
    """Read and verify one checkpoint file; any problem is a ``CheckpointError`` with a
    one-line reason (``config_digest``/``finite``: see the module docstring)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        data = read_user_file(path, LIMITS["checkpoint"], "checkpoint")
    except UnreadableFile as err:
        raise CheckpointError(str(err)) from None
    return decode(
        data,
        str(path),
        config_digest=config_digest,
        finite=finite,
        allow_unverified=allow_unverified,
    )


def load_latest(
    path: str | Path,
    *,
    config_digest: str | None = None,
    finite: tuple[str, ...] = (),
    allow_unverified: bool = False,
) -> tuple[dict[str, Any], CheckpointError | None]:
    """The newest readable and verified of ``path`` and ``path.prev``.

    Returns ``(state, skipped)`` where ``skipped`` is the newest file's error when the
    previous checkpoint had to be used (the caller warns); raises that error when neither reads.
    """
    path = Path(path)
    first_error: CheckpointError | None = None
    for candidate in (path, path.with_name(path.name + ".prev")):
        try:
            state = load_checkpoint(
                candidate,
                config_digest=config_digest,
                finite=finite,
                allow_unverified=allow_unverified,
            )
            return state, first_error
        except CheckpointError as err:
            first_error = first_error or err
    assert first_error is not None
    raise first_error
