"""The default test run passes on every CPU: capability-dependent tests skip, with the reason.

oneDNN's ``ONEDNN_MAX_CPU_ISA=AVX2`` makes this machine behave as one without AVX-512 bf16 (the
kind the README's test command once failed on), so the suite's CPU-dependent tests can be run
here as they run there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bf16_autocast_test_skips_without_avx512_bf16():
    """Without AVX-512 bf16 the bf16 autocast checks of the LSTM drop-in skip with the reason
    (they failed: torch's oneDNN bf16 LSTM primitive cannot be created there); GRU and RNN,
    which need no such kernel, still run and pass."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "tests/nn/test_torch_dropin.py",
        "-k",
        "cpu_autocast_bfloat16",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "4 passed, 2 skipped" in out, out
    assert "no AVX-512 bf16" in out, out
