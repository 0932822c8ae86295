"""The native core: the bptt engine's batch-major time loop in C++ on ATen (``lstm_rows.cpp``).

The Python loop of ``engines/bptt_rows.py`` issues about ten small ATen calls per step, each
below ATen's parallel grain and each paying the interpreter; for small batches (batch 1 above
all) that overhead is the whole cost. The native core runs the same steps in C++: per forward
step one recurrent product into the step's preallocated pre-activation rows (the BLAS torch
links, called on raw pointers; in float32 on a weight packed once per call) and one fused
elementwise pass over the rows alive; per backward step one fused pass and one product; the
input projection and the weight gradients stay large products over many steps. The Python loop
stays as the reference twin and the fallback: both compute the same numbers up to round-off
(``tests/engines/test_native.py``).

``use_native(spec, x, dense, sigmoid_form)`` is the one place that decides which loop runs a layer-direction:
the native one when the core is loaded (``build.load``: built once per machine into torch's
extension cache), the tensors are float32 or float64 on the CPU, nothing forces the Python loop
(``forced_python``, or ``LSTMLAB_NATIVE=0`` in the environment), and the variant is one the core
covers: every gate set (NIG, NFG, NOG, CIFG), peepholes, blocks of cells sharing gates, every
block-input / cell-output activation (NIAF, NOAF, lstm97's bipolar ones), gate sharpness α, full
gate recurrence (FGR, lstm97), a projection, mLSTM's multiplicative input and the structured
maps of F-LSTM and G-LSTM (``engines/structured``: their own products in the step, their
intermediates kept where the map's weight gradients read them).

Hand-written: the engine is this project's subject.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from lstmlab.engines import layout
from lstmlab.engines.native import build
from lstmlab.nn.variants import CellSpec

__all__ = [
    "backward_features",
    "backward_rows",
    "backward_slices",
    "covers",
    "forced_python",
    "forward_features",
    "forward_rows",
    "forward_slices",
    "rop_chunk",
    "simd_level",
    "torch_lstm",
    "use_native",
]

_ACT = {"identity": 0, "tanh": 1, "bipolar1": 2, "bipolar2": 3}  # codes of lstm_rows.cpp
_FORCED: list[bool] = []  # set by ``forced_python`` (tests, benchmarks)


@contextmanager
def forced_python() -> Iterator[None]:
    """Run the Python loop for every layer-direction inside the block (tests, benchmarks)."""
    _FORCED.append(True)
    try:
        yield
    finally:
        _FORCED.pop()


def covers(spec: CellSpec) -> bool:
    """Whether the native core computes this variant (see the module docstring)."""
    return tuple(g for g in ("i", "f", "o") if g in spec.gates) == spec.gates


def use_native(spec: CellSpec, x: Tensor, dense: bool, sigmoid_form: bool) -> bool:
    """Whether the layer-direction of ``spec`` on inputs like ``x`` runs the native loop.
    ``dense``: its weights are the dense W and R (or a structured map the core also runs);
    ``sigmoid_form``: the weights carry the tanh family's argument scale of the sigmoid form
    (``gates.SIGMOID_FORM``), the one the native loop evaluates."""
    if _FORCED or not dense or not sigmoid_form or not covers(spec):
        return False
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    return build.load()


def simd_level() -> int:
    """Which float32 passes of the common cell the loaded core runs: 2 AVX-512, 1 AVX2 with
    FMA (each with the reciprocal by a Newton step), 0 the portable ones (with a division), or
    -1 where the core is not loaded. ``LSTMLAB_NATIVE_SIMD=0`` / ``1`` caps it (read once per
    process)."""
    return int(torch.ops.lstmlab_native.simd_level()) if build.load() else -1


def _config(
    spec: CellSpec, chunk: int, z_scale: float = 1.0, torch_order: bool = False
) -> list[int]:
    """The core's config (``Cfg`` of rows_common.h); ``z_scale``: the block input's argument
    scale that the batch-major forward step applies (1: the weights carry it);
    ``torch_order``: the pre-activation rows in torch's order i | f | g | o (``torch_lstm``,
    ``engines/torch_order``)."""
    if z_scale not in (1.0, 2.0):
        raise ValueError(f"the native core takes a block-input scale of 1 or 2, not {z_scale}")
    g = spec.gates
    return [
        spec.hidden_size,
        spec.cells_per_block,
        int("i" in g),
        int("f" in g),
        int("o" in g),
        int(spec.coupled),
        int(spec.peepholes),
        _ACT[spec.g],
        _ACT[spec.h],
        chunk,
        int(z_scale),
        int(torch_order),
    ]


def _c(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def forward_rows(
    spec: CellSpec,
    bs: list[int],
    chunk: int,
    x2: Tensor,
    Ws: Tensor,
    bias: Tensor,
    Rs: Tensor,
    h0: Tensor,
    c0: Tensor,
    ZA: Tensor,
    C: Tensor,
    HC: Tensor,
    Y: Tensor,
    Yh: Tensor | None,
    W_p: Tensor | None,
    Qs: Tensor | None,
    Ps: dict[str, Tensor | None],
    mult: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    z_scale: float = 1.0,
    torch_order: bool = False,
) -> None:
    """The forward time loop of ``bptt_rows`` (weights with α folded in, and the block
    input's argument scale, or ``z_scale``: that scale applied by the step to the summed
    pre-activation instead, so that weights with α = 1 need no scaled copy): fills ZA (T, B, D) = [g(z) | gates], C, HC = h(C), Y (T, B, ·) and Yh (the
    projection's input) in place, over the first ``bs[t]`` rows of each step. The input
    projection x2 (T·B, I) Wsᵀ is formed ``chunk`` steps at a time (``bias`` is added in each
    step's elementwise pass). ``mult``: an intermediate in y_{t-1}'s place — mLSTM (W_mx x, U,
    m, W_mh); F-LSTM (None, U = W1x x, None, W1h); G-LSTM (None, XG, None, Rg 3-D).
    ``torch_order``: Ws, bias, Rs and ZA's rows in torch's gate order i | f | g | o (the common
    cell's plain layer only: ``engines/torch_order``)."""
    torch.ops.lstmlab_native.forward_rows(
        x2,
        _right(Ws),  # (I, D)
        bias,
        _right(Rs),  # (Hr, D)
        h0.contiguous(),
        c0.contiguous(),
        ZA,
        C,
        HC,
        Y,
        Yh,
        None if W_p is None else _right(W_p),
        None if Qs is None else _right(Qs),
        _c(Ps.get("i")),
        _c(Ps.get("f")),
        _c(Ps.get("o")),
        bs,
        _config(spec, chunk, z_scale, torch_order),
        *(mult if mult is not None else (None,) * 4),  # see the docstring
    )


def torch_lstm(
    x: Tensor,
    weights: list[Tensor],
    states: tuple[Tensor, Tensor] | None,
    num_layers: int,
    bidirectional: bool,
    has_biases: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """torch.nn.LSTM's stack without a graph, on its own parameters as the module keeps them:
    every layer and direction in one native call (the drop-in's inference). ``weights``: the
    module's flat weights, [W_ih (4H, I), W_hh (4H, H), b_ih, b_hh (4H)] per layer-direction
    (no biases where ``has_biases`` is false), in torch's gate order i | f | g | o, which the
    batch-major step reads in place (no gathered copy of the weights, no Python between the
    layers). x (T, B, I) dense, time-major; ``states`` (h_0, c_0), each (layers·directions,
    B, H), or None for zeros. For the cell ``torch_order_cell`` accepts, α = 1, float32 /
    float64 on the CPU where the core is loaded (``use_native``). Returns (output (T, B,
    directions·H), (h_n, c_n)), torch's."""
    if not build.load():
        raise RuntimeError(
            "native.torch_lstm: the native core is not loaded on this machine (the line printed "
            "at its build says why); use the module, which falls back to the Python loop"
        )
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *weights, *(states or ()))):
        raise RuntimeError(
            "native.torch_lstm computes no gradients: call it under torch.no_grad() (the "
            "drop-in's training path is lstmlab.engines.torch_order)"
        )
    T, B, _ = x.shape
    H = weights[1].shape[-1]
    size, widest = x.element_size(), max(x.shape[-1], H * (1 + bidirectional) * (num_layers > 1))
    # the batch in slices of rows, a thread each, or one loop (``layout.batch_slices``); the
    # ring sized for one slice's rows (widest W_ih)
    slices = layout.batch_slices(B, 4 * H * H * size, torch.get_num_threads(), x.dtype)
    rows = -(-B // slices)
    chunk = layout.ring_chunk(rows * 4 * H * size, widest * 4 * H * size, rows)
    h0, c0 = (None, None) if states is None else states
    Y, h_n, c_n = torch.ops.lstmlab_native.torch_lstm(
        x, weights, h0, c0, num_layers, bidirectional, has_biases, chunk, slices
    )
    return Y, (h_n, c_n)


def torch_order_cell(spec: CellSpec) -> bool:
    """Whether ``torch_lstm`` and ``engines.torch_order`` run this cell: torch's (NP: one cell per block, the i, f
    and o gates, no peepholes, not coupled, no full gate recurrence, tanh block input and cell
    output), no projection, no multiplicative or structured map."""
    return (
        spec.cells_per_block == 1
        and tuple(spec.gates) == ("i", "f", "o")
        and not (spec.coupled or spec.peepholes or spec.fgr)
        and spec.g == "tanh"
        and spec.h == "tanh"
        and spec.proj_size is None
        and spec.multiplicative_size is None
        and spec.factorization_rank is None
        and spec.groups == 1
    )


def _right(w: Tensor) -> Tensor:
    """The right operand (in, out) of a step's product, for a weight kept as (out, in): its
    transposed view where the weight is contiguous (the core reads it as it is, no copy), else
    a row-major copy."""
    return w.t() if w.is_contiguous() else w.t().contiguous()


def forward_slices(
    spec: CellSpec,
    chunk: int,
    x2: list[Tensor],
    Ws: Tensor,
    bias: Tensor,
    Rs: Tensor,
    h0: list[Tensor],
    c0: list[Tensor],
    ZA: list[Tensor],
    C: list[Tensor],
    HC: list[Tensor],
    Y: list[Tensor],
) -> None:
    """``forward_rows`` of torch's cell in torch's gate order (block-input scale 2 applied by the
    step), for each slice of rows at once, each slice on a thread of its own: x2[q] (T·b_q, I),
    h0[q], c0[q] (b_q, H) and the slice's own (T, b_q, ·) buffers (``engines/torch_order``)."""
    torch.ops.lstmlab_native.forward_slices(
        x2, _right(Ws), bias, _right(Rs), h0, c0, ZA, C, HC, Y,
        _config(spec, chunk, 2.0, torch_order=True),
    )  # fmt: skip


def backward_slices(
    spec: CellSpec,
    ZA: list[Tensor],
    C: list[Tensor],
    HC: list[Tensor],
    c0: list[Tensor],
    R: Tensor,
    dY: list[Tensor],
    dPre: list[Tensor],
    dy_next: list[Tensor],
    dc_next: list[Tensor],
) -> None:
    """``backward_rows`` of torch's cell in torch's gate order (α = 1) for each slice of rows at
    once, each on a thread of its own (the slices of ``forward_slices``)."""
    torch.ops.lstmlab_native.backward_slices(
        ZA, C, HC, c0, R.detach().contiguous(), dY, dPre, dy_next, dc_next,
        _config(spec, 1, 1.0, torch_order=True),
    )  # fmt: skip


def backward_rows(
    spec: CellSpec,
    alpha: dict[str, float],
    bs: list[int],
    ZA: Tensor,
    C: Tensor,
    HC: Tensor,
    c0: Tensor,
    R: Tensor,
    W_p: Tensor | None,
    Q: Tensor | None,
    P: dict[str, Tensor | None],
    dY: Tensor | None,
    dC: Tensor | None,
    dPre: Tensor,
    DY: Tensor | None,
    dy_next: Tensor,
    dc_next: Tensor,
    dq_next: Tensor | None,
    mult: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None = None,
    torch_order: bool = False,
) -> None:
    """The backward time loop of ``bptt_rows`` (raw weights, α explicit): writes δ of every
    step into dPre (T, B, D) (and dy into DY with a projection), leaving dy_next, dc_next the
    gradients of h0, c0. ``torch_order``: ZA, R and dPre's rows in torch's gate order (as in
    ``forward_rows``)."""
    torch.ops.lstmlab_native.backward_rows(
        ZA,
        C,
        HC,
        c0,
        R.detach().contiguous(),
        None if W_p is None else W_p.detach().contiguous(),
        None if Q is None else Q.detach().contiguous(),
        _c(P.get("i")),
        _c(P.get("f")),
        _c(P.get("o")),
        dY,
        dC,
        dPre,
        DY,
        dy_next,
        dc_next,
        dq_next,
        bs,
        _config(spec, 1, 1.0, torch_order),
        [float(alpha.get(g, 1.0)) for g in ("i", "f", "o")],
        *(mult if mult is not None else (None,) * 5),  # MX, U, W_mh (or W1h, Rg), dU, dMX
    )


def forward_features(
    spec: CellSpec,
    bs: list[int],
    x: Tensor,
    Ws: Tensor,
    bias: Tensor,
    Rs: Tensor,
    h0: Tensor,
    c0: Tensor,
    ZAT: Tensor,
    CT: Tensor,
    HCT: Tensor,
    YT: Tensor,
    YhT: Tensor | None,
    W_p: Tensor | None,
    Qs: Tensor | None,
    Ps: dict[str, Tensor | None],
    mult: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> None:
    """The forward time loop of ``bptt_features`` (weights with α and the block input's scale
    folded in): fills ZAT (T, D, B) = [g(z) | gates], CT, HCT = h(C), YT (T, ·, B) and YhT
    (the projection's input) in place, over the first ``bs[t]`` columns of each step; x is
    (T, B, I), h0 (B, Hr), c0 (B, H). ``mult``: mLSTM's (W_mx x, U, m (T, M, B), W_mh)."""
    torch.ops.lstmlab_native.forward_features(
        x.contiguous(),
        Ws.contiguous(),  # (D, I)
        bias,
        Rs.contiguous(),  # (D, Hr), mLSTM (D, M)
        h0.t().contiguous(),
        c0.t().contiguous(),
        ZAT,
        CT,
        HCT,
        YT,
        YhT,
        None if W_p is None else W_p.detach().contiguous(),
        None if Qs is None else Qs.contiguous(),
        _c(Ps.get("i")),
        _c(Ps.get("f")),
        _c(Ps.get("o")),
        bs,
        _config(spec, 1),
        *(mult if mult is not None else (None,) * 4),
    )


def backward_features(
    spec: CellSpec,
    alpha: dict[str, float],
    bs: list[int],
    ZAT: Tensor,
    CT: Tensor,
    HCT: Tensor,
    c0: Tensor,
    R: Tensor,
    W_p: Tensor | None,
    Q: Tensor | None,
    P: dict[str, Tensor | None],
    dY: Tensor | None,
    dC: Tensor | None,
    dPre: Tensor,
    DYT: Tensor | None,
    dy_next: Tensor,
    dc_next: Tensor,
    dq_next: Tensor | None,
    mult: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None = None,
) -> None:
    """The backward time loop of ``bptt_features`` (raw weights, α explicit): writes δ of every
    step into dPre (T, D, B; the steps may lie side by side, unit column stride) (and dy into
    DYT with a projection), leaving dy_next (Hr, B), dc_next (H, B) the gradients of h0ᵀ, c0ᵀ.
    dY, dC arrive as (T, B, ·); ``mult``: mLSTM's (W_mx x, U, W_mh, dU, dMX)."""
    torch.ops.lstmlab_native.backward_features(
        ZAT,
        CT,
        HCT,
        c0.t(),
        R.detach().contiguous(),
        None if W_p is None else W_p.detach().contiguous(),
        None if Q is None else Q.detach().contiguous(),
        _c(P.get("i")),
        _c(P.get("f")),
        _c(P.get("o")),
        None if dY is None else dY.transpose(1, 2),
        None if dC is None else dC.transpose(1, 2),
        dPre,
        DYT,
        dy_next,
        dc_next,
        dq_next,
        bs,
        _config(spec, 1),
        [float(alpha.get(g, 1.0)) for g in ("i", "f", "o")],
        *(mult if mult is not None else (None,) * 5),
    )


def rop_chunk(
    spec: CellSpec,
    features: bool,
    E: Tensor,
    fac: dict[str, Tensor],
    tt: dict[str, Tensor | None],
    EP: Tensor | None,
    dh0: Tensor | None,
    dc0: Tensor | None,
    dY: Tensor,
    dC: Tensor,
    dq: Tensor | None,
    dyh: Tensor | None,
    t0: int,
    bs: list[int],
    fold: bool,
    fused: dict | None = None,
) -> None:
    """The R-forward steps t0 … t0 + len(bs) - 1 of ``rop``: E the carried-independent part of
    each step's pre-activation tangents (completed in place), ``fac`` the backward's derivative
    factors of those steps (every sample; ``fold``: the peepholes folded into them), ``tt`` the
    tape's weights; writes the tangents of y and c into dY, dC at those steps. dq, dyh: buffers
    carried between chunks (full gate recurrence, projection).

    Batch-major (``features`` False): E (k, B, D), the factors (k, B, ·), dY, dC (T, B, ·).
    Feature-major: E (k, D, B), the factors (k, ·, B), dY, dC (T, ·, B), dh0 (Hr, B), dc0 (H, B),
    dq (G, B), dyh (H, B); each thread a slice of the columns through the chunk's steps; and
    ``fused``: the weight tangents (W, b, R, Q, "peep": {gate: (nb, cpb)}) whose carried-
    independent terms the core forms per step from the tape (E is then one step's scratch,
    (1, D, B)); None: E holds them."""
    extra: list = []
    if fused is not None:
        if not features:
            raise ValueError("fused carried-independent terms are feature-major only")
        peep = fused.get("peep") or {}

        def batch_major(v: Tensor) -> Tensor:  # a (T, F, B) view of (T, B, F) storage, or as is
            return v if v.stride(-1) == 1 else v.transpose(-1, -2).contiguous().transpose(-1, -2)

        extra = [
            *(_c(_d(fused.get(n))) for n in ("W", "b", "R", "Q")),
            *(_c(_d(peep.get(g))) for g in ("i", "f", "o")),
            batch_major(tt["x"]),
            batch_major(tt["Y"]),
            tt["h0"],
            tt["A"],
            tt["C"].contiguous(),
            tt["c0"],
            True,
        ]
    ops = torch.ops.lstmlab_native
    op = ops.rop_features_chunk if features else ops.rop_rows_chunk
    _rop_chunk(op, spec, E, fac, tt, EP, dh0, dc0, dY, dC, dq, dyh, t0, bs, fold, extra)


def _d(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


def _rop_chunk(op, spec, E, fac, tt, EP, dh0, dc0, dY, dC, dq, dyh, t0, bs, fold, extra) -> None:
    op(
        E,
        fac["OHp"],
        fac["IGp"],
        fac.get("F_c"),
        fac["SA"],
        fac.get("i"),
        fac.get("f"),
        fac.get("o"),
        _c(tt["R"]),
        _c(tt["Q"]),
        _c(tt["W_p"]),
        EP,
        _c(tt["P_i"]),
        _c(tt["P_f"]),
        _c(tt["P_o"]),
        _c(dh0),
        _c(dc0),
        dY,
        dC,
        dq,
        dyh,
        t0,
        bs,
        _config(spec, 1),
        fold,
        *(  # mLSTM: the tape's W_mx x (T, B, M) and W_mh
            (tt["MX"].contiguous(), tt["W_mh"].detach().contiguous())
            if spec.multiplicative_size is not None
            else (None, None)
        ),
        *extra,
    )
