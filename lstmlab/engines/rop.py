"""Forward-mode derivatives through the bptt engine: Pearlmutter's R-operator, per layer.

For a direction in parameter space, the R-forward pass propagates the directional derivative
(written ȧ for a quantity a) of every pre-activation, gate, cell state and output alongside the
recurrence the bptt forward pass already ran, reading the activations it kept. With a dot for
R{·} and the notation of ``lstmlab.nn.lstm_cell`` (per step, the gates broadcast over the cells
of their block; α and the activations' argument scales folded in as in the forward pass):

    ȧ_t   = Ẇ x_t + W ẋ_t + ḃ + Ṙ y_{t-1} + R ẏ_{t-1}           (mLSTM: Ṙ m_t + R ṁ_t,
            + Q̇ q_{t-1} + Q q̇_{t-1}                               ṁ_t = (Ẇ_mx x_t + W_mx ẋ_t) ⊙ u_t
            + Ṗ_{i,f} c_{t-1} + P_{i,f} ċ_{t-1}   (gate rows)          + mx_t ⊙ (Ẇ_mh y_{t-1}
    ċ_t   = F_c ċ_{t-1} + K_i ȧ_i + K_f ȧ_f + IGp ȧ_z                  + W_mh ẏ_{t-1}))
    ȧ_o  += Ṗ_o c_t + P_o ċ_t
    ŷ̇_t   = OHp ċ_t + K_o ȧ_o,      ẏ_t = Ẇ_p ŷ_t + W_p ŷ̇_t (projection) or ŷ̇_t
    q̇_t   = α σ'(·) ȧ_gates                                      (full gate recurrence)

where F_c = ∂c_t/∂c_{t-1} (f, 1 − i for CIFG, 1 without a forget gate), K_i = ∂c/∂a_i,
K_f = ∂c/∂a_f, IGp = i g'(z), OHp = o h'(c), K_o = h(c) α σ'(a_o): the very derivative factors
the backward pass forms (``gates.factors``), with the peepholes folded into F_c and OHp where the
backward folds them. These are the transposes of the backward's per-step Jacobians, so one set
of factors serves both directions.

Everything that does not depend on the carried derivatives (Ẇ x, W ẋ, ḃ, Ṙ y_{t-1}, Q̇ q_{t-1},
Ṗ c, Ẇ_p ŷ, mLSTM's ṁ parts) is formed for a chunk of steps at a time in a few large
products; each step then pays one recurrent product R ẏ_{t-1} (mLSTM: two; one more with full
gate recurrence or a projection) and a handful of multiply-adds, about what a forward step
costs. The factors depend only on the point, so they are formed once and kept in the tape
between passes (every CG iteration of HF makes one) while they fit in ``FACTOR_CACHE_BYTES``;
larger layers form them a chunk of steps at a time in every pass, as the backward does. Both
memory layouts of the engine are served by one loop: ``_Layout`` is the single place where
their shapes differ.

Recording: the R-forward needs the activations of a bptt forward pass that kept its graph.
Inside ``recording()``, ``bptt.run`` leaves one ``LayerTape`` per layer-direction (in call
order) with the Function's node, whose saved tensors and attributes are the tape (``tape``;
``LayerTape`` and ``recording`` are re-exported here, their public path).

A whole ``lstmlab.LSTM`` stack (layers, directions, F-/G-LSTM weights) is ``rop_stack``.

Batch-major, where the native core is built, the steps of each chunk run in C++
(``native.rop_chunk``: one product R ẏ_{t-1} and one fused pass per step); the chunk's
carried-independent terms and factors are formed here either way, and the loop below is its
reference twin and fallback.

Hand-written, like the engine it extends: curvature products are this project's subject.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from lstmlab.engines import gates, layout, native
from lstmlab.engines.tape import LayerTape, recording, tape_tensors
from lstmlab.nn.variants import CellSpec

__all__ = [
    "FACTOR_CACHE_BYTES",
    "LayerTape",
    "forced_chunk",
    "last_step",
    "layer_jvp",
    "recording",
]


# The derivative factors of a whole layer-direction are kept between R-forward passes (they
# depend only on the point) when they take at most this many bytes; larger layers form them a
# chunk of steps at a time in every pass, as the backward does.
FACTOR_CACHE_BYTES = 64 << 20
_FORCED_CHUNK: list[int] = []  # set by ``forced_chunk`` (tests)
_UNFUSED: list[bool] = []  # set by ``unfused_terms`` (tests)


@contextmanager
def forced_chunk(steps: int):
    """Inside the block, R-forward passes form the factors and the carried-independent terms
    ``steps`` steps at a time and keep nothing between passes (tests of the chunk seams)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    _FORCED_CHUNK.append(steps)
    try:
        yield
    finally:
        _FORCED_CHUNK.pop()


@contextmanager
def unfused_terms():
    """Inside the block, the feature-major native R-forward takes its carried-independent terms
    from ``_chunk_terms`` (Python, a chunk at a time) instead of forming them per step (tests:
    the two against each other)."""
    _UNFUSED.append(True)
    try:
        yield
    finally:
        _UNFUSED.pop()


class _Layout:
    """Where the two memory layouts differ. Per-step tensors are (F, n) feature-major and
    (n, F) batch-major; chunks of steps (k, F, B) and (k, B, F): the feature dimension is -2 or
    -1 in both."""

    def __init__(self, features: bool, nb: int, cpb: int):
        self.features, self.nb, self.cpb = features, nb, cpb
        self.fdim = -2 if features else -1

    def rows(self, t: Tensor, sl: slice) -> Tensor:
        """The features ``sl`` of a step or chunk tensor."""
        return t.narrow(self.fdim, sl.start, sl.stop - sl.start)

    def lin(self, M: Tensor, v: Tensor) -> Tensor:
        """M v for M (N, K) and a step (K, n) / (n, K) or chunk of steps."""
        return torch.matmul(M, v) if self.features else torch.matmul(v, M.t())

    def acc_(self, out: Tensor, M: Tensor, V: Tensor) -> Tensor:
        """out += M v_t for every step of a chunk (k, ·, ·): one batched product in place."""
        k = V.shape[0]
        if self.features:
            return out.baddbmm_(M.expand(k, *M.shape), V)
        return out.baddbmm_(V, M.t().expand(k, M.shape[1], M.shape[0]))

    def addlin_(self, out: Tensor, M: Tensor, v: Tensor) -> Tensor:
        """out += M v for one step (2-D tensors)."""
        return out.addmm_(M, v) if self.features else out.addmm_(v, M.t())

    def col(self, b: Tensor) -> Tensor:
        """A vector over the features, shaped to broadcast over the samples."""
        return b.view(-1, 1) if self.features else b

    def cells(self, t: Tensor) -> Tensor:
        """Split the H cell features into (nb, cpb)."""
        if self.features:
            return t.unflatten(-2, (self.nb, self.cpb))
        return t.unflatten(-1, (self.nb, self.cpb))

    def per_block(self, g: Tensor) -> Tensor:
        """A block-level tensor (nb features) shaped to broadcast over ``cells(·)``."""
        return g.unsqueeze(-2) if self.features else g.unsqueeze(-1)

    def peep(self, P: Tensor) -> Tensor:
        """Peepholes (nb, cpb) shaped to broadcast over ``cells(·)``."""
        return P.unsqueeze(-1) if self.features else P

    def block_sum(self, c: Tensor, P: Tensor) -> Tensor:
        """(P c)_j = Σ_k P[j, k] c[j, k]: cells (H features) to blocks (nb features)."""
        if self.cpb == 1:
            return c * self.col(P.view(-1))
        return (self.cells(c) * self.peep(P)).sum(-2 if self.features else -1)

    def gate_times_(self, out: Tensor, K: Tensor, g: Tensor) -> Tensor:
        """out += K ⊙ g for a cell-level factor K and a block-level g (broadcast to cells)."""
        if self.cpb == 1:
            return out.addcmul_(K, g)
        self.cells(out).addcmul_(self.cells(K), self.per_block(g))
        return out


@torch.no_grad()
def layer_jvp(
    tape: LayerTape,
    dw: dict,
    dx: Tensor | None = None,
    dh0: Tensor | None = None,
    dc0: Tensor | None = None,
    weights: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """The R-forward pass of one recorded layer-direction.

    ``dw``: the direction's tangents of the cell's dense weights, keyed as ``cell.weights()``
    (W, R, b, W_mx, W_mh, peep {gate: (blocks, cpb)}, Q, W_p; None entries count as zero).
    ``dx`` (T, B, I), ``dh0`` (B, Hr), ``dc0`` (B, H): tangents of the layer's input and
    initial state in the caller's order (None: zero). Returns (Ẏ (T, B, Hr), Ċ (T, B, H)) in the
    caller's order, zero at padded steps (as the outputs are); feature-major, they are views of
    (T, ·, B) storage. ``weights``: the dense weights at the point (W, R, W_mx, W_mh, P_i, P_f,
    P_o, Q, W_p; ``rop_stack.dense_weights``), else those the forward pass saved."""
    s: CellSpec = tape.cell.spec
    feats = tape.layout == "features"
    lay = _Layout(feats, s.blocks, s.cells_per_block)
    tt = tape_tensors(tape)
    if weights is not None:
        tt.update({k: (w.detach() if w is not None else None) for k, w in weights.items()})
    packing = tape.packing
    bs_given = packing[2] if packing is not None else None
    if packing is not None:  # into the engine's (length-sorted) order
        perm = packing[0]
        dx = dx[:, perm] if dx is not None else None
        dh0 = dh0[perm] if dh0 is not None else None
        dc0 = dc0[perm] if dc0 is not None else None
    if feats:  # the caller's (T, B, ·) and (B, ·) as feature-major views
        dx = dx.transpose(1, 2) if dx is not None else None
        dh0 = dh0.t() if dh0 is not None else None
        dc0 = dc0.t() if dc0 is not None else None
    dY, dC = _r_forward(s, tape.alpha, lay, tt, bs_given, dw, dx, dh0, dc0, tape.cache)
    if packing is not None:  # back into the caller's order: one gather each
        inv = packing[1]
        sdim = 2 if feats else 1
        dY, dC = dY.index_select(sdim, inv), dC.index_select(sdim, inv)
    if feats:  # (T, B, ·) views
        dY, dC = dY.transpose(1, 2), dC.transpose(1, 2)
    return dY, dC


def last_step(Y: Tensor, lengths: Tensor | None) -> Tensor:
    """Y (T, B, F) at each sample's last valid step -> (B, F)."""
    if lengths is None:
        return Y[-1]
    return Y[lengths - 1, torch.arange(Y.shape[1], device=Y.device)]


def _r_forward(s: CellSpec, alpha, lay: _Layout, tt, batch_sizes, dw, dx, dh0, dc0, cache):
    """The loop of ``layer_jvp`` in the engine's order and layout; see the module docstring."""
    x, Y, C, A = tt["x"], tt["Y"], tt["C"], tt["A"]
    T = x.shape[0]
    B = x.shape[-1] if lay.features else x.shape[1]
    H, Hr, D = s.hidden_size, s.recurrent_size, s.n_pre
    sdim = 1 if lay.features else -1  # the samples' dimension for ``layout.steps``
    full = batch_sizes is None
    bs = batch_sizes if batch_sizes is not None else [B] * T
    R, W_p, Q, W_mh = tt["R"], tt["W_p"], tt["Q"], tt["W_mh"]
    P = {g: tt[f"P_{g}"] for g in ("i", "f", "o")}
    dP = dw.get("peep") or {}
    mult, fgr, peep = s.multiplicative_size is not None, Q is not None, s.peepholes
    has_o = "o" in s.gates
    zsl, gsl = slice(0, H), slice(H, D)
    gates_if = [g for g in ("i", "f") if g in s.gates]
    fsl = {g: s.gate_slice(g) for g in s.gates}

    def shape(k: int, F: int) -> tuple[int, ...]:
        return (k, F, B) if lay.features else (k, B, F)

    def alive(v: Tensor, n: int) -> Tensor:  # the first n samples of a step tensor
        return v[:, :n] if lay.features else v[:n]

    def prev(V: Tensor, v0: Tensor | None, t0: int, t1: int) -> Tensor | None:
        """Steps t0-1 … t1-2 of V (each step's previous one), v0 at step -1."""
        if t0 > 0:
            return V[t0 - 1 : t1 - 1]
        return torch.cat([v0.unsqueeze(0), V[: t1 - 1]])

    # the backward's derivative factors, a chunk of steps at a time (here in forward order)
    Yhat = tt["Yh"] if (tt["Yh"] is not None or lay.features) else Y
    HC, Z, c0 = tt["HC"], tt["Z"], tt["c0"]
    chunks = gates.FactorChunks(s, alpha, A, HC, Z, C, c0, Yhat, sdim, bs, full, P)
    fold = chunks.fold is not None
    # the one place that picks the native loop (batch-major) or the loop below
    go_native = native.use_native(s, x, True, True)
    whole = False
    if _FORCED_CHUNK:
        chunks.chunk = chunks.rows = min(_FORCED_CHUNK[-1], T)
        cache = {}
    elif T * B * (s.n_q + 8 * H) * x.element_size() <= FACTOR_CACHE_BYTES:
        chunks.chunk = chunks.rows = T  # one chunk, formed once and kept in the tape's cache
        whole = True
        if "factors" not in cache and not go_native:
            cache["factors"] = chunks(0, T)
    k_max = min(chunks.chunk, T)
    new = x.new_empty if full else x.new_zeros  # dead samples stay 0
    dYo, dCo = new(*shape(T, Hr)), new(*shape(T, H))
    if go_native:  # the same steps in C++ (``engines/native``), a chunk at a time
        _r_forward_native(
            s, lay, tt, bs, dw, dP, dx, dh0, dc0, chunks, fold, whole, cache, dYo, dCo
        )  # fmt: skip
        return dYo, dCo
    dYs, dCs = layout.steps(dYo, bs, full, sdim), layout.steps(dCo, bs, full, sdim)
    E_buf = x.new_empty(shape(k_max, D))  # the carried-independent part of ȧ, one chunk
    EP_buf = x.new_empty(shape(k_max, Hr)) if W_p is not None else None
    dq_buf = x.new_empty(shape(1, s.n_q))[0] if fgr else None
    dyh_buf = x.new_empty(shape(1, H))[0] if W_p is not None else None
    dW_p = dw.get("W_p")

    y_prev, c_prev, q_prev = dh0, dc0, None  # ẏ, ċ, q̇ of step t-1 (None: zero)
    t1 = 0
    for t in range(T):
        n = bs[t]
        if n == 0:
            break
        if t >= t1:  # the next chunk: its factors and its carried-independent terms
            t0, t1 = t, min(T, t + k_max)
            fac = cache["factors"] if "factors" in cache else chunks(t0, t1)
            f_fc, f_ohp, f_igp, f_sa = fac.get("F_c"), fac["OHp"], fac["IGp"], fac["SA"]
            f_k = {g: fac[g] for g in s.gates}
            E = E_buf[: t1 - t0]
            _chunk_terms(E, s, lay, tt, dw, dP, dx, t0, t1, prev)
            Es = layout.steps(E, bs[t0:t1], full, sdim)
            if W_p is not None:
                EP = EP_buf[: t1 - t0]
                if dW_p is None:
                    EP.zero_()
                elif lay.features:
                    torch.matmul(dW_p, tt["Yh"][t0:t1], out=EP)
                else:
                    torch.matmul(tt["Yh"][t0:t1], dW_p.t(), out=EP)
                EPs = layout.steps(EP, bs[t0:t1], full, sdim)
        r = t - t0
        a = Es[r]  # ȧ_t, completed in place
        if y_prev is not None:  # the recurrent product(s)
            y_prev = alive(y_prev, n)
            if mult:  # R (mx_t ⊙ W_mh ẏ_{t-1})
                lay.addlin_(a, R, lay.lin(W_mh, y_prev).mul_(alive(tt["MX"][t], n)))
            else:
                lay.addlin_(a, R, y_prev)
        if q_prev is not None:  # full gate recurrence: Q q̇_{t-1}
            lay.addlin_(lay.rows(a, gsl), Q, alive(q_prev, n))
        if c_prev is not None:
            c_prev = alive(c_prev, n)
            if peep and not fold:  # P_{i,f} ċ_{t-1} (folded into F_c otherwise)
                for g in gates_if:
                    lay.rows(a, fsl[g]).add_(lay.block_sum(c_prev, P[g]))
        # ċ_t = F_c ċ_{t-1} + IGp ȧ_z + K_i ȧ_i + K_f ȧ_f
        dc, a_z = dCs[t], lay.rows(a, zsl)
        if c_prev is None:
            torch.mul(f_igp[r], a_z, out=dc)
        elif f_fc is None:
            torch.addcmul(c_prev, f_igp[r], a_z, out=dc)
        else:
            torch.mul(c_prev, f_fc[r], out=dc).addcmul_(f_igp[r], a_z)
        for g in gates_if:
            lay.gate_times_(dc, f_k[g][r], lay.rows(a, fsl[g]))
        # ŷ̇_t = OHp ċ_t + K_o ȧ_o, ẏ_t = Ẇ_p ŷ_t + W_p ŷ̇_t
        dy = dYs[t]
        dyh = dy if W_p is None else alive(dyh_buf, n)
        torch.mul(dc, f_ohp[r], out=dyh)
        if has_o:
            a_o = lay.rows(a, fsl["o"])
            if peep and not fold:  # P_o ċ_t (folded into OHp otherwise)
                a_o.add_(lay.block_sum(dc, P["o"]))
            lay.gate_times_(dyh, f_k["o"][r], a_o)
        if W_p is not None:
            torch.add(EPs[r], lay.lin(W_p, dyh), out=dy)
        if fgr:  # q̇_t = α σ'(·) ȧ_gates
            q_prev = torch.mul(lay.rows(a, gsl), f_sa[r], out=alive(dq_buf, n))
        y_prev, c_prev = dy, dc
    return dYo, dCo


def _r_forward_native(
    s: CellSpec, lay: _Layout, tt, bs, dw, dP, dx, dh0, dc0, chunks, fold, whole, cache, dY, dC
):
    """``_r_forward``'s loop in the native core: per chunk of steps, the carried-independent
    terms and the factors formed here (``whole``: one chunk, its factors kept in the tape's
    ``cache``), the steps run by ``native.rop_chunk`` in the tape's layout."""
    x, W_p = tt["x"], tt["W_p"]
    feats = lay.features
    T, B = x.shape[0], (x.shape[2] if feats else x.shape[1])
    k = chunks.chunk if not whole else T

    def shape(k: int, F: int) -> tuple[int, ...]:
        return (k, F, B) if feats else (k, B, F)

    def prev(V: Tensor, v0: Tensor | None, t0: int, t1: int) -> Tensor | None:
        if t0 > 0:
            return V[t0 - 1 : t1 - 1]
        return torch.cat([v0.unsqueeze(0), V[: t1 - 1]])

    # feature-major, no mLSTM, no input tangent: the core forms the carried-independent terms
    # itself, per step (E: one step's scratch); else _chunk_terms forms them a chunk at a time
    fused = feats and s.multiplicative_size is None and dx is None and not _UNFUSED
    E_buf = x.new_empty(shape(1 if fused else min(k, T), s.n_pre))
    EP_buf = x.new_empty(shape(min(k, T), s.recurrent_size)) if W_p is not None else None
    dq = x.new_zeros(shape(1, s.n_q)[1:]) if tt["Q"] is not None else None
    dyh = x.new_empty(shape(1, s.hidden_size)[1:]) if W_p is not None else None
    if whole and "factor_tensors" not in cache:
        cache["factor_tensors"] = {n: v.contiguous() for n, v in chunks.tensors(0, T).items()}
    for t0 in range(0, T, k):
        t1 = min(T, t0 + k)
        if bs[t0] == 0:
            break
        if whole:
            fac = cache["factor_tensors"]
        else:
            fac = {n: v.contiguous() for n, v in chunks.tensors(t0, t1).items()}
        if fused:
            E = E_buf
        else:
            E = E_buf[: t1 - t0]
            _chunk_terms(E, s, lay, tt, dw, dP, dx, t0, t1, prev)
        EP = None
        if W_p is not None:
            EP = EP_buf[: t1 - t0]
            if dw.get("W_p") is None:
                EP.zero_()
            elif feats:
                torch.matmul(dw["W_p"], tt["Yh"][t0:t1], out=EP)
            else:
                torch.matmul(tt["Yh"][t0:t1], dw["W_p"].t(), out=EP)
        terms = ({n: dw.get(n) for n in ("W", "b", "R", "Q")} | {"peep": dP}) if fused else None
        native.rop_chunk(
            s, feats, E, fac, tt, EP, dh0, dc0, dY, dC, dq, dyh, t0, bs[t0:t1], fold, terms
        )  # fmt: skip


def _chunk_terms(E: Tensor, s: CellSpec, lay: _Layout, tt, dw, dP, dx, t0: int, t1: int, prev):
    """E = the part of ȧ_t for steps t0 … t1-1 that does not depend on the carried derivatives:
    Ẇ x_t + W ẋ_t + ḃ + Ṙ y_{t-1} (mLSTM: Ṙ m_t + R ((Ẇ_mx x_t + W_mx ẋ_t) ⊙ u_t
    + mx_t ⊙ Ẇ_mh y_{t-1})), + Q̇ q_{t-1} and Ṗ c on the gate rows."""
    H, D = s.hidden_size, s.n_pre
    x = tt["x"][t0:t1]
    dW, dR, db = dw.get("W"), dw.get("R"), dw.get("b")
    mult = s.multiplicative_size is not None

    E.zero_()
    if db is not None:
        E.add_(lay.col(db))
    if dW is not None:
        lay.acc_(E, dW, x)
    if dx is not None:
        lay.acc_(E, tt["W"], dx[t0:t1])
    if mult:
        mdot = None
        if dw.get("W_mx") is not None:
            mdot = lay.lin(dw["W_mx"], x)
        if dx is not None:
            part = lay.lin(tt["W_mx"], dx[t0:t1])
            mdot = part if mdot is None else mdot.add_(part)
        if mdot is not None:
            mdot.mul_(tt["U"][t0:t1])
        if dw.get("W_mh") is not None:
            yp = prev(tt["Y"], tt["h0"], t0, t1)
            part = lay.lin(dw["W_mh"], yp).mul_(tt["MX"][t0:t1])
            mdot = part if mdot is None else mdot.add_(part)
        if mdot is not None:
            lay.acc_(E, tt["R"], mdot)
        if dR is not None:
            lay.acc_(E, dR, tt["Mm"][t0:t1])
    elif dR is not None:
        lay.acc_(E, dR, prev(tt["Y"], tt["h0"], t0, t1))
    if dw.get("Q") is not None and t1 > 1:  # q_{-1} = 0
        a0 = max(t0, 1)
        lay.acc_(lay.rows(E[a0 - t0 :], slice(H, D)), dw["Q"], tt["A"][a0 - 1 : t1 - 1])
    for g, p in dP.items():
        if p is None:
            continue
        rows = lay.rows(E, s.gate_slice(g))
        if g == "o":  # the output gate sees c_t
            rows.add_(lay.block_sum(tt["C"][t0:t1], p))
        else:  # i and f see c_{t-1}
            cp = prev(tt["C"], tt["c0"], t0, t1)
            rows.add_(lay.block_sum(cp, p))
