"""Ctrl-C and SIGTERM during a run: the first asks the loop to stop after the current iteration
(it then checkpoints and writes its summary, as for any other stop); a second aborts at once
with ``KeyboardInterrupt`` (the last checkpoint on disk stays valid: writes are atomic).

A job scheduler's SIGTERM (Slurm, Kubernetes, ``kill``) is therefore as clean as Ctrl-C; the
CLI exits 130 after SIGINT and 143 after SIGTERM (``Interrupt.signal`` names which).
Handlers are installed only in the main thread and restored on exit.
"""

from __future__ import annotations

import contextlib
import signal

__all__ = ["Interrupt", "handle_signals", "HANDLED"]


class Interrupt:
    """First SIGINT/SIGTERM: set a flag the loop polls. Second: abort (KeyboardInterrupt)."""

    def __init__(self, notify):
        self.requested = False
        self.signal: str | None = None
        self._notify = notify

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = signal.Signals(signum).name
        again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        self._notify(
            f"interrupt ({self.signal}): checkpointing after this iteration ({again} again to abort)"
        )


HANDLED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def handle_signals(handler: Interrupt):
    previous = {}
    try:
        for sig in HANDLED:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handler, signals behave as usual
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
