"""Building and loading the native core: once per machine, into torch's extension cache.

``load()`` compiles the C++ sources beside this file with ``torch.utils.cpp_extension.load``
(g++ and ninja; the ``ninja`` package from PyPI brings the latter into a fresh environment)
the first time it is called on a machine, saying so in one line, and loads the cached library
on every later call (torch rebuilds only when a source or the flags change). The library
registers its operators under ``torch.ops.lstmlab_native``.

When there is no compiler, the build fails, or ``LSTMLAB_NATIVE=0`` is set, ``load()`` returns
False — the first two after one line on stderr — and the engine runs its Python loop, which
computes the same numbers (``lstmlab.engines.native`` is the one place that decides).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["ENV", "NAME", "SOURCES", "load", "reset"]

ENV = "LSTMLAB_NATIVE"  # "0": never build nor load the native core
NAME = "lstmlab_native_v1"  # the extension's name in torch's cache (bump when the ABI changes)
SOURCES = tuple(
    Path(__file__).with_name(f)
    for f in ("lstm_rows.cpp", "lstm_features.cpp", "rop_rows.cpp", "rop_features.cpp")
)
HEADERS = (Path(__file__).with_name("rows_common.h"),)
# -O3 with the compiler's auto-vectorisation; no -march=native, so that a cache shared between
# machines of different CPUs stays valid (the elementwise loops are compiled per instruction set
# and picked at load time: rows_common.h). -fno-trapping-math: the clamped exp's compare-and-
# select then vectorises for AVX2 and SSE too (without it only AVX-512's masked moves do); it
# changes no value, only whether floating-point exception flags may be raised speculatively.
FLAGS = ["-O3", "-fno-trapping-math"]
# -fopenmp: ATen's at::parallel_for runs its lambda on one thread unless the translation unit is
# compiled with OpenMP (ATen/ParallelOpenMP.h defines INTRA_OP_PARALLEL only under _OPENMP).
# The library then needs libgomp.so.1, which resolves to the copy torch itself loaded (same
# soname): one OpenMP runtime and one thread count, torch.set_num_threads's. Linux (g++) only.
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []

STALE_LOCK_S = 900  # a build lock older than this was left by a build that died
_STATE: dict[str, bool] = {}  # "loaded": the outcome of the first call in this process


def _say(msg: str) -> None:
    print(f"lstmlab: {msg}", file=sys.stderr, flush=True)


def _ninja_on_path() -> None:
    """torch's builder runs ``ninja`` from PATH; a venv used without activation has it only in
    the ``ninja`` package's own folder."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja  # the PyPI package

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass


def _build():
    """Compile (or load from the cache) and return the library's path; raises on failure."""
    from torch.utils import cpp_extension

    _ninja_on_path()
    build_dir = Path(cpp_extension._get_build_directory(NAME, verbose=False))
    lib = build_dir / f"{NAME}.so"
    # torch's builder waits, without end, for the lock file of a build in progress; one left by
    # a build that was killed would hang every later process
    lock = build_dir / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        _say(f"removing a stale build lock left by an interrupted build ({lock})")
        lock.unlink(missing_ok=True)
    before = lib.stat().st_mtime_ns if lib.exists() else None
    t0 = time.perf_counter()
    if before is None:
        _say("compiling lstmlab's native LSTM core (once per machine, about a minute) …")

    def load(openmp: list[str]):
        return cpp_extension.load(
            name=NAME,
            sources=[str(s) for s in SOURCES],
            extra_cflags=FLAGS + openmp,
            extra_ldflags=openmp,
            is_python_module=False,
            verbose=False,
        )

    try:
        path = load(OPENMP)
    except Exception as err:
        if not OPENMP:
            raise
        # a compiler without OpenMP: the core still builds, its parallel_for on one thread
        _say(
            f"the native LSTM core did not build with OpenMP ({_first_error(str(err))[:160]}); "
            "building it without (its loops then use one thread, BLAS still more)"
        )
        path = load([])
    if before is None or lib.stat().st_mtime_ns != before:  # built (or rebuilt: sources changed)
        _say(f"native LSTM core built in {time.perf_counter() - t0:.0f} s (cached in {build_dir})")
    return path


def _first_error(text: str) -> str:
    """The line of a failed build that says what went wrong (the compiler's first error),
    else the first line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:
        if "error:" in ln or "not found" in ln or "No such file" in ln:
            return ln
    return lines[0] if lines else ""


def load() -> bool:
    """Whether the native core is loaded in this process (built first if need be). The first
    call decides; a failure is reported in one line, once."""
    if "loaded" in _STATE:
        return _STATE["loaded"]
    if os.environ.get(ENV, "1").strip() == "0":
        _STATE["loaded"] = False
        return False
    try:
        _build()
        ok = True
    except Exception as err:  # no compiler, a failed build, a library that does not load
        first = _first_error(str(err)) or type(err).__name__
        _say(
            f"the native LSTM core could not be built ({first[:200]}); using the Python "
            f"engine (same results, slower). Set {ENV}=0 to skip the attempt."
        )
        ok = False
    _STATE["loaded"] = ok
    return ok


def reset() -> None:
    """Forget the outcome of ``load`` (tests)."""
    _STATE.clear()
