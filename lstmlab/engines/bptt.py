"""Matrix-based full BPTT with a hand-written backward pass (seed 000 Sec. 3.3, Eqs. 13–18).

This engine is the project's subject and is written by hand. The whole batch goes through the
recurrence at once (seed 000 puts nodes in rows and samples in columns; so does this module's
``LSTMLayerBPTT``, the feature-major layout; ``bptt_rows`` holds the batch-major twin for wide
layers, and ``run`` picks one by shape and dtype, see ``choose_layout``). Forward, per step:
the input part W x_t + b of the pre-activations (batch-major: one large product per chunk of
steps), one recurrent product R y_{t-1} added to it in place (mLSTM: two; one more with full
gate recurrence or a projection), and elementwise work: the gates and, on the CPU, the
tanh-family activations go through one sigmoid call (see ``_SIGMOID_FORM``). Backward runs in
reverse time computing the error responsibilities (Eqs. 13–17, generalised to every variant)
from derivative factors formed a chunk of steps at a time (``_FactorChunks``), writing δ of
every step into one (T, D, B) tensor; the weight gradients of Eq. 18 are then one large
product each after the loop:

    dW = Σ_t δ_tᵀ x_t        dR = Σ_t δ_tᵀ y_{t-1}        db = Σ_t δ_t      dx_t = δ_t W

F-LSTM and G-LSTM (seed 004) arrive as their factors / groups and run their own products
(``engines/structured.py``: W1 then W2, k batched group products) in place of W x_t, R y_{t-1},
their transposes and dW, dR, dx; everything else is the same loop.

Unequal lengths: the batch is sorted by length (descending) so that at step t only the first
n_t samples are alive; they are processed as a slice, the rest are left untouched.
Outputs at padded steps are zero, and (h_n, c_n) is each sequence's state at its last valid
step — the semantics of packed sequences. Gradients of the final state enter at each row's
last valid step automatically, because a sample's carried gradient is not touched after it dies.

Backward pass in the notation of ``lstmlab.nn.lstm_cell`` (per step, samples alive at t; written
with row vectors, as in the paper):

    dy      = ∂E/∂y_t (output) + carried dy_{t}          dŷ = dy W_p (projection) or dy
    do      = Σ_cells dŷ ⊙ h(c_t) (+ dq_o)               δ_o = do ⊙ α_o o(1-o)
    dc      = carried dc_t + dŷ ⊙ o ⊙ h'(c_t) + P_o δ_o
    di      = Σ_cells dc ⊙ z (− Σ_cells dc ⊙ c_{t-1} for CIFG) (+ dq_i)   δ_i = di ⊙ α_i i(1-i)
    df      = Σ_cells dc ⊙ c_{t-1} (+ dq_f)                              δ_f = df ⊙ α_f f(1-f)
    δ_z     = dc ⊙ i ⊙ g'(z)
    dc_{t-1} = dc ⊙ f + P_i δ_i + P_f δ_f,   dy_{t-1} = δ R  (mLSTM: (δ R ⊙ W_mx x_t) W_mh),
    dq_{t-1} = δ_gates Q
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor

from lstmlab.engines import structured
from lstmlab.engines.packing import sort_by_length
from lstmlab.nn.activations import derivative_from_output
from lstmlab.nn.variants import CellSpec

# The block-input and cell-output activations of the tanh family are affine maps of a logistic
# sigmoid, f(a) = k σ(s a) − k/2:
#     tanh(a) = 2σ(2a) − 1        bipolar1(a) = 2σ(a) − 1        bipolar2(a) = 4σ(a) − 2
# On the CPU the engine evaluates them this way: torch's CPU tanh costs 2.8 / 5.2 ns per float32 /
# float64 element, its sigmoid 0.5 / 1.5 (`bench_lstm.py --sections activations`), and σ(s a)
# then also joins the gates' sigmoid call. The result differs from torch.tanh by at most 2 units in the last place of
# 1 (absolute). Elsewhere (CUDA) they are k' tanh(s' a) with the constants of _TANH_FORM.
# The argument scale s (or s') of the block input is folded into the weights like α.
_SIGMOID_FORM = {"tanh": (2.0, 2.0), "bipolar1": (1.0, 2.0), "bipolar2": (1.0, 4.0)}  # (s, k)
_TANH_FORM = {"tanh": (1.0, 1.0), "bipolar1": (0.5, 1.0), "bipolar2": (0.5, 2.0)}  # (s', k')


def _sigmoid_form(t: Tensor) -> bool:
    """Whether the tanh-family activations of tensors like ``t`` go through a sigmoid."""
    return t.device.type == "cpu"


def _z_scale(name: str, sigmoid_form: bool) -> float:
    """The factor folded into the block-input rows of W, R, b for activation ``name``."""
    if name == "identity":
        return 1.0
    return (_SIGMOID_FORM if sigmoid_form else _TANH_FORM)[name][0]


def _scaled_rows(t, spec: CellSpec, alpha: dict[str, float], offset: int, zs: float = 1.0):
    """t with each gate's rows multiplied by its α and the block-input rows by ``zs``, the
    activation's argument scale (rows counted from ``offset``; forward-only copies).

    σ_α(a) = σ(α a), and a is linear in W, R, b, P, Q: scaling the rows once per call saves one
    elementwise multiply per gate per step."""
    if t is None or (zs == 1.0 and all(alpha[g] == 1.0 for g in spec.gates)):
        return t
    scale = torch.ones(t.shape[0], dtype=t.dtype, device=t.device)
    if offset == 0:
        scale[: spec.hidden_size] = zs
    for g in spec.gates:
        sl = spec.gate_slice(g)
        scale[sl.start - offset : sl.stop - offset] = alpha[g]
    return t * scale.view(-1, *([1] * (t.dim() - 1)))


def _forward_weights(s: CellSpec, alpha, W, R, b, Q, P_i, P_f, P_o):
    """Forward-only copies of the weights with each gate's rows scaled by its α and the
    block-input rows by the activation's argument scale: (W, R, b, Q, {gate: peephole})."""
    zs = _z_scale(s.g, _sigmoid_form(W))
    Ws, Rs, bsc = (_scaled_rows(t, s, alpha, 0, zs) for t in (W, R, b))
    Qs = _scaled_rows(Q, s, alpha, s.hidden_size)
    Ps = {g: (p if p is None else p * alpha[g]) for g, p in (("i", P_i), ("f", P_f), ("o", P_o))}
    return Ws, Rs, bsc, Qs, Ps


_OFFSETS: dict[tuple, Tensor] = {}


def _affine(k: float, like: Tensor) -> Callable[[Tensor], Tensor]:
    """v ↦ (v ← k v − k/2) in one pass: a cached 0-dim −k/2 plus k·v (a Python scalar would be
    copied into a tensor on every call)."""
    key = (k, like.dtype, like.device)
    c = _OFFSETS.get(key)
    if c is None:
        c = _OFFSETS[key] = torch.tensor(-k / 2, dtype=like.dtype, device=like.device)

    def affine_(v: Tensor) -> Tensor:
        return torch.add(c, v, alpha=k, out=v)

    return affine_


def _activation(
    name: str, like: Tensor, prescaled: bool = False
) -> Callable[[Tensor, Tensor], Tensor]:
    """(a, out) ↦ out = f(a) for the block-input / cell-output activation ``name`` on tensors
    like ``like``, its constants resolved once (the step loops call it T times). ``prescaled``:
    the argument scale is already folded into the weights (see ``_forward_weights``)."""
    if name == "identity":
        return lambda a, out: out if out is a else out.copy_(a)
    if _sigmoid_form(like):
        s, k = _SIGMOID_FORM[name]
        affine_ = _affine(k, like)
        if s != 1.0 and not prescaled:  # s = 2 (tanh): σ(a + a)

            def f(a: Tensor, out: Tensor) -> Tensor:
                return affine_(torch.sigmoid(torch.add(a, a, out=out), out=out))

        else:

            def f(a: Tensor, out: Tensor) -> Tensor:
                return affine_(torch.sigmoid(a, out=out))

        return f
    s, k = _TANH_FORM[name]

    def f_tanh(a: Tensor, out: Tensor) -> Tensor:
        if s != 1.0 and not prescaled:
            a = torch.mul(a, s, out=out)
        torch.tanh(a, out=out)
        return out if k == 1.0 else out.mul_(k)

    return f_tanh


def _sigmoid_span(s: CellSpec, sigmoid_form: bool) -> tuple[int, int]:
    """Pre-activation rows [lo, hi) activated by one sigmoid call right after the recurrent
    product: the gates that do not see c_t (all of them without peepholes; i and f with), and
    the block input too when its activation is of the sigmoid form (then rows [0, H) still need
    ``_affine``). The rest (the block input otherwise, o with peepholes) is done on its own."""
    H = s.hidden_size
    lo = 0 if (sigmoid_form and s.g != "identity") else H
    if not s.peepholes or "o" not in s.gates:
        hi = s.n_pre
    else:
        hi = s.gate_slice("o").start
    return lo, hi


def _times_derivative(
    name: str, y: Tensor, w: Tensor | None, out: Tensor | None = None, wy: Tensor | None = None
) -> Tensor:
    """w ⊙ f'(x) from y = f(x), in as few passes as possible (w = None: f'(x) alone).

    ``out``: where to write it (a new tensor if None). ``wy``: w ⊙ y when the caller has it
    already (the cell output y = o ⊙ h(c) is o times the h(c) whose derivative is wanted); it
    saves one pass."""
    if w is None:
        d = derivative_from_output(name, y)
        return d if out is None else out.copy_(d)
    if name == "identity":
        return w if out is None else out.copy_(w)
    if wy is None:
        wy = torch.mul(w, y) if out is None else torch.mul(w, y, out=out)
    value = -0.25 if name == "bipolar2" else -1.0  # w (1 - y²/4), else w (1 - y²)
    r = (
        torch.addcmul(w, wy, y, value=value)
        if out is None
        else torch.addcmul(w, wy, y, value=value, out=out)
    )
    return r.mul_(0.5) if name == "bipolar1" else r  # bipolar1: w (1 - y²)/2


class LSTMLayerBPTT(torch.autograd.Function):
    """One layer-direction over a whole (sorted) batch; see the module docstring.

    Inputs: x (T, B, I) sorted by length (descending), h0 (B, Hr), c0 (B, H), and the dense
    weights of ``LSTMCell.weights``. ``batch_sizes``: list of n_t (rows alive at step t), or
    None when every sequence has length T. Outputs: Y (T, B, Hr), C (T, B, H), h_n, c_n.

    Layout: inside the engine every per-step quantity is feature-major, (features, B), so that a
    gate's or a cell group's slice is a contiguous block whose rows run over the whole batch (a
    (B, D) layout would make every gate slice a short strided row — slow elementwise loops when
    the network is small, as in the long time-lag problems). Forward keeps ZAT = [g(z-pre) |
    gate activations (= q_t)], in which each step's pre-activations are formed and activated in
    place, CT, HCT = h(C), YT (and ŷ with a projection, u = W_mh y and m for mLSTM), all
    (T, ·, B). Backward first forms, over all steps at once, the derivative
    factors that do not depend on the carried error (α σ(1−σ), o h'(c), i g'(z), …), so that
    each reverse step is a handful of multiply-adds and one recurrent product.
    """

    @staticmethod
    def forward(
        ctx, spec, alpha, batch_sizes, x, h0, c0, W, R, b, W_mx, W_mh, P_i, P_f, P_o, Q, W_p
    ):
        s: CellSpec = spec
        T, B, I = x.shape
        H, nb, cpb, Hr = s.hidden_size, s.blocks, s.cells_per_block, s.recurrent_size
        D = s.n_pre
        bs = batch_sizes if batch_sizes is not None else [B] * T
        full = batch_sizes is None
        Ws, Rs, bsc, Qs, Ps = _forward_weights(s, alpha, W, R, b, Q, P_i, P_f, P_o)
        # F-LSTM / G-LSTM given as their factors / groups: their own products (``structured``,
        # on row views: (n, features) = this layout's (features, n) transposed)
        smap = structured.make(s, alpha, W, R, x, bsc, _z_scale(s.g, _sigmoid_form(x)))
        xT = x.transpose(1, 2)  # (T, I, B)
        mult = s.multiplicative_size is not None
        # Per step, W x_t + b is written into that step's rows of ZAT (x_t enters the product
        # as a transposed operand, not copied), the recurrent product R y_{t-1} (mLSTM: R m_t)
        # is added to it, and the activations overwrite it.
        # every entry is written when all sequences are full-length; else dead columns must be 0
        new = x.new_empty if full else x.new_zeros
        YT, CT, HCT = new(T, Hr, B), new(T, H, B), new(T, H, B)
        # [g(z) | gate activations] of every step, in the pre-activation rows (dead columns stay
        # 0: the weight-gradient products meet them, with δ = 0, and 0 · garbage may be NaN)
        ZAT = new(T, D, B)
        ZT, AT = ZAT[:, :H], ZAT[:, H:]
        YhT = new(T, H, B) if W_p is not None else None
        if mult:
            M = s.multiplicative_size
            MXT = torch.matmul(W_mx, xT)  # (T, M, B)
            UT, MmT = new(T, M, B), new(T, M, B)
        has_i, has_f, has_o = ("i" in s.gates), ("f" in s.gates), ("o" in s.gates)
        # one sigmoid call right after the product covers rows [lo, hi) (see _sigmoid_span)
        lo, hi = _sigmoid_span(s, _sigmoid_form(x))
        act_g, act_h = _activation(s.g, x, prescaled=True), _activation(s.h, x)
        z_affine_ = _affine(_SIGMOID_FORM[s.g][1], x) if lo == 0 else None
        if_gates = [g for g in ("i", "f") if g in s.gates] if s.peepholes else []
        o_late = has_o and s.peepholes  # the output gate sees c_t

        # per-step views, restricted to the columns alive, made once: the loop indexes lists
        def steps(v: Tensor) -> list[Tensor] | tuple[Tensor, ...]:
            return _steps(v, bs, full, 1)

        PRE, Zs, Cs, HCs, Ys = steps(ZAT), steps(ZT), steps(CT), steps(HCT), steps(YT)
        xTs = steps(xT)
        b_col = bsc.view(D, 1) if bsc is not None else x.new_zeros(D, 1)
        SIG = steps(ZAT[:, lo:hi]) if hi > lo else None
        Yhs = steps(YhT) if YhT is not None else Ys
        AI = steps(AT[:, s.q_slice("i")]) if has_i else None
        AF = steps(AT[:, s.q_slice("f")]) if has_f else None
        AO = steps(AT[:, s.q_slice("o")]) if has_o else None
        if Qs is not None:
            AG = steps(AT)  # rows [H, D) of a step: the gates' pre-activations, then activations
        if mult:
            MXs, Us, Ms = steps(MXT), steps(UT), steps(MmT)
        if if_gates:
            lo_if, hi_if = s.gate_slice(if_gates[0]).start, s.gate_slice(if_gates[-1]).stop
            PIF = steps(ZAT[:, lo_if:hi_if])
            P_if = torch.stack([Ps[g] for g in if_gates])  # (gates, nb, cpb)
            P_if = P_if.view(len(if_gates), nb, 1) if cpb == 1 else P_if.unsqueeze(-1)
        if o_late:
            P_o3 = Ps["o"].view(nb, 1) if cpb == 1 else Ps["o"].unsqueeze(-1)  # (nb, [cpb,] 1)
        y_prev, c_prev = h0.t(), c0.t()  # (Hr, B), (H, B)
        for t in range(T):
            n = bs[t]
            if n == 0:
                break
            if not full:
                y_prev, c_prev = y_prev[:, :n], c_prev[:, :n]
            pre, z, c, hc = PRE[t], Zs[t], Cs[t], HCs[t]
            if smap is not None:  # the whole affine map, structured
                smap.step(t, pre.t(), y_prev.t())
            else:
                torch.addmm(b_col, Ws, xTs[t], out=pre)  # W x_t + b (x_t: a transposed operand)
                if mult:
                    u = torch.mm(W_mh, y_prev, out=Us[t])
                    pre.addmm_(Rs, torch.mul(MXs[t], u, out=Ms[t]))
                else:
                    pre.addmm_(Rs, y_prev)
            if Qs is not None and t > 0:
                AG[t].addmm_(Qs, AG[t - 1] if full else AG[t - 1][:, :n])
            if if_gates:  # peepholes from c_{t-1}
                p_if = PIF[t].view(len(if_gates), nb, n)
                if cpb == 1:
                    p_if.addcmul_(c_prev.view(1, nb, n), P_if)
                else:
                    p_if.add_((c_prev.view(1, nb, cpb, n) * P_if).sum(2))
            if lo == H:
                act_g(z, z)
            if SIG is not None:
                SIG[t].sigmoid_()
            if z_affine_ is not None:
                z_affine_(z)
            i = AI[t] if has_i else None  # (nb, n)
            f = AF[t] if has_f else None  # CIFG has no f rows: f = 1 − i
            if s.coupled:  # c = (1 − i) c_{t-1} + i z = lerp(c_{t-1}, z, i): one pass
                if cpb == 1:
                    torch.lerp(c_prev, z, i, out=c)
                else:
                    c3, z3, cp3 = c.view(nb, cpb, n), z.view(nb, cpb, n), c_prev.view(nb, cpb, n)
                    torch.lerp(cp3, z3, i.unsqueeze(1), out=c3)
            elif cpb == 1:
                if f is None:
                    torch.add(c_prev, z if i is None else i * z, out=c)
                else:
                    torch.mul(f, c_prev, out=c)
                    c.add_(z) if i is None else c.addcmul_(i, z)
            else:
                c3, z3, cp3 = c.view(nb, cpb, n), z.view(nb, cpb, n), c_prev.view(nb, cpb, n)
                if f is None:
                    torch.add(cp3, z3 if i is None else i.unsqueeze(1) * z3, out=c3)
                else:
                    torch.mul(f.unsqueeze(1), cp3, out=c3)
                    c3.add_(z3) if i is None else c3.addcmul_(i.unsqueeze(1), z3)
            act_h(c, hc)
            y_hat = Yhs[t]
            if has_o:
                o = AO[t]
                if o_late:  # o still holds its pre-activation: add c_t's peepholes, activate
                    if cpb == 1:
                        o.addcmul_(c, P_o3)
                    else:
                        o.add_((c.view(nb, cpb, n) * P_o3).sum(1))
                    o.sigmoid_()
                if cpb == 1:
                    torch.mul(o, hc, out=y_hat)
                else:
                    torch.mul(o.unsqueeze(1), hc.view(nb, cpb, n), out=y_hat.view(nb, cpb, n))
            else:
                y_hat.copy_(hc)
            if W_p is not None:
                torch.mm(W_p, y_hat, out=Ys[t])
            y_prev, c_prev = Ys[t], c
        Y, C = YT.transpose(1, 2).contiguous(), CT.transpose(1, 2).contiguous()  # (T, B, ·)
        if full:
            h_n, c_n = Y[-1].clone(), C[-1].clone()
        else:
            last = _last_index(bs, B, x.device)
            rows = torch.arange(B, device=x.device)
            h_n, c_n = Y[last, rows], C[last, rows]
        ctx.spec, ctx.alpha, ctx.bs = s, alpha, batch_sizes
        ctx.save_for_backward(x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y)
        ctx.CT, ctx.ZT, ctx.AT, ctx.HCT, ctx.YhT = CT, ZT, AT, HCT, YhT
        ctx.smap = smap
        if mult:
            ctx.MXT, ctx.UT, ctx.MmT = MXT, UT, MmT
        ctx.has_b = b is not None
        ctx.set_materialize_grads(False)  # unused outputs (often C, h_n, c_n) arrive as None
        return Y, C, h_n, c_n

    @staticmethod
    def backward(ctx, dY, dC, dh_n, dc_n):
        x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y = ctx.saved_tensors
        s: CellSpec = ctx.spec
        alpha, batch_sizes = ctx.alpha, ctx.bs
        CT, ZT, AT, HCT, YhT = ctx.CT, ctx.ZT, ctx.AT, ctx.HCT, ctx.YhT
        T, B, I = x.shape
        H, nb, cpb, Hr, G, D = (
            s.hidden_size, s.blocks, s.cells_per_block, s.recurrent_size, s.n_q, s.n_pre,
        )  # fmt: skip
        full = batch_sizes is None
        bs = batch_sizes if batch_sizes is not None else [B] * T
        mult = s.multiplicative_size is not None
        fgr, peep = Q is not None, s.peepholes
        c0T = c0.t()

        # ---- derivative factors (α σ(1−σ), o h'(c), i g'(z), …) that do not depend on the
        # carried error, a chunk of steps at a time (see ``_FactorChunks``)
        P = {"i": P_i, "f": P_f, "o": P_o}
        chunks = _FactorChunks(s, alpha, AT, HCT, ZT, CT, c0T, YhT, 1, bs, full, P)
        chunk, fold = chunks.chunk, chunks.fold

        new = x.new_empty if full else x.new_zeros  # dead columns must stay 0

        def steps_side_by_side(K: int) -> Tensor:
            """A (T, K, B) view of (K, T, B) storage: step t is a (K, B) slice, and the steps
            laid side by side, (K, T·B), are a free view for the weight-gradient products."""
            return new(K, T, B).permute(1, 0, 2)

        dPre = steps_side_by_side(D)  # δ of every step
        DYT = steps_side_by_side(Hr) if W_p is not None else None
        if mult:
            MXT, UT = ctx.MXT, ctx.UT
            M = MXT.shape[1]
            dUT, dMXT = steps_side_by_side(M), steps_side_by_side(M)
        # at the top of step t, dy_next holds ∂E/∂y_t of the columns alive: carried + output
        dy_next = dh_n.t().contiguous() if dh_n is not None else x.new_zeros(Hr, B)
        dc_next = dc_n.t().contiguous() if dc_n is not None else x.new_zeros(H, B)
        dq_next = x.new_zeros(G, B) if fgr else None
        dc_buf = x.new_empty(H, B)
        dyh_buf = x.new_empty(H, B) if W_p is not None else None
        smap = ctx.smap
        if smap is not None:
            smap.begin_backward(full)
        Rt, Qt = (R.t() if smap is None else None), (Q.t() if fgr else None)
        P3 = {
            g: (p.view(nb, 1) if cpb == 1 else p.unsqueeze(-1))
            for g, p in P.items()
            if p is not None
        }

        # per-step views, restricted to the columns alive, made once: the loop indexes lists
        def steps(v: Tensor) -> list[Tensor] | tuple[Tensor, ...]:
            return _steps(v, bs, full, 1)

        dPres, dPz = steps(dPre), steps(dPre[:, :H])
        dPg = {g: steps(dPre[:, s.gate_slice(g)]) for g in s.gates}
        qs = {g: s.q_slice(g) for g in s.gates}
        dPgates = steps(dPre[:, H:]) if fgr else None
        dYs = steps(dY.transpose(1, 2)) if dY is not None else None  # (Hr, n) views
        dCs = steps(dC.transpose(1, 2)) if dC is not None else None
        DYs = steps(DYT) if DYT is not None else None
        if mult:
            MXs, Us, dUs, dMXs = steps(MXT), steps(UT), steps(dUT), steps(dMXT)
        n_after = 0  # columns alive at step t + 1
        t0 = T
        for t in reversed(range(T)):
            n = bs[t]
            if n == 0:
                continue
            if t < t0:  # the next chunk of factors, steps [t0, t]
                t0 = max(0, t + 1 - chunk)
                fac = chunks(t0, t + 1)
                f_ohp, f_igp, f_fc, f_sa = fac["OHp"], fac["IGp"], fac.get("F_c"), fac.get("SA")
                # each gate: (name, its δ rows in dPre, its factor K_g); o first: it feeds dc
                f_gates = [(g, dPg[g], fac[g]) for g in ("o", "i", "f") if g in qs]
            r = t - t0
            dpre = dPres[t]
            dy = dyn = dy_next if full else dy_next[:, :n]
            dcn = dc_next if full else dc_next[:, :n]
            if dYs is not None and n > n_after:  # columns whose last step is t: output error
                dy_next[:, n_after:n] += dYs[t][:, n_after:n]
            if W_p is not None:
                DYs[t].copy_(dy)
                dy = torch.mm(W_p.t(), dy, out=dyh_buf[:, :n])  # dŷ
            dc = torch.addcmul(dcn, dy, f_ohp[r], out=dc_buf[:, :n])
            if dCs is not None:
                dc += dCs[t]
            for g, dP, K in f_gates:  # δ_g = Σ_cells d ⊙ K_g, written into dPre
                d, out = (dy if g == "o" else dc), dP[t]
                if cpb == 1:
                    torch.mul(d, K[r], out=out)
                else:
                    torch.sum((d * K[r]).view(nb, cpb, n), 1, out=out)
                if fgr:  # + dq_g α σ'(·)
                    out.addcmul_(dq_next[qs[g], :n], f_sa[r][qs[g]])
                if g == "o" and peep and not fold:
                    _add_peep_fm(dc, out, P3["o"], n, nb, cpb)
            torch.mul(dc, f_igp[r], out=dPz[t])
            # carried to step t-1
            if f_fc is None:
                dcn.copy_(dc)
            else:
                torch.mul(dc, f_fc[r], out=dcn)
            if peep and not fold:
                for g, dP, _ in f_gates:
                    if g != "o":
                        _add_peep_fm(dcn, dP[t], P3[g], n, nb, cpb)
            if fgr:
                torch.mm(Qt, dPgates[t], out=dq_next[:, :n])
            dY_prev = dYs[t - 1][:, :n] if (dYs is not None and t > 0) else None  # folded in
            if mult:
                dm = Rt @ dpre  # (M, n)
                du = torch.mul(dm, MXs[t], out=dUs[t])
                torch.mul(dm, Us[t], out=dMXs[t])
                if dY_prev is None:
                    torch.mm(W_mh.t(), du, out=dyn)
                else:
                    torch.addmm(dY_prev, W_mh.t(), du, out=dyn)
            elif smap is not None:
                smap.back_step(t, dpre.t(), dyn.t(), None if dY_prev is None else dY_prev.t())
            elif dY_prev is None:
                torch.mm(Rt, dpre, out=dyn)
            else:
                torch.addmm(dY_prev, Rt, dpre, out=dyn)
            n_after = n
        # ---- Eq. 18: weight gradients as a few large products after the time loop, on the
        # steps laid side by side: column (t, b) of a (features, T·B) matrix
        need = ctx.needs_input_grad
        grads = dict.fromkeys(
            ["x", "h0", "c0", "W", "R", "b", "W_mx", "W_mh", "P_i", "P_f", "P_o", "Q", "W_p"]
        )

        def accumulate(d: Tensor, v: Tensor, v0: Tensor | None = None) -> Tensor:
            """Σ_t d_t v_t (or Σ_t d_t v_{t-1} with v_{-1} = v0): d (T, K, B), v (T, B, N), as
            one product over the steps laid side by side: d is stored that way (a free (K, T·B)
            view), v is contiguous (a free (T·B, N) view)."""
            d2, N = d.permute(1, 0, 2).reshape(d.shape[1], T * B), v.shape[2]
            if v0 is None:
                return d2 @ v.reshape(T * B, N)
            out = d2[:, :B] @ v0  # step 0 meets v_{-1} = v0, step t meets v_{t-1}
            return out.addmm_(d2[:, B:], v[:-1].reshape((T - 1) * B, N)) if T > 1 else out

        if smap is not None:  # dx, dW, dR from the map's own intermediates
            dPre2 = dPre.transpose(1, 2).reshape(T * B, D)  # (T·B, D) rows: a free view
            dx, grads["W"], grads["R"] = smap.grads(dPre2, x, Y, h0, need[3], need[6], need[7])
            grads["x"] = dx
            need = list(need)
            need[3] = need[6] = need[7] = False
        if need[3]:
            dx = x.new_empty(T, B, I)
            for t in range(T):
                torch.mm(dPre[t].t(), W, out=dx[t])
                if mult:
                    dx[t].addmm_(dMXT[t].t(), W_mx)
            grads["x"] = dx
        grads["h0"] = dy_next.t() if need[4] else None
        grads["c0"] = dc_next.t() if need[5] else None
        if need[6]:
            grads["W"] = accumulate(dPre, x)
        if need[7]:
            grads["R"] = (
                accumulate(dPre, ctx.MmT.transpose(1, 2)) if mult else accumulate(dPre, Y, h0)
            )
        if need[8] and ctx.has_b:
            grads["b"] = dPre.sum((0, 2))
        if mult:
            if need[9]:
                grads["W_mx"] = accumulate(dMXT, x)
            if need[10]:
                grads["W_mh"] = accumulate(dUT, Y, h0)
        if peep:
            for k, g in ((11, "i"), (12, "f"), (13, "o")):
                if g in s.gates and need[k]:
                    d_g = dPre[:, s.gate_slice(g)]  # (T, nb, B)
                    if g == "o":  # the output gate sees c_t
                        grads["P_o"] = _peep_grad(d_g, CT, nb, cpb)
                    else:  # i and f see c_{t-1}: step 0 meets c0
                        P_g = _peep_grad(d_g[:1], c0T.unsqueeze(0), nb, cpb)
                        grads[f"P_{g}"] = (
                            P_g + _peep_grad(d_g[1:], CT[:-1], nb, cpb) if T > 1 else P_g
                        )
        if fgr and need[14]:
            q0 = x.new_zeros(B, G)  # q_{-1} = 0
            grads["Q"] = accumulate(dPre[:, H:], AT.transpose(1, 2), q0)
        if W_p is not None and need[15]:
            grads["W_p"] = accumulate(DYT, YhT.transpose(1, 2))
        return (None, None, None, *grads.values())


def _factors(
    s: CellSpec,
    alpha: dict[str, float],
    A_: Tensor,
    HC_: Tensor,
    Z_: Tensor,
    Cp_: Tensor,
    Yhat_: Tensor | None,
    fdim: int,
    buf: Callable[[str, int], Tensor],
    fold: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The derivative factors of a chunk of steps that do not depend on the carried error:
    SA = α σ(1−σ) of every gate, OHp = ∂y/∂c = o h'(c), IGp = ∂c/∂z-pre = i g'(z), K_g = ∂c/∂g
    (or ∂y/∂o) times α σ'(·) for each gate g, and F_c = ∂c_t/∂c_{t-1}.

    A_, HC_, Z_, Cp_ (c_{t-1}), Yhat_ (o ⊙ h(c), or None) are the chunk's saved tensors with
    the features on dimension ``fdim`` (-1 batch-major, 1 feature-major); ``buf(name, width)``
    gives a reusable output of the chunk's shape with ``width`` features. ``fold``: the
    peepholes {gate: P}, shaped to broadcast at cell level, when they can be folded in (one
    cell per block, no full gate recurrence): P_o δ_o = dy ⊙ P_o K_o joins OHp and
    P_i δ_i + P_f δ_f = dc ⊙ (P_i K_i + P_f K_f) joins F_c, so the reverse step does not
    pay three more multiply-adds."""
    H, cpb = s.hidden_size, s.cells_per_block
    has_i, has_f, has_o = ("i" in s.gates), ("f" in s.gates), ("o" in s.gates)

    def sel(t: Tensor, gate: str) -> Tensor:  # gate's block-level slice, broadcast to cells
        g = t.narrow(fdim, s.q_slice(gate).start, s.blocks)
        return g if cpb == 1 else g.repeat_interleave(cpb, dim=fdim)

    SA = torch.addcmul(A_, A_, A_, value=-1.0, out=buf("SA", s.n_q))  # σ(1-σ), × α per gate
    for g in s.gates:
        if alpha[g] != 1.0:
            SA.narrow(fdim, s.q_slice(g).start, s.blocks).mul_(alpha[g])
    out = {"SA": SA}
    i_c = sel(A_, "i") if has_i else None
    if has_o:
        out["OHp"] = _times_derivative(s.h, HC_, sel(A_, "o"), out=buf("OHp", H), wy=Yhat_)
        out["o"] = torch.mul(HC_, sel(SA, "o"), out=buf("o", H))  # h(c) α o(1-o)
    else:
        out["OHp"] = _times_derivative(s.h, HC_, None, out=buf("OHp", H))
    out["IGp"] = _times_derivative(s.g, Z_, i_c, out=buf("IGp", H))
    if has_i:
        K_i = Z_ - Cp_ if s.coupled else Z_  # ∂c/∂i
        out["i"] = torch.mul(K_i, sel(SA, "i"), out=buf("i", H))
    if has_f:
        out["f"] = torch.mul(Cp_, sel(SA, "f"), out=buf("f", H))
    if s.coupled:
        out["F_c"] = 1.0 - i_c
    elif has_f:
        out["F_c"] = sel(A_, "f")
    if fold:
        if has_o:
            out["OHp"].addcmul_(out["o"], fold["o"])
        folded = [g for g in ("i", "f") if g in s.gates]
        if folded:
            F = buf("F_peep", H)
            if "F_c" in out:
                torch.addcmul(out["F_c"], out[folded[0]], fold[folded[0]], out=F)
            else:  # no forget gate: ∂c_t/∂c_{t-1} = 1
                F.fill_(1.0).addcmul_(out[folded[0]], fold[folded[0]])
            for g in folded[1:]:
                F.addcmul_(out[g], fold[g])
            out["F_c"] = F
    return out


class _FactorChunks:
    """The backward's derivative factors (``_factors``) a chunk of steps at a time, in buffers
    reused by every chunk, for either layout (``fdim``: the feature dimension of the saved
    (T, ·, ·) tensors, -1 batch-major, 1 feature-major). ``chunks(t0, t1)`` returns, per factor,
    the views of steps t0 … t1-1, each restricted to the samples alive (``bs``). A chunk is
    sized to stay in the cache until the reverse loop has used it; ``fold`` is the peepholes'
    shape for folding their errors into the factors, or None where they cannot be."""

    def __init__(self, s: CellSpec, alpha, A, HC, Z, C, c0, Yhat, fdim: int, bs, full, P):
        T = A.shape[0]
        B = A.shape[2] if fdim == 1 else A.shape[1]
        self.s, self.alpha, self.fdim, self.bs, self.full = s, alpha, fdim, bs, full
        self.saved = (A, HC, Z, C, c0, Yhat)
        self.chunk = _chunk_steps(max(s.hidden_size, s.n_q) * B * A.element_size())
        self.rows = min(self.chunk, T)
        self.work: dict[str, Tensor] = {}
        self.fold = None
        if s.peepholes and s.cells_per_block == 1 and not s.fgr:
            shape = (s.blocks, 1) if fdim == 1 else (1, s.blocks)
            self.fold = {g: p.view(shape) for g, p in P.items() if p is not None}

    def __call__(self, t0: int, t1: int) -> dict[str, list[Tensor] | tuple[Tensor, ...]]:
        out = self.tensors(t0, t1)
        return {k: _steps(v, self.bs[t0:t1], self.full, fdim=self.fdim) for k, v in out.items()}

    def tensors(self, t0: int, t1: int) -> dict[str, Tensor]:
        """The factors of steps t0 … t1-1 as (t1 - t0, ·, ·) tensors (every sample)."""
        A, HC, Z, C, c0, Yhat = self.saved
        fdim, work = self.fdim, self.work

        def buf(name: str, width: int) -> Tensor:
            if name not in work:
                B = A.shape[2] if fdim == 1 else A.shape[1]
                shape = (self.rows, width, B) if fdim == 1 else (self.rows, B, width)
                work[name] = A.new_empty(shape)
            return work[name][: t1 - t0]

        Cp = C[t0 - 1 : t1 - 1] if t0 > 0 else torch.cat([c0.unsqueeze(0), C[: t1 - 1]])
        Yh = Yhat[t0:t1] if Yhat is not None else None
        return _factors(
            self.s, self.alpha, A[t0:t1], HC[t0:t1], Z[t0:t1], Cp, Yh, fdim, buf, self.fold
        )


def _steps(v: Tensor, bs: list[int], full: bool, fdim: int) -> list[Tensor] | tuple[Tensor, ...]:
    """The step views v[t] of a (T, ·, ·) tensor, each restricted to the n_t = bs[t] samples
    alive: the last dimension when the features are on dimension 1 (feature-major), else the
    first one after T (batch-major). One unbind call when every sample is alive."""
    if full:
        return v.unbind(0)
    if fdim == 1:
        return [v[t, :, :n] for t, n in enumerate(bs)]
    return [v[t, :n] for t, n in enumerate(bs)]


def _chunk_steps(step_bytes: int, target: int = 1 << 20) -> int:
    """Steps per chunk (of input projections, of derivative factors): about ``target`` bytes
    per chunk of a per-step tensor of ``step_bytes``, so that a chunk is still in the cache
    when the loop reaches its steps."""
    return max(1, target // max(1, step_bytes))


def _peep_grad(d: Tensor, c: Tensor, nb: int, cpb: int, fdim: int = 1) -> Tensor:
    """Σ_{t,b} δ[t, j, b] c[t, (j, k), b] -> (nb, cpb), for either layout (``fdim``: the
    feature dimension, 1 feature-major: d (T, nb, B), c (T, H, B); -1 batch-major: d (T, B, nb),
    c (T, B, H)). An elementwise product and a reduction (no copy of the strided δ slice), a
    chunk of steps at a time (≈ 1 MB of c each): the products stay in the cache instead of going
    through a (T, ·, ·) temporary (4-5x faster at T·B·H = 13 M)."""
    T = c.shape[0]
    k = _chunk_steps(c[0].numel() * c.element_size())
    out = None
    for t0 in range(0, T, k):
        d_, c_ = d[t0 : t0 + k], c[t0 : t0 + k]
        if fdim == 1:
            part = (d_.unsqueeze(2) * c_.view(-1, nb, cpb, c.shape[2])).sum((0, 3))
        else:
            part = (d_.unsqueeze(-1) * c_.view(-1, c.shape[1], nb, cpb)).sum((0, 1))
        out = part if out is None else out.add_(part)
    return out


def _add_peep_fm(acc: Tensor, d: Tensor, p3: Tensor, n: int, nb: int, cpb: int) -> None:
    """acc += P ⊙ δ, feature-major: (H, n) += P (nb, [cpb,] 1) ⊙ δ (nb, n)."""
    if cpb == 1:
        acc.addcmul_(d, p3)
    else:
        acc.view(nb, cpb, n).addcmul_(d.unsqueeze(1), p3)


def _last_index(bs: list[int], B: int, device) -> Tensor:
    """Last alive step of each (sorted) row, from the batch sizes n_t."""
    bs_t = torch.tensor(bs, device=device)
    rows = torch.arange(B, device=device)
    return (bs_t.unsqueeze(1) > rows.unsqueeze(0)).sum(0) - 1


LAYOUTS = ("features", "batch")
_TAPES: list[list] = []  # set by ``rop.recording``: where ``run`` leaves each call's tape
_FORCED: list[str] = []  # set by ``forced_layout`` (tests, benchmarks)


def choose_layout(spec: CellSpec, batch: int, dtype: torch.dtype = torch.float64) -> str:
    """ "features" (this module) or "batch" (``bptt_rows``) for a layer of this shape.

    The BLAS kernels run a product fastest when its output's leading dimension is the long
    one: the batch in the feature-major layout, the 4·H gate pre-activations in the batch-major
    one. So the batch-major layout is chosen when 4·H_r exceeds the batch (wide layers, small
    batches); the long time-lag nets (a few units, batches of thousands) stay feature-major,
    where every gate slice is also a contiguous block. Below float64 (float32 on this
    machine's BLAS) the batch-major layout also wins from H_r = 16 on, at every batch size
    measured (up to 10,000); H_r ≤ 8 stays feature-major. The rule was read off
    ``benchmarks/bench_lstm.py --sections layout`` (docs/benchmarks.md)."""
    if _FORCED:
        return _FORCED[-1]
    H = spec.recurrent_size
    if 4 * H > batch or (dtype != torch.float64 and H >= 16):
        return "batch"
    return "features"


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


def run(cell, x: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor, alpha: dict[str, float]):
    """Run one layer-direction with the fast engine. x (T, B, I); returns Y, C, h_n, c_n."""
    s = cell.spec
    w = cell.weights(structured=True)  # F-LSTM, G-LSTM: factors / groups, not a dense matrix
    T, B, _ = x.shape
    args = (
        w["W"],
        w["R"],
        w["b"],
        w["W_mx"],
        w["W_mh"],
        w["peep"].get("i"),
        w["peep"].get("f"),
        w["peep"].get("o"),
        w["Q"],
        w["W_p"],
    )
    layout = choose_layout(s, B, x.dtype)
    if layout == "batch":
        from lstmlab.engines.bptt_rows import LSTMLayerBPTTRows as layer
        from lstmlab.engines.bptt_rows import without_backward
    else:
        layer, without_backward = LSTMLayerBPTT, nullcontext
    packing = sort_by_length(lengths, T)
    # no graph will be kept (grad mode off, or nothing requires grad): the layer may keep less
    graph = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, *args)
    )
    with nullcontext() if graph else without_backward():
        if packing is None:
            out = layer.apply(s, alpha, None, x, h0, c0, *args)
        else:
            perm, _, batch_sizes = packing
            out = layer.apply(s, alpha, batch_sizes, x[:, perm], h0[perm], c0[perm], *args)
    if _TAPES:  # an R-forward pass will read this call's activations (``rop.recording``)
        from lstmlab.engines.rop import LayerTape

        _TAPES[-1].append(LayerTape(cell, layout, alpha, packing, out[0].grad_fn))
    if packing is None:
        return out
    inv = packing[1]
    Y, C, h_n, c_n = out
    return Y[:, inv], C[:, inv], h_n[inv], c_n[inv]
