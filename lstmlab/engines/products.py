"""The per-step matrix products of the bptt engine: BLAS, or oneDNN's matmul on a packed weight.

Every step of the recurrence multiplies the rows alive by the same weight matrix: R in the
forward pass, Rᵀ in the backward pass (and W_p, W_mh, Q where a variant has them). On the CPU
in float32, torch's matrix product runs MKL's sgemm, which repacks the weight on every call. For
wide layers, oneDNN's matmul — the kernel behind torch.nn.LSTM — runs these products
faster, with the weight packed once per call of the engine. On the benchmark machine (AMD EPYC,
one thread) it runs them in 0.4–0.95 of sgemm's time once both sides of the weight are ≥ 256
and a step has two rows or more, and slower below that (a fixed cost of ≈ 20 µs a call; one
row is a matrix-vector product, where BLAS is faster). ``benchmarks/bench_lstm.py --sections
products`` measures it.

torch exposes that kernel only through private operators
(``torch.ops.mkldnn._reorder_linear_weight`` and ``_linear_pointwise``, which torch.compile's
CPU backend uses for frozen linear layers). So this module probes them once per process
against ``torch.mm`` and uses BLAS whenever they are missing, fail, disagree, or oneDNN is
switched off (``torch.backends.mkldnn.flags(enabled=False)``): nothing depends on them. The
two paths differ by round-off only (another summation order); the tests hold both to the
autograd reference (``forced_products``).

The choice of kernel is this project's (measured, ``choose_products``); the kernels are
torch's.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = [
    "MIN_ROWS",
    "MIN_SIDE",
    "MIN_STEPS",
    "PRODUCTS",
    "StepProduct",
    "choose_products",
    "forced_products",
    "onednn_available",
]

PRODUCTS = ("auto", "blas", "onednn")
_FORCED: list[str] = []  # set by ``forced_products`` (tests, benchmarks)
# both sides of the weight at least this: below it oneDNN's fixed cost per call loses
MIN_SIDE = 256
# steps per call at least this: packing the weight costs about one or two products
MIN_STEPS = 16
# rows (samples) at least this: a single row is a matrix-vector product, which BLAS runs
# faster at H = 256 (oneDNN 1.5x slower); from two rows on oneDNN wins (0.4-0.9)
MIN_ROWS = 2


@functools.cache
def onednn_available() -> bool:
    """Whether this torch build runs oneDNN's packed-weight matmul, and gets it right."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = torch.ops.mkldnn
        w = torch.linspace(-1.0, 1.0, 96).view(8, 12)  # (out, in), like a linear layer
        a = torch.linspace(-2.0, 0.5, 36).view(3, 12)
        out = ops._linear_pointwise(a, ops._reorder_linear_weight(w, None), None, "none", [], "")
        return bool(torch.allclose(out, a @ w.t(), rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return False  # the operators are private: absent, or with another signature


def choose_products(weight: Tensor, steps: int, rows: int = MIN_ROWS) -> str:
    """ "onednn" or "blas" for the per-step products with ``weight`` (N, K) over ``steps``
    steps of at most ``rows`` rows.

    oneDNN only on the CPU in float32 (it has no float64 kernel), when it is available and
    switched on, and — unless forced — when both sides of the weight are ≥ ``MIN_SIDE``, the
    call runs ≥ ``MIN_STEPS`` steps and a step has ≥ ``MIN_ROWS`` rows (read off
    ``bench_lstm.py --sections products``)."""
    mode = _FORCED[-1] if _FORCED else "auto"
    if mode == "blas":
        return "blas"
    usable = (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.enabled
        and onednn_available()
    )
    if not usable:
        return "blas"
    wide = min(weight.shape) >= MIN_SIDE
    if mode == "onednn" or (wide and steps >= MIN_STEPS and rows >= MIN_ROWS):
        return "onednn"
    return "blas"


@contextmanager
def forced_products(name: str):
    """Run the per-step products with ``name`` inside the block (tests, benchmarks).

    "onednn" still falls back to BLAS where oneDNN cannot run (float64, CUDA, not built)."""
    if name not in PRODUCTS:
        raise ValueError(f"unknown products {name!r}; valid: {list(PRODUCTS)}")
    _FORCED.append(name)
    try:
        yield
    finally:
        _FORCED.pop()


class StepProduct:
    """a ↦ a Mᵀ for the rows ``a`` (n, K) of one step; M (N, K) is fixed for a whole call.

    ``add_(out, a)``: out += a Mᵀ.  ``into(out, a, add)``: out = a Mᵀ (+ add).  ``a`` may be
    any (n, K) view; ``out`` is written in place."""

    __slots__ = ("_mt", "_packed", "kind")

    def __init__(self, M: Tensor, steps: int, rows: int = MIN_ROWS):
        self.kind = choose_products(M, steps, rows)
        self._mt = M.t()
        self._packed = (
            torch.ops.mkldnn._reorder_linear_weight(M.detach().contiguous(), None)
            if self.kind == "onednn"
            else None
        )

    def _onednn(self, a: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(a, self._packed, None, "none", [], "")

    def __call__(self, a: Tensor) -> Tensor:
        return a @ self._mt if self._packed is None else self._onednn(a)

    def add_(self, out: Tensor, a: Tensor) -> Tensor:
        if self._packed is None:
            return out.addmm_(a, self._mt)
        return out.add_(self._onednn(a))

    def into(self, out: Tensor, a: Tensor, add: Tensor | None = None) -> Tensor:
        if self._packed is None:
            if add is None:
                return torch.mm(a, self._mt, out=out)
            return torch.addmm(add, a, self._mt, out=out)
        p = self._onednn(a)
        return out.copy_(p) if add is None else torch.add(p, add, out=out)
