"""Matrix-based full BPTT with a hand-written backward pass (seed 000 Sec. 3.3, Eqs. 13–18).

This engine is the project's subject and is written by hand. The whole batch goes through the
recurrence at once (seed 000 puts nodes in rows and samples in columns; so does this module's
``LSTMLayerBPTT``, the feature-major layout; ``bptt_rows`` holds the batch-major twin for wide
layers, and ``run`` picks one by shape, see ``choose_layout``). Forward, per step: one matrix product, [W | R] times the stacked
[x_t; y_{t-1}] (mLSTM: W x_t and two recurrent products; one more with full gate recurrence or
a projection), plus elementwise work. Backward
runs in reverse time computing the error responsibilities (Eqs. 13–17, generalised to every
variant), writing δ of every step into one (T, D, B) tensor; the weight gradients of Eq. 18 are
then a few large (batched) products after the loop:

    dW = Σ_t δ_tᵀ x_t        dR = Σ_t δ_tᵀ y_{t-1}        db = Σ_t δ_t      dx_t = δ_t W

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
from contextlib import contextmanager

import torch
from torch import Tensor

from lstmlab.engines.packing import sort_by_length
from lstmlab.nn.activations import derivative_from_output
from lstmlab.nn.variants import CellSpec

# The block-input and cell-output activations of the tanh family are affine maps of a logistic
# sigmoid, f(a) = k σ(s a) − k/2:
#     tanh(a) = 2σ(2a) − 1        bipolar1(a) = 2σ(a) − 1        bipolar2(a) = 4σ(a) − 2
# On the CPU the engine evaluates them this way: torch's CPU tanh costs 3–7 ns per element, its
# sigmoid 0.5–1.6 (float32/float64, measured in docs/benchmarks.md), and σ(s a) then also joins the
# gates' sigmoid call. The result differs from torch.tanh by at most 2 units in the last place of
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


def _act_into(name: str, a: Tensor, out: Tensor, prescaled: bool = False) -> Tensor:
    """out = f(a), once (see ``_activation``)."""
    return _activation(name, a, prescaled)(a, out)


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
    the network is small, as in the long time-lag problems). Forward keeps ZT = g(z-pre),
    AT = gate activations (= q_t), CT, HCT = h(C), YT (and ŷ with a projection, u = W_mh y and m
    for mLSTM), all (T, ·, B). Backward first forms, over all steps at once, the derivative
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
        xT = x.transpose(1, 2)  # (T, I, B)
        mult = s.multiplicative_size is not None
        # One product per step gives W x_t + R y_{t-1} + b: [W | R] times the stacked column
        # block S = [x_t; y_{t-1}] (mLSTM: W x_t, then R m_t). No (T, D, B) pre-activation
        # tensor is kept: the backward needs only the activations.
        b_col = bsc.view(D, 1) if bsc is not None else x.new_zeros(D, 1)
        WR = None if mult else torch.cat([Ws, Rs], 1)  # (D, I + Hr)
        S = x.new_empty(I + Hr, B)
        pre_buf = x.new_empty(D, B)
        mult = s.multiplicative_size is not None
        # every entry is written when all sequences are full-length; else dead columns must be 0
        new = x.new_empty if full else x.new_zeros
        YT, CT, HCT = new(T, Hr, B), new(T, H, B), new(T, H, B)
        ZAT = new(T, D, B)  # [g(z) | gate activations] of every step, in the pre-activation rows
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
        if if_gates:
            lo_if, hi_if = s.gate_slice(if_gates[0]).start, s.gate_slice(if_gates[-1]).stop
            P_if = torch.stack([Ps[g] for g in if_gates])  # (k, nb, cpb)
            P_if = P_if.view(len(if_gates), nb, 1) if cpb == 1 else P_if.unsqueeze(-1)
        o_late = has_o and s.peepholes  # the output gate sees c_t
        if o_late:
            P_o3 = Ps["o"].view(nb, 1) if cpb == 1 else Ps["o"].unsqueeze(-1)  # (nb, [cpb,] 1)
        qi = s.q_slice("i") if has_i else None
        qf = s.q_slice("f") if has_f else None
        qo = s.q_slice("o") if has_o else None
        so = s.gate_slice("o") if has_o else None
        y_prev, c_prev, a_prev = h0.t(), c0.t(), None  # (Hr, B), (H, B)
        for t in range(T):
            n = bs[t]
            if n == 0:
                break
            cols = slice(None) if full else slice(0, n)
            pre, za, c, hc = pre_buf[:, cols], ZAT[t, :, cols], CT[t, :, cols], HCT[t, :, cols]
            z, a = za[:H], za[H:]
            y_prev, c_prev = y_prev[:, cols], c_prev[:, cols]
            if mult:
                torch.addmm(b_col, Ws, xT[t, :, cols], out=pre)
                u = torch.mm(W_mh, y_prev, out=UT[t, :, cols])
                pre.addmm_(Rs, torch.mul(MXT[t, :, cols], u, out=MmT[t, :, cols]))
            else:
                S[:I, cols] = xT[t, :, cols]
                S[I:, cols] = y_prev
                torch.addmm(b_col, WR, S[:, cols], out=pre)
            if Qs is not None and a_prev is not None:
                pre[H:].addmm_(Qs, a_prev[:, cols])
            if if_gates:  # peepholes from c_{t-1}
                p_if = pre[lo_if:hi_if].view(len(if_gates), nb, n)
                if cpb == 1:
                    p_if.addcmul_(c_prev.view(1, nb, n), P_if)
                else:
                    p_if.add_((c_prev.view(1, nb, cpb, n) * P_if).sum(2))
            if lo == H:
                act_g(pre[:H], z)
            if hi > lo:
                torch.sigmoid(pre[lo:hi], out=za[lo:hi])
            if z_affine_ is not None:
                z_affine_(z)
            i = a[qi] if has_i else None  # (nb, n)
            f = (1.0 - i) if s.coupled else (a[qf] if has_f else None)
            if cpb == 1:
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
            y_hat = YhT[t, :, cols] if YhT is not None else YT[t, :, cols]
            if has_o:
                if not o_late:
                    o = a[qo]
                else:
                    p_o = pre[so]  # the output gate sees c_t
                    if cpb == 1:
                        p_o.addcmul_(c, P_o3)
                    else:
                        p_o.add_((c.view(nb, cpb, n) * P_o3).sum(1))
                    o = torch.sigmoid(p_o, out=a[qo])
                if cpb == 1:
                    torch.mul(o, hc, out=y_hat)
                else:
                    torch.mul(o.unsqueeze(1), hc.view(nb, cpb, n), out=y_hat.view(nb, cpb, n))
            else:
                y_hat.copy_(hc)
            if W_p is not None:
                torch.mm(W_p, y_hat, out=YT[t, :, cols])
            y_prev, c_prev, a_prev = YT[t], CT[t], AT[t]
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
        has_i, has_f, has_o = ("i" in s.gates), ("f" in s.gates), ("o" in s.gates)
        fgr, peep = Q is not None, s.peepholes
        c0T = c0.t()

        # ---- factors over all steps at once, (T, ·, B); see the module docstring
        CpT = torch.cat([c0T.unsqueeze(0), CT[:-1]])  # c_{t-1}, (T, H, B)
        SA = torch.addcmul(AT, AT, AT, value=-1.0)  # σ(1-σ) of every gate, then × α per gate
        for g in s.gates:
            if alpha[g] != 1.0:
                SA[:, s.q_slice(g)] *= alpha[g]
        i_c = _cells_fm(AT[:, s.q_slice("i")], cpb) if has_i else None
        if has_o:
            OHp = _times_derivative(s.h, HCT, _cells_fm(AT[:, s.q_slice("o")], cpb))  # o h'(c)
            HSo = HCT * _cells_fm(SA[:, s.q_slice("o")], cpb)  # h(c) α o(1-o)
        else:
            OHp = derivative_from_output(s.h, HCT)
        IGp = _times_derivative(s.g, ZT, i_c)  # ∂c/∂z-pre = i g'(z)
        Ks = {}  # the factor each gate's error is multiplied by (cell level)
        if has_o:
            Ks["o"] = HSo
        if has_i:
            Ks["i"] = (ZT - CpT if s.coupled else ZT) * _cells_fm(SA[:, s.q_slice("i")], cpb)
        if has_f:
            Ks["f"] = CpT * _cells_fm(SA[:, s.q_slice("f")], cpb)
        F_c = (
            (1.0 - i_c) if s.coupled else (_cells_fm(AT[:, s.q_slice("f")], cpb) if has_f else None)
        )

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
        dYT = dY.transpose(1, 2) if dY is not None else None  # (T, Hr, B) view
        dCT = dC.transpose(1, 2) if dC is not None else None
        dy_next = dh_n.t().contiguous() if dh_n is not None else x.new_zeros(Hr, B)
        dc_next = dc_n.t().contiguous() if dc_n is not None else x.new_zeros(H, B)
        dq_next = x.new_zeros(G, B) if fgr else None
        dy_buf, dc_buf = x.new_empty(Hr, B), x.new_empty(H, B)
        dyh_buf = x.new_empty(H, B) if W_p is not None else None
        Rt, Qt = R.t(), (Q.t() if fgr else None)
        P3 = {
            g: (p.view(nb, 1) if cpb == 1 else p.unsqueeze(-1))
            for g, p in (("i", P_i), ("f", P_f), ("o", P_o))
            if p is not None
        }
        for t in reversed(range(T)):
            n = bs[t]
            if n == 0:
                continue
            cols = slice(None) if full else slice(0, n)

            def delta(g: str, d: Tensor, t=t, n=n, cols=cols) -> Tensor:
                """δ_g = Σ_cells d ⊙ K_g (+ dq_g α σ'(·) with full gate recurrence), in place."""
                out = dPre[t, s.gate_slice(g), cols]
                if cpb == 1:
                    torch.mul(d, Ks[g][t, :, cols], out=out)
                else:
                    torch.sum((d * Ks[g][t, :, cols]).view(nb, cpb, n), 1, out=out)
                if fgr:
                    out.addcmul_(dq_next[s.q_slice(g), cols], SA[t, s.q_slice(g), cols])
                return out

            def add_peep(acc: Tensor, d: Tensor, g: str, n=n) -> None:  # acc += P_g δ_g
                if cpb == 1:
                    acc.addcmul_(d, P3[g])
                else:
                    acc.view(nb, cpb, n).addcmul_(d.unsqueeze(1), P3[g])

            dpre = dPre[t, :, cols]
            dyn, dcn = dy_next[:, cols], dc_next[:, cols]
            # scratch columns reused at every step: no allocation inside the loop
            dy = torch.add(dyn, dYT[t, :, cols], out=dy_buf[:, cols]) if dYT is not None else dyn
            if W_p is not None:
                DYT[t, :, cols] = dy
                dy = torch.mm(W_p.t(), dy, out=dyh_buf[:, cols])  # dŷ
            dc = torch.addcmul(dcn, dy, OHp[t, :, cols], out=dc_buf[:, cols])
            if dCT is not None:
                dc += dCT[t, :, cols]
            if has_o:
                d_o = delta("o", dy)
                if peep:
                    add_peep(dc, d_o, "o")
            d_i = delta("i", dc) if has_i else None
            d_f = delta("f", dc) if has_f else None
            torch.mul(dc, IGp[t, :, cols], out=dpre[:H])
            # carried to step t-1
            if F_c is None:
                dcn.copy_(dc)
            else:
                torch.mul(dc, F_c[t, :, cols], out=dcn)
            if peep:
                if has_i:
                    add_peep(dcn, d_i, "i")
                if has_f:
                    add_peep(dcn, d_f, "f")
            if mult:
                dm = Rt @ dpre  # (M, n)
                du = torch.mul(dm, MXT[t, :, cols], out=dUT[t, :, cols])
                torch.mul(dm, UT[t, :, cols], out=dMXT[t, :, cols])
                torch.mm(W_mh.t(), du, out=dyn)
            else:
                torch.mm(Rt, dpre, out=dyn)
            if fgr:
                torch.mm(Qt, dpre[H:], out=dq_next[:, cols])
        # ---- Eq. 18: weight gradients as a few large products after the time loop, on the
        # steps laid side by side: column (t, b) of a (features, T·B) matrix
        need = ctx.needs_input_grad
        grads = dict.fromkeys(
            ["x", "h0", "c0", "W", "R", "b", "W_mx", "W_mh", "P_i", "P_f", "P_o", "Q", "W_p"]
        )

        side_by_side: dict[int, Tensor] = {}

        def accumulate(d: Tensor, v: Tensor, v0: Tensor | None = None) -> Tensor:
            """Σ_t d_t v_t (or Σ_t d_t v_{t-1} with v_{-1} = v0): d (T, K, B), v (T, B, N).

            Narrow v (N ≤ B, e.g. the long time-lag nets): one (K, B)·(B, N) product per step
            into one accumulator, nothing copied. Wide v: the steps of d are laid side by side,
            (K, T·B), once, and one large product does it all (the accumulator would otherwise
            be read and written T times)."""
            if v.shape[2] <= B:
                out = d[0] @ (v[0] if v0 is None else v0)
                for t in range(1, T):
                    out.addmm_(d[t], v[t] if v0 is None else v[t - 1])
                return out
            if id(d) not in side_by_side:  # a view when d is stored side by side (dPre, …)
                side_by_side[id(d)] = d.permute(1, 0, 2).reshape(d.shape[1], T * B)
            d2, N = side_by_side[id(d)], v.shape[2]
            if v0 is None:
                return d2 @ v.reshape(T * B, N)
            out = d2[:, :B] @ v0  # step 0 meets v_{-1} = v0, step t meets v_{t-1}
            return out.addmm_(d2[:, B:], v[:-1].reshape((T - 1) * B, N)) if T > 1 else out

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
                    grads[f"P_{g}"] = _peep_grad(d_g, CT if g == "o" else CpT, nb, cpb)
        if fgr and need[14]:
            q0 = x.new_zeros(B, G)  # q_{-1} = 0
            grads["Q"] = accumulate(dPre[:, H:], AT.transpose(1, 2), q0)
        if W_p is not None and need[15]:
            grads["W_p"] = accumulate(DYT, YhT.transpose(1, 2))
        return (None, None, None, *grads.values())


def _peep_grad(d: Tensor, c: Tensor, nb: int, cpb: int) -> Tensor:
    """Σ_{t,b} δ[t, j, b] c[t, (j, k), b]: d (T, nb, B), c (T, H, B) -> (nb, cpb)."""
    T, _, B = c.shape
    return (d.unsqueeze(2) * c.view(T, nb, cpb, B)).sum((0, 3))


def _cells_fm(g: Tensor, cpb: int) -> Tensor:
    """Feature-major block-level (T, nb, B) -> cell-level (T, nb·cpb, B)."""
    return g if cpb == 1 else g.repeat_interleave(cpb, dim=1)


def _last_index(bs: list[int], B: int, device) -> Tensor:
    """Last alive step of each (sorted) row, from the batch sizes n_t."""
    bs_t = torch.tensor(bs, device=device)
    rows = torch.arange(B, device=device)
    return (bs_t.unsqueeze(1) > rows.unsqueeze(0)).sum(0) - 1


LAYOUTS = ("features", "batch")
_FORCED: list[str] = []  # set by ``forced_layout`` (tests, benchmarks)


def choose_layout(spec: CellSpec, batch: int) -> str:
    """ "features" (this module) or "batch" (``bptt_rows``) for a layer of this shape.

    The BLAS kernels run a product fastest when its output's leading dimension is the long
    one: the batch in the feature-major layout, the 4·H gate pre-activations in the batch-major
    one. So the batch-major layout is chosen when 4·H_r exceeds the batch (wide layers, small
    batches); the long time-lag nets (a few units, batches of thousands) stay feature-major,
    where every gate slice is also a contiguous block. The rule was read off
    ``benchmarks/bench_lstm.py --sections layout`` (docs/benchmarks.md)."""
    if _FORCED:
        return _FORCED[-1]
    return "batch" if 4 * spec.recurrent_size > batch else "features"


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
    w = cell.weights()
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
    if choose_layout(s, B) == "batch":
        from lstmlab.engines.bptt_rows import LSTMLayerBPTTRows as layer
    else:
        layer = LSTMLayerBPTT
    packing = sort_by_length(lengths, T)
    if packing is None:
        return layer.apply(s, alpha, None, x, h0, c0, *args)
    perm, inv, batch_sizes = packing
    Y, C, h_n, c_n = layer.apply(s, alpha, batch_sizes, x[:, perm], h0[perm], c0[perm], *args)
    return Y[:, inv], C[:, inv], h_n[inv], c_n[inv]
