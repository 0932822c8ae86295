"""The bptt engine's two memory layouts, and the step bookkeeping both share.

A layer-direction's per-step quantities live in (T, ·, ·) tensors in one of two layouts:

    "features"  feature-major, step t is (features, B): every gate slice is a contiguous block
                whose rows run over the whole batch (``bptt_features``; seed 000's nodes in
                rows, samples in columns)
    "batch"     batch-major, step t is (B, features), as in ``torch.nn.LSTM`` (``bptt_rows``,
                and the native core's layout)

``choose_layout`` picks one per call by shape and dtype (``forced_layout`` overrides it). A
padded batch arrives sorted by length (descending, ``packing.sort_by_length``), so the samples
alive at step t are the first n_t = bs[t]; ``steps`` cuts a (T, ·, ·) tensor into its per-step
views of the samples alive, in either layout. ``chunk_steps`` sizes the chunks of steps that
the loops form at once (input projections, derivative factors, peephole gradients);
``ring_chunk`` sizes inference's ring of input projections for the cache (``l2_bytes``), and
``batch_slices`` says into how many slices of rows inference splits a batch over the threads.

No gate algebra here: that is ``gates``.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from lstmlab.nn.variants import CellSpec

__all__ = [
    "LAYOUTS",
    "choose_layout",
    "batch_slices",
    "chunk_steps",
    "l2_bytes",
    "ring_chunk",
    "forced_layout",
    "common_cell",
    "keeps_graph",
    "last_index",
    "keeps_states",
    "steps",
    "without_backward",
    "without_states",
]

LAYOUTS = ("features", "batch")
_FORCED: list[str] = []  # set by ``forced_layout`` (tests, benchmarks)


class _Local(threading.local):
    """What ``without_backward`` / ``without_states`` set, per thread: a call on another
    thread (``torch.nn.DataParallel`` runs its replicas on threads) is not affected."""

    def __init__(self) -> None:
        self.no_backward: list[bool] = []
        self.no_states: list[bool] = []


_LOCAL = _Local()


@contextmanager
def without_backward():
    """Inside the block, calls of a layer keep no graph (``bptt.run`` knows: grad mode off or
    nothing requires grad), so a native loop may keep only what it returns."""
    _LOCAL.no_backward.append(True)
    try:
        yield
    finally:
        _LOCAL.no_backward.pop()


@contextmanager
def without_states():
    """Inside the block, the caller reads no cell-state trajectory C of a layer, only its
    outputs Y and final states (the ``torch.nn.LSTM`` drop-in): a batch-major native loop
    without a backward to come then keeps C for two steps, not all, and returns C empty."""
    _LOCAL.no_states.append(True)
    try:
        yield
    finally:
        _LOCAL.no_states.pop()


def keeps_states() -> bool:
    """Whether a layer's caller reads C (outside ``without_states``)."""
    return not _LOCAL.no_states


def keeps_graph(needs_input_grad) -> bool:
    """Whether a backward may follow this call of a layer's Function (its ``ctx``'s
    ``needs_input_grad``, outside ``without_backward``)."""
    return not _LOCAL.no_backward and any(needs_input_grad)


def steps(v: Tensor, bs: list[int], full: bool, fdim: int) -> list[Tensor] | tuple[Tensor, ...]:
    """The step views v[t] of a (T, ·, ·) tensor, each restricted to the n_t = bs[t] samples
    alive: the last dimension when the features are on dimension 1 (feature-major, v (T, F, B)
    -> (F, n_t) views), else the first one after T (batch-major, fdim = -1: v (T, B, F) ->
    (n_t, F) views). One unbind call when every sample is alive (``full``)."""
    if full:
        return v.unbind(0)
    if fdim == 1:
        return [v[t, :, :n] for t, n in enumerate(bs)]
    return [v[t, :n] for t, n in enumerate(bs)]


def chunk_steps(step_bytes: int, target: int = 1 << 20) -> int:
    """Steps per chunk (of input projections, of derivative factors): about ``target`` bytes
    per chunk of a per-step tensor of ``step_bytes``, so that a chunk is still in the cache
    when the loop reaches its steps. At least 1: max(1, target // step_bytes)."""
    return max(1, target // max(1, step_bytes))


L2_FALLBACK = 1 << 20  # bytes, where the CPU's level-2 cache size cannot be read
_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


def l2_bytes() -> int:
    """The level-2 cache of one core, in bytes (Linux: ``/sys/devices/system/cpu/cpu0/cache``;
    elsewhere, or unreadable, ``L2_FALLBACK``). Read once, from the first CPU: on a chip whose
    cores differ, or whose L2 is shared by a cluster, it is a sizing hint only (the chunks and
    slices it sizes change speed, never results)."""
    global _L2
    if _L2 is None:
        _L2 = L2_FALLBACK
        try:
            for idx in sorted(_CACHE_DIR.glob("index*")):
                if (idx / "level").read_text().strip() == "2":
                    size = (idx / "size").read_text().strip().upper()
                    unit = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                    _L2 = int(size.rstrip("KM")) * unit
                    break
        except (OSError, ValueError):
            pass
    return _L2


_L2: int | None = None


def batch_slices(
    batch: int, recurrent_bytes: int, threads: int, dtype: torch.dtype, training: bool = False
) -> int:
    """Into how many slices of rows a layer's call splits a batch (inference:
    ``native.torch_lstm``; ``training``: ``engines/torch_order``), each slice's sequences run by
    one thread from the first step to the last (the rows are independent; no fork and join per
    step): one per thread where
    - the dtype is float32 (MKL's float32 products on x86 were seen to give each row the same
      sums whatever the number of rows: each slice's numbers are then one loop's to the last
      bit, and the outputs do not change with the thread count — a test holds this wherever
      its probe finds the BLAS so; float64's
      products of fewer rows were seen to round differently);
    - there are two threads or more, and two rows or more for each slice (a slice of one row
      would take batch 1's own matrix-vector product, whose sums round differently);
    - the batch has fewer than 128 rows a thread (from there one loop's steps are large enough
      to split each step's product and pass over the threads at little cost, and the slices'
      copies of their rows in and out would cost more);
    - the recurrent weight (``recurrent_bytes``) fits in half a core's level-2 cache: every
      thread then reads all of it each step from its own cache (a wider one is better split
      by columns over the threads, the BLAS's way, in one loop); in an eighth of it for
      training (``training``), whose slices' step buffers are copied in and out, δ of every
      step included ((100, 32, 64, 256), a 1 MB weight: 0.92 of torch's time in one loop,
      0.99 in slices).
    Else 1. Measured on issue 21's sizes at two threads (docs/benchmarks.md, "Seventh pass");
    more threads take as many slices, untested beyond two."""
    slices = min(threads, batch // 2)
    if dtype != torch.float32 or slices < 2 or batch >= 128 * threads:
        return 1
    if recurrent_bytes > l2_bytes() // (8 if training else 2):
        return 1
    return slices


def ring_chunk(step_bytes: int, weight_bytes: int, rows: int) -> int:
    """Steps per input-projection product where the pre-activations live in a ring of that many
    steps (inference: no backward keeps them). The largest of
    - a quarter of a core's level-2 cache over a step's pre-activations: the chunk the product
      writes is still in that cache when its steps add the recurrent product and read it;
    - 256 rows (samples × steps): a product of fewer rows runs below the BLAS's speed;
    - the input weight's bytes over a step's: a product reads the whole weight, once per chunk.
    Measured on issue 21's sizes (docs/benchmarks.md, "Seventh pass"): against a fixed 4 MB
    chunk, inference at (100, 1000, 32, 32) 0.78 → 0.73 of torch's time, at (100, 64, 32, 32)
    0.90 → 0.75, with the wide layers as before."""
    step_bytes = max(1, step_bytes)
    return max(1, (l2_bytes() // 4) // step_bytes, -(-256 // max(1, rows)),
               weight_bytes // step_bytes)  # fmt: skip


def last_index(bs: list[int], B: int, device) -> Tensor:
    """Last alive step of each of the B (sorted) rows, from the batch sizes n_t: (B,) long,
    row b's entry = #{t : bs[t] > b} − 1."""
    bs_t = torch.tensor(bs, device=device)
    rows = torch.arange(B, device=device)
    return (bs_t.unsqueeze(1) > rows.unsqueeze(0)).sum(0) - 1


def choose_layout(
    spec: CellSpec,
    batch: int,
    dtype: torch.dtype = torch.float64,
    *,
    native: bool = False,
    backward: bool = True,
) -> str:
    """ "features" (``bptt_features``) or "batch" (``bptt_rows``) for a layer of this shape.

    ``native``: both layouts would run their native loops (``engines/native``; not F-LSTM's and
    G-LSTM's structured maps, which the feature-major native loop does not run); ``backward``:
    a backward pass will follow (training), else inference.

    With the native loops, the common cell (``common_cell``: NP and vanilla; its batch-major
    forward and backward steps are vectorised passes over a row's cells) trains and infers
    batch-major from 16 units on, and feature-major below on batches of 16 (training, vanilla's
    inference) or 4·H_r (NP's inference) and more (seed 000's 4- and 8-unit nets: each thread's
    slice of samples runs the whole time loop, the elementwise passes vectorised over the
    samples; a batch-major row of fewer than 16 cells runs the vector passes' scalar tails). Other variants
    (blocks of cells, FGR, CIFG, one gate fewer, …: their batch-major steps loop over the
    blocks) train feature-major where the layer has at most 128 units and the batch at least 16
    samples, and infer feature-major where 4·H_r ≤ B and H_r ≤ 32 (both loops then keep one step, or a ring
    of a few, of what a backward would read), as measured before the common cell's passes
    existed (docs/benchmarks.md, "Which layout").

    With the Python loops: the BLAS kernels run a product fastest when its output's leading
    dimension is the long one (the batch feature-major, the 4·H gate pre-activations
    batch-major), so batch-major when 4·H_r exceeds the batch; below float64 also from H_r = 16
    on. Both rules were read off ``benchmarks/bench_lstm.py --sections layout`` (its
    training and inference columns, docs/benchmarks.md)."""
    if _FORCED:
        return _FORCED[-1]
    H = spec.recurrent_size
    if native:
        # the common cell: batch-major from 16 units; below, feature-major on batches of 16
        # (training, vanilla's inference) or 4·H_r (NP's inference) and more
        if common_cell(spec):
            small = 16 if (backward or spec.peepholes) else 4 * H
            return "features" if (H < 16 and batch >= small) else "batch"
        if backward:
            return "features" if (H <= 128 and batch >= 16) else "batch"
        return "features" if (4 * H <= batch and H <= 32) else "batch"
    if 4 * H > batch or (dtype != torch.float64 and H >= 16):
        return "batch"
    return "features"


def common_cell(spec: CellSpec) -> bool:
    """The cells whose batch-major backward step the native core runs in one vectorised pass
    (``common_back`` and ``peep_back`` of engines/native/rows_common.h; the forward step too
    without peepholes, ``Layout::common``): one cell per block, the i, f and o gates, not
    coupled, no full gate recurrence, squashing block-input and cell-output activations, with
    or without peepholes. torch.nn.LSTM's cell (NP) is one, lstmlab's default (vanilla) another."""
    return (
        spec.cells_per_block == 1
        and tuple(spec.gates) == ("i", "f", "o")
        and not spec.coupled
        and not spec.fgr
        and spec.g != "identity"
        and spec.h != "identity"
    )


@contextmanager
def forced_layout(name: str):
    """Run every bptt layer in the layout ``name`` inside the block (tests, benchmarks)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; valid: {list(LAYOUTS)}")
    _FORCED.append(name)
    try:
        yield
    finally:
        _FORCED.pop()
