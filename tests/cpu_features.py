"""What this machine's CPU can do, probed once, for tests that depend on it.

A test that needs a capability asks here and skips with the returned reason when the machine
lacks it (it must never fail because of the hardware it runs on). Each probe tries the very
operation the test needs, rather than reading CPU flags: torch picks its kernels at run time
(oneDNN honours ``ONEDNN_MAX_CPU_ISA``, for one), so the operation is the only honest witness.
"""

from __future__ import annotations

import functools


@functools.cache
def cpu_bf16_lstm_missing() -> str | None:
    """``None`` when ``torch.nn.LSTM`` runs under CPU ``autocast(bfloat16)`` here, else why not.

    torch runs it through oneDNN's bf16 LSTM primitive, which needs AVX-512 bf16 (or AMX); on
    other CPUs creating the primitive fails with a RuntimeError.
    """
    import torch

    lstm = torch.nn.LSTM(2, 2)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 1, 2))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            "torch.nn.LSTM cannot run under CPU autocast(bfloat16) on this CPU "
            f"(no AVX-512 bf16 oneDNN kernel): {first[:160]}"
        )
    return None
