"""Intra-op threads that fit the work: ``--threads N``, or a default from measurements.

torch's default (one thread per core) is wrong for most of this project's networks: the
products of a small LSTM (a few units, a thousand sequences) last microseconds, and OpenMP
threads that wait for each other at every one of them turn a busy neighbour into a disaster —
a small ``lstmlab train multiplication`` ran 80× slower beside another job with torch's
default than with one thread. The default here:

    threads = 1                                     if the recurrent width H < WIDE
            = max(1, free cores // workers here)    otherwise

with ``free cores`` the cores this process may run on (``sched_getaffinity``) less the
machine's load (the 1-minute load average, rounded), and ``workers
here`` torchrun's ``LOCAL_WORLD_SIZE``. ``WIDE`` and the rule are read off the measurements in
``docs/benchmarks.md`` ("Threads"), where one thread was never slower for the small nets and
more threads helped only from H ≈ 128 on an idle machine. An explicit ``--threads`` wins, then
an ``OMP_NUM_THREADS`` the user set; torchrun's implicit ``OMP_NUM_THREADS=1`` is the same as
our rule with one free core per worker.
"""

from __future__ import annotations

import os

import torch

__all__ = [
    "WIDE",
    "available_cores",
    "busy_cores",
    "default_threads",
    "choose_threads",
    "apply_threads",
]

WIDE = 128  # recurrent width from which more than one thread paid off (benchmarks.md, Threads)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cores() -> int:
    """Cores busy with other jobs: the 1-minute load average, rounded (our own workers have
    only just started when this is read, so they hardly show in it)."""
    try:
        return max(0, round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        return 0


def default_threads(
    hidden: int, *, cores: int | None = None, workers: int = 1, busy: int = 0
) -> int:
    """The rule above as a pure function (tests read it; ``choose_threads`` measures)."""
    if hidden < WIDE:
        return 1
    cores = available_cores() if cores is None else cores
    return max(1, (cores - busy) // max(1, workers))


def choose_threads(requested: int | None, hidden: int, workers: int = 1) -> tuple[int, str]:
    """(threads, why): ``--threads`` > a user's OMP_NUM_THREADS > the rule."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) >= 1:
        return int(env), "OMP_NUM_THREADS"
    return default_threads(hidden, workers=workers, busy=busy_cores()), "rule"


def apply_threads(requested: int | None, hidden: int, workers: int = 1) -> int:
    n, _ = choose_threads(requested, hidden, workers)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
