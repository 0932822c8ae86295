"""Every part of the package imports first, in a fresh interpreter: a user may start from
``import lstmlab.engines`` or ``import lstmlab.optim`` as well as from ``import lstmlab``
(``import lstmlab.engines`` once failed on a circular import through ``lstmlab.nn``)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import lstmlab

ROOT = Path(lstmlab.__file__).resolve().parent.parent


def _entry_points() -> list[str]:
    """lstmlab's subpackages and top-level modules, and the engine's seam and native core."""
    names = [f"lstmlab.{m.name}" for m in pkgutil.iter_modules(lstmlab.__path__)]
    names += ["lstmlab.engines.bptt", "lstmlab.engines.native"]
    return sorted(set(names) - {"lstmlab.__main__"})


def test_every_subpackage_imports_first():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = {}
    names = _entry_points()
    assert "lstmlab.engines" in names and "lstmlab.engines.bptt" in names
    for i in range(0, len(names), 2):  # two interpreters at a time (two cores)
        batch = names[i : i + 2]
        for name in batch:
            procs[name] = subprocess.Popen(
                [sys.executable, "-c", f"import {name}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        for name in batch:
            try:
                procs[name].wait(timeout=120)
            except subprocess.TimeoutExpired:
                procs[name].kill()
                procs[name].wait()
    failed = {
        n: (p.stdout.read().strip().splitlines() or [f"exit {p.returncode}"])[-1]
        for n, p in procs.items()
        if p.returncode
    }
    assert not failed, failed
