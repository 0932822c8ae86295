"""The process group: start, query and stop it; helpers that are no-ops in one process.

Built on ``torch.distributed`` (gloo on CPU, NCCL for CUDA tensors) and started from the
environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``). Without those variables, or with ``WORLD_SIZE=1``, nothing
is started and every helper answers as for one process: ``get_rank() == 0``,
``get_world_size() == 1``, ``all_reduce_sum(t)`` returns ``t``.

Every collective has a deadline (``LSTMLAB_DIST_TIMEOUT`` seconds, default 1800): a worker that
stops answering ends its peers' wait with ``DistributedError`` instead of a hang. A rendezvous
that cannot be reached within the same deadline is one too.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistributedError",
    "init_from_env",
    "shutdown",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "get_local_world_size",
    "is_main",
    "timeout_seconds",
    "all_reduce_sum",
    "all_gather_floats",
    "broadcast_object",
    "gather_objects",
    "barrier",
    "settle",
    "check_same",
    "fingerprint",
]

DEFAULT_TIMEOUT = 1800.0


class DistributedError(RuntimeError):
    """A failure of the worker group (rendezvous, timeout, mismatch); ``str(err)`` is one line."""


def timeout_seconds() -> float:
    """The deadline of the rendezvous and of every collective (``LSTMLAB_DIST_TIMEOUT``)."""
    raw = os.environ.get("LSTMLAB_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise DistributedError(
            f"LSTMLAB_DIST_TIMEOUT must be a number of seconds, got {raw!r}"
        ) from None
    if not value > 0:
        raise DistributedError(f"LSTMLAB_DIST_TIMEOUT must be > 0, got {raw!r}")
    return value


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(
            f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}"
        ) from None


def init_from_env() -> bool:
    """Join the worker group torchrun describes; True when a group of > 1 process is up.

    CUDA present: the group carries CPU tensors on gloo and CUDA tensors on NCCL, and this
    process takes ``cuda:LOCAL_RANK`` as its current device.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if _env_world() <= 1:
        return False
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run one process")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise DistributedError(f"WORLD_SIZE > 1 but {key} is not set (launch with torchrun)")
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    timeout = timeout_seconds()
    try:
        # the store of torchrun's agent outlives a restart: a prefix per round keeps a
        # restarted group from reading the dead round's addresses (gloo would hang on them)
        store, rank, world = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout)))
        round_ = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"lstmlab/round{round_}", store)
        dist.init_process_group(
            backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout)
        )
    except (RuntimeError, ValueError, OSError) as err:  # DistNetworkError, DistStoreError, ...
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(
            f"rank {os.environ['RANK']}: cannot join the worker group at {where} within "
            f"{timeout:g} s ({first[:160]})"
        ) from None
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def env_rank() -> int:
    """The rank torchrun gave this process (0 outside torchrun), before the group is joined."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_world_size() -> int:
    """Workers of this run on this machine (torchrun's LOCAL_WORLD_SIZE; 1 alone)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main() -> bool:
    return get_rank() == 0


def _guard(what: str, fn, *args, **kwargs):
    """Run a collective; a timeout or a lost peer becomes a one-line ``DistributedError``."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, OSError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(
            f"rank {get_rank()}: {what} failed: a worker stopped answering or the "
            f"{timeout_seconds():g} s deadline passed ({text[:160]})"
        ) from None


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all workers, in place; identical bits on every rank."""
    if is_distributed():
        _guard("all-reduce", dist.all_reduce, t, op=dist.ReduceOp.SUM)
    return t


def all_gather_floats(values: list[float]) -> torch.Tensor:
    """(world, len(values)) float64: every worker's ``values``, in rank order."""
    local = torch.tensor(values, dtype=torch.float64).reshape(1, -1)
    if not is_distributed():
        return local
    out = torch.zeros(get_world_size(), local.shape[1], dtype=torch.float64)
    out[get_rank()] = local[0]
    return all_reduce_sum(out)  # one non-zero term per entry: exact


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; for small control data and states)."""
    if not is_distributed():
        return obj
    box = [obj if get_rank() == src else None]
    _guard("broadcast", dist.broadcast_object_list, box, src=src)
    return box[0]


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank ``dst``; None elsewhere."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size() if get_rank() == dst else None
    _guard("gather", dist.gather_object, obj, out, dst=dst)
    return out


def barrier() -> None:
    if is_distributed():
        _guard("barrier", dist.barrier)


def settle(seconds: float = 5.0) -> None:
    """Best effort: wait (at most ``seconds``) until every rank got here — so that each has
    printed its error before the first to exit makes torchrun stop the others."""
    if not is_distributed():
        return
    try:
        dist.barrier(async_op=True).wait(timeout=timedelta(seconds=seconds))
    except (RuntimeError, OSError):
        pass


def fingerprint(obj: Any) -> str:
    """A short hash of a JSON-able (or at least picklable) object."""
    try:
        data = json.dumps(obj, sort_keys=True, default=repr).encode()
    except TypeError:
        data = pickle.dumps(obj)
    return hashlib.sha256(data).hexdigest()[:16]


def check_same(obj: Any, what: str) -> None:
    """Raise ``DistributedError`` on every rank unless all ranks hold the same ``obj``."""
    if not is_distributed():
        return
    mine = fingerprint(obj)
    all_fp = [None] * get_world_size()
    _guard("all-gather", dist.all_gather_object, all_fp, mine)
    odd = [r for r, fp in enumerate(all_fp) if fp != all_fp[0]]
    if odd:
        raise DistributedError(
            f"{what} differs between ranks: rank {odd[0]} does not match rank 0 "
            "(launch every worker with the same command and files)"
        )
