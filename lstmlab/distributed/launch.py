"""Launching workers: ``lstmlab train … --workers N`` on one machine, and elastic restarts.

``--workers N`` starts torchrun's own launcher in this process (``elastic_launch``, the code
behind ``torchrun --standalone --nproc-per-node N``) on the same command line without
``--workers`` and with an explicit ``--run-dir``, so every worker, and every restart, sees the
same run directory. Each worker is ``python -m lstmlab train …`` with torchrun's environment.

Elastic restart: ``--max-restarts K`` (here, or torchrun's own flag) lets torchrun restart the
whole group when a worker dies. A restarted worker sees ``TORCHELASTIC_RESTART_COUNT > 0``;
``lstmlab train`` then resumes its run directory from the last checkpoint instead of starting
it (``restarted()``), so the finished run equals an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid

__all__ = [
    "strip_option",
    "spawn",
    "restarted",
    "under_torchrun",
    "max_restarts",
    "describe_killed",
]

RESUME_HINT = " (its last checkpoint is intact: `lstmlab resume RUN`)"


def describe_killed(failures: dict) -> str:
    """The workers among torchrun's ``failures`` (rank -> ProcessFailure) that a signal killed
    (negative exit code), as ``worker rank 1 (pid 4242) was killed by SIGKILL``; '' if none."""
    import signal

    said = []
    for rank, f in sorted(failures.items()):
        if f.exitcode is None or f.exitcode >= 0:
            continue
        try:
            name = signal.Signals(-f.exitcode).name
        except ValueError:
            name = f"signal {-f.exitcode}"
        said.append(f"worker rank {rank} (pid {f.pid}) was killed by {name}")
    return "; ".join(said)


def under_torchrun() -> bool:
    """True inside a worker that torchrun (or ``spawn``) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def restarted() -> bool:
    """True in a worker of a group torchrun restarted after a failure."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    except ValueError:
        return False


def max_restarts() -> int:
    try:
        return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    except ValueError:
        return 0


def strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (every occurrence)."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok == name:
            i += 2
            continue
        if tok.startswith(name + "="):
            i += 1
            continue
        out.append(tok)
        i += 1
    return out


def spawn(argv: list[str], workers: int, *, threads: int, restarts: int = 0) -> int:
    """Run ``python -m lstmlab ARGV`` as ``workers`` processes on this machine; exit code.

    ``threads``: OMP_NUM_THREADS of every worker (torchrun would set 1 and warn).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=workers,
        run_id=f"lstmlab-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        rdzv_configs={"rank": 0},
        max_restarts=restarts,
        monitor_interval=0.1,
        start_method="spawn",
    )
    # the workers report their own errors, one line each; the launcher's log would repeat them
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        elastic_launch(config, sys.executable)("-m", "lstmlab", *argv)
    except ChildFailedError as err:
        codes = [f.exitcode for f in err.failures.values()]
        code = next((c for c in codes if c not in (None, 0)), 1)
        killed = describe_killed(err.failures)
        if killed:  # a worker that died of a signal printed nothing: say who and of what
            sys.stderr.write(f"lstmlab: {killed}; the group stopped{RESUME_HINT}\n")
            sys.stderr.flush()
        return code if code > 0 else 1  # killed by a signal: a runtime failure
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
    return 0
