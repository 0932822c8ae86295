"""The bptt engine's batch-major layout, for wide layers (see ``lstmlab.engines.bptt``).

Same equations, same inputs and outputs as ``bptt.LSTMLayerBPTT``; only the memory layout of the
per-step quantities differs: samples are rows, (B, features), as in ``torch.nn.LSTM``. Then the
recurrent product of a step is (n, Hr)·(Hr, D) with the long side D as BLAS's leading dimension,
which the BLAS kernels run up to 1.6× faster than the feature-major (D, Hr)·(Hr, n) when the
layer is wide and the batch narrow, and the input projection W x_t + b of all steps is one big
product before the loop. For small layers (the long time-lag nets: 4–16 units, batches of
thousands) the feature-major layout wins: there every gate slice of a (B, D) row is a few
elements, and elementwise loops over short strided rows are slow. ``bptt.run`` picks one by
shape (``bptt.choose_layout``); the tests hold both to the autograd reference.

Hand-written, like ``bptt``: this is the project's subject.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmlab.engines.bptt import (
    _act_into,
    _forward_weights,
    _last_index,
    _times_derivative,
)
from lstmlab.nn.activations import derivative_from_output
from lstmlab.nn.variants import CellSpec

__all__ = ["LSTMLayerBPTTRows"]


def _unbind(t: Tensor) -> tuple[Tensor, ...]:
    """The T step views of a (T, ...) tensor, made in one call."""
    return t.unbind(0)


def _to_cells(g: Tensor, cpb: int) -> Tensor:
    """Block-level (..., nb) -> cell-level (..., nb·cpb): each gate broadcast to its cells."""
    return g if cpb == 1 else g.repeat_interleave(cpb, dim=-1)


class LSTMLayerBPTTRows(torch.autograd.Function):
    """One layer-direction over a whole (sorted) batch, batch-major; see the module docstring.

    Inputs: x (T, B, I) sorted by length (descending), h0 (B, Hr), c0 (B, H), and the dense
    weights of ``LSTMCell.weights``. ``batch_sizes``: list of n_t (rows alive at step t), or
    None when every sequence has length T. Outputs: Y (T, B, Hr), C (T, B, H), h_n, c_n.

    Forward keeps Z = g(z-pre), A = gate activations (= q_t), C, HC = h(C), Y (and ŷ with a
    projection, u = W_mh y and m for mLSTM), all (T, B, ·). Backward forms the derivative
    factors that do not depend on the carried error (α σ(1−σ), o h'(c), i g'(z), …) for a chunk
    of steps at a time, so that each reverse step is a handful of multiply-adds and one
    recurrent product on cache-resident data.
    """

    @staticmethod
    def forward(
        ctx, spec, alpha, batch_sizes, x, h0, c0, W, R, b, W_mx, W_mh, P_i, P_f, P_o, Q, W_p
    ):
        s: CellSpec = spec
        T, B, I = x.shape
        H, nb, cpb, Hr, G = s.hidden_size, s.blocks, s.cells_per_block, s.recurrent_size, s.n_q
        D = s.n_pre
        bs = batch_sizes if batch_sizes is not None else [B] * T
        full = batch_sizes is None
        Ws, Rs, bsc, Qs, Ps = _forward_weights(s, alpha, W, R, b, Q, P_i, P_f, P_o)
        x2 = x.reshape(T * B, I)
        # the input projection W x_t + b, one large product per chunk of k steps into a buffer
        # reused by every chunk (a (T, B, D) tensor would be fresh memory on every call, and
        # first-touch page faults on it cost as much as the product itself)
        k = min(T, _chunk_steps(B * D * x.element_size(), target=4 << 20))
        pre_buf = x.new_empty(k, B, D)
        bias = bsc if bsc is not None else x.new_zeros(D)
        mult = s.multiplicative_size is not None
        # every entry is written when all sequences are full-length; else dead rows must be 0
        new = x.new_empty if full else x.new_zeros
        Y, C, Z, HC, A = new(T, B, Hr), new(T, B, H), new(T, B, H), new(T, B, H), new(T, B, G)
        Yh = new(T, B, H) if W_p is not None else None
        if mult:
            M = s.multiplicative_size
            MX = (x2 @ W_mx.t()).view(T, B, M)
            U, Mm = new(T, B, M), new(T, B, M)
        Rt, Wpt = Rs.t(), (W_p.t() if W_p is not None else None)
        Qt = Qs.t() if Qs is not None else None
        has_i, has_f, has_o = ("i" in s.gates), ("f" in s.gates), ("o" in s.gates)
        # per-step views made once (unbind), so that the loop itself slices as little as possible
        U_ = _unbind
        PRE, PZ, PG = U_(pre_buf), U_(pre_buf[..., :H]), U_(pre_buf[..., H:])
        Ys, Cs, Zs, HCs, As = U_(Y), U_(C), U_(Z), U_(HC), U_(A)
        Yhs = U_(Yh) if Yh is not None else Ys
        AI = U_(A[..., s.q_slice("i")]) if has_i else None
        AF = U_(A[..., s.q_slice("f")]) if has_f else None
        if mult:
            MXs, Us, Ms = U_(MX), U_(U), U_(Mm)
        # input and forget gates are contiguous in both the pre-activation and the A layout;
        # without peepholes every gate is activated in one call after the recurrent product
        one_call = not s.peepholes
        if_gates = [g for g in ("i", "f") if g in s.gates]
        if if_gates and not one_call:
            lo, hi = s.gate_slice(if_gates[0]).start, s.gate_slice(if_gates[-1]).stop
            PIF, AIF = U_(pre_buf[..., lo:hi]), U_(A[..., lo - H : hi - H])
            P_if = torch.stack([Ps[g] for g in if_gates])  # (k, nb, cpb)
        if has_o:
            PO, AO = U_(pre_buf[..., s.gate_slice("o")]), U_(A[..., s.q_slice("o")])
        y_prev, c_prev, a_prev = h0, c0, None
        for t in range(T):
            n = bs[t]
            if n == 0:
                break

            j = t % k  # this step's row of the input-projection buffer
            if j == 0:
                m = min(k, T - t)
                torch.addmm(bias, x2[t * B : (t + m) * B], Ws.t(), out=pre_buf[:m].view(m * B, D))

            def at(v, t=t, n=n):  # step t's view of v, restricted to the rows alive
                return v[t] if full else v[t][:n]

            def pj(v, j=j, n=n):  # step t's view of a buffer row, restricted to the rows alive
                return v[j] if full else v[j][:n]

            if not full:
                y_prev, c_prev = y_prev[:n], c_prev[:n]
                a_prev = a_prev[:n] if a_prev is not None else None
            pre, z_t, c_t, hc_t, a_t = pj(PRE), at(Zs), at(Cs), at(HCs), at(As)
            if mult:
                u = torch.mm(y_prev, W_mh.t(), out=at(Us))
                pre.addmm_(torch.mul(at(MXs), u, out=at(Ms)), Rt)
            else:
                pre.addmm_(y_prev, Rt)
            if Qt is not None and a_prev is not None:
                pj(PG).addmm_(a_prev, Qt)
            _act_into(s.g, pj(PZ), z_t, prescaled=True)
            if one_call:
                if s.gates:
                    torch.sigmoid(pj(PG), out=a_t)
            elif if_gates:
                p_if = pj(PIF)
                c3 = c_prev.view(n, 1, nb, cpb)  # peepholes from c_{t-1}
                if cpb == 1:
                    p_if.view(n, len(if_gates), nb).addcmul_(c3.view(n, 1, nb), P_if.view(-1, nb))
                else:
                    p_if.view(n, len(if_gates), nb).add_((c3 * P_if).sum(-1))
                torch.sigmoid(p_if, out=at(AIF))
            i = at(AI) if has_i else None
            f = (1.0 - i) if s.coupled else (at(AF) if has_f else None)
            if cpb == 1:
                if f is None:
                    torch.add(c_prev, z_t if i is None else i * z_t, out=c_t)
                else:
                    torch.mul(f, c_prev, out=c_t)
                    c_t.add_(z_t) if i is None else c_t.addcmul_(i, z_t)
            else:
                c3, zc = c_t.view(n, nb, cpb), z_t.view(n, nb, cpb)
                cp3 = c_prev.view(n, nb, cpb)
                if f is None:
                    torch.add(cp3, zc if i is None else i.unsqueeze(-1) * zc, out=c3)
                else:
                    torch.mul(f.unsqueeze(-1), cp3, out=c3)
                    c3.add_(zc) if i is None else c3.addcmul_(i.unsqueeze(-1), zc)
            _act_into(s.h, c_t, hc_t)
            y_hat = at(Yhs)
            if has_o:
                if one_call:
                    o = at(AO)
                else:
                    p_o = pj(PO)  # the output gate sees c_t
                    if cpb == 1:
                        p_o.addcmul_(c_t, Ps["o"].view(1, nb))
                    else:
                        p_o.add_((c_t.view(n, nb, cpb) * Ps["o"]).sum(-1))
                    o = torch.sigmoid(p_o, out=at(AO))
                if cpb == 1:
                    torch.mul(o, hc_t, out=y_hat)
                else:
                    torch.mul(o.unsqueeze(-1), hc_t.view(n, nb, cpb), out=y_hat.view(n, nb, cpb))
            else:
                y_hat.copy_(hc_t)
            if Wpt is not None:
                torch.mm(y_hat, Wpt, out=at(Ys))
            y_prev, c_prev, a_prev = Ys[t], Cs[t], As[t]
        if full:
            h_n, c_n = Y[-1].clone(), C[-1].clone()
        else:
            last = _last_index(bs, B, x.device)
            rows = torch.arange(B, device=x.device)
            h_n, c_n = Y[last, rows], C[last, rows]
        ctx.spec, ctx.alpha, ctx.bs = s, alpha, batch_sizes
        ctx.save_for_backward(x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y, C)
        ctx.Z, ctx.A, ctx.HC, ctx.Yh = Z, A, HC, Yh
        if mult:
            ctx.MX, ctx.U, ctx.Mm = MX, U, Mm
        ctx.has_b = b is not None
        ctx.set_materialize_grads(False)  # unused outputs (often C, h_n, c_n) arrive as None
        return Y, C, h_n, c_n

    @staticmethod
    def backward(ctx, dY, dC, dh_n, dc_n):
        x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y, C = ctx.saved_tensors
        s: CellSpec = ctx.spec
        alpha, batch_sizes = ctx.alpha, ctx.bs
        Z, A, HC, Yh = ctx.Z, ctx.A, ctx.HC, ctx.Yh
        T, B, I = x.shape
        H, nb, cpb, Hr, G, D = (
            s.hidden_size, s.blocks, s.cells_per_block, s.recurrent_size, s.n_q, s.n_pre,
        )  # fmt: skip
        full = batch_sizes is None
        bs = batch_sizes if batch_sizes is not None else [B] * T
        mult = s.multiplicative_size is not None
        has_i, has_f, has_o = ("i" in s.gates), ("f" in s.gates), ("o" in s.gates)
        fgr, peep = Q is not None, s.peepholes

        # ---- derivative factors (α σ(1−σ), o h'(c), i g'(z), …) that do not depend on the
        # carried error, formed a chunk of steps at a time: few calls per step, and a chunk
        # stays in cache until the reverse loop has used it (see ``_chunk_steps``)
        def factors(t0: int, t1: int) -> dict[str, Tensor]:
            A_, HC_, Z_ = A[t0:t1], HC[t0:t1], Z[t0:t1]
            C_prev = C[t0 - 1 : t1 - 1] if t0 > 0 else torch.cat([c0.unsqueeze(0), C[: t1 - 1]])
            SA = torch.addcmul(A_, A_, A_, value=-1.0)  # σ(1-σ) of every gate, × α per gate
            for g in s.gates:
                if alpha[g] != 1.0:
                    SA[..., s.q_slice(g)] *= alpha[g]
            out = {"SA": SA}
            i_c = _to_cells(A_[..., s.q_slice("i")], cpb) if has_i else None
            if has_o:
                o_c = _to_cells(A_[..., s.q_slice("o")], cpb)
                out["OHp"] = _times_derivative(s.h, HC_, o_c)  # ∂y/∂c = o h'(c)
                out["o"] = HC_ * _to_cells(SA[..., s.q_slice("o")], cpb)  # h(c) α o(1-o)
            else:
                out["OHp"] = derivative_from_output(s.h, HC_)
            out["IGp"] = _times_derivative(s.g, Z_, i_c)  # ∂c/∂z-pre = i g'(z)
            if has_i:
                K_i = Z_ - C_prev if s.coupled else Z_  # ∂c/∂i
                out["i"] = K_i * _to_cells(SA[..., s.q_slice("i")], cpb)
            if has_f:
                out["f"] = C_prev * _to_cells(SA[..., s.q_slice("f")], cpb)
            if s.coupled:
                out["F_c"] = 1.0 - i_c
            elif has_f:
                out["F_c"] = _to_cells(A_[..., s.q_slice("f")], cpb)
            return out

        chunk = _chunk_steps(B * max(H, G) * x.element_size())
        fac: dict[str, list] = {}  # name -> per-step views of the current chunk (index t - t0)
        t0 = T
        dY_any = dY is not None
        dC_any = dC is not None

        new = x.new_empty if full else x.new_zeros  # dead rows must stay 0
        dPre = new(T, B, D)  # δ of every step
        DY = new(T, B, Hr) if W_p is not None else None
        if mult:
            MX, U = ctx.MX, ctx.U
            dU, dMX = new(T, B, MX.shape[2]), new(T, B, MX.shape[2])
        dy_next = dh_n.clone() if dh_n is not None else x.new_zeros(B, Hr)
        dc_next = dc_n.clone() if dc_n is not None else x.new_zeros(B, H)
        dq_next = x.new_zeros(B, G) if fgr else None

        # per-step views made once, so that the reverse loop slices as little as possible
        U_ = _unbind
        dPres, dPz, dPgates = U_(dPre), U_(dPre[..., :H]), U_(dPre[..., H:])
        dPg = {g: U_(dPre[..., s.gate_slice(g)]) for g in s.gates}
        dYs = U_(dY) if dY_any else None
        dCs = U_(dC) if dC_any else None
        DYs = U_(DY) if DY is not None else None
        dqg = {g: dq_next[:, s.q_slice(g)] for g in s.gates} if fgr else {}
        if mult:
            MXs, Us, dUs, dMXs = U_(MX), U_(U), U_(dU), U_(dMX)
        P = {"i": P_i, "f": P_f, "o": P_o}
        dy_buf, dc_buf = x.new_empty(B, Hr), x.new_empty(B, H)
        dyh_buf = x.new_empty(B, H) if W_p is not None else None
        for t in reversed(range(T)):
            n = bs[t]
            if n == 0:
                continue
            if t < t0:  # the next chunk of factors, steps [t0, t]
                t0 = max(0, t + 1 - chunk)
                fac = {k: _unbind(v) for k, v in factors(t0, t + 1).items()}

            def at(v, t=t, n=n):  # step t's view of v, restricted to the rows alive
                return v[t] if full else v[t][:n]

            def fa(name: str, t=t, n=n, fac=fac, t0=t0) -> Tensor:  # step t's factor, rows alive
                v = fac[name][t - t0]
                return v if full else v[:n]

            def delta(g: str, d: Tensor, t=t, n=n) -> Tensor:
                """δ_g = Σ_cells d ⊙ K_g (+ dq_g α σ'(·) with full gate recurrence), in place."""
                out = at(dPg[g])
                if cpb == 1:
                    torch.mul(d, fa(g), out=out)
                else:
                    torch.sum((d * fa(g)).view(n, nb, cpb), -1, out=out)
                if fgr:
                    out.addcmul_(dqg[g] if full else dqg[g][:n], fa("SA")[:, s.q_slice(g)])
                return out

            def add_peep(acc: Tensor, d: Tensor, g: str, n=n) -> None:  # acc += P_g δ_g
                if cpb == 1:
                    acc.addcmul_(d, P[g].view(1, nb))
                else:
                    acc.view(n, nb, cpb).addcmul_(d.unsqueeze(-1), P[g])

            dpre = at(dPres)
            dyn = dy_next if full else dy_next[:n]
            dcn = dc_next if full else dc_next[:n]
            # scratch rows reused at every step: no allocation inside the loop
            dy = torch.add(dyn, at(dYs), out=dy_buf[:n]) if dY_any else dyn
            if W_p is not None:
                at(DYs).copy_(dy)
                dy = torch.mm(dy, W_p, out=dyh_buf[:n])  # dŷ
            dc = torch.addcmul(dcn, dy, fa("OHp"), out=dc_buf[:n])
            if dC_any:
                dc += at(dCs)
            if has_o:
                d_o = delta("o", dy)
                if peep:
                    add_peep(dc, d_o, "o")
            d_i = delta("i", dc) if has_i else None
            d_f = delta("f", dc) if has_f else None
            torch.mul(dc, fa("IGp"), out=at(dPz))
            # carried to step t-1
            if "F_c" not in fac:
                dcn.copy_(dc)
            else:
                torch.mul(dc, fa("F_c"), out=dcn)
            if peep:
                if has_i:
                    add_peep(dcn, d_i, "i")
                if has_f:
                    add_peep(dcn, d_f, "f")
            if mult:
                dm = dpre @ R  # (n, M)
                du = torch.mul(dm, at(MXs), out=at(dUs))
                torch.mul(dm, at(Us), out=at(dMXs))
                torch.mm(du, W_mh, out=dyn)
            else:
                torch.mm(dpre, R, out=dyn)
            if fgr:
                torch.mm(at(dPgates), Q, out=dq_next if full else dq_next[:n])
        # ---- Eq. 18: weight gradients as a few large products after the time loop
        need = ctx.needs_input_grad
        dPre2 = dPre.view(T * B, D)
        x2 = x.reshape(T * B, I)
        grads = dict.fromkeys(
            ["x", "h0", "c0", "W", "R", "b", "W_mx", "W_mh", "P_i", "P_f", "P_o", "Q", "W_p"]
        )
        if need[3]:
            dx = dPre2 @ W
            if mult:
                dx.addmm_(dMX.view(T * B, -1), W_mx)
            grads["x"] = dx.view(T, B, I)
        grads["h0"] = dy_next if need[4] else None
        grads["c0"] = dc_next if need[5] else None
        if need[6]:
            grads["W"] = dPre2.t() @ x2
        if need[7]:
            grads["R"] = dPre2.t() @ ctx.Mm.view(T * B, -1) if mult else _prev_product(dPre, Y, h0)
        if need[8] and ctx.has_b:
            grads["b"] = dPre2.sum(0)
        if mult:
            if need[9]:
                grads["W_mx"] = dMX.view(T * B, -1).t() @ x2
            if need[10]:
                grads["W_mh"] = _prev_product(dU, Y, h0)
        if peep:
            for k, g in ((11, "i"), (12, "f"), (13, "o")):
                if g in s.gates and need[k]:
                    d_g = dPre[:, :, s.gate_slice(g)]  # (T, B, nb)
                    c_g = C if g == "o" else torch.cat([c0.unsqueeze(0), C[:-1]])  # c_{t-1}
                    grads[f"P_{g}"] = _peep_grad(d_g, c_g, nb, cpb)
        if fgr and need[14]:
            grads["Q"] = (
                dPre[1:, :, H:].reshape(-1, G).t() @ A[:-1].reshape(-1, G)
                if T > 1
                else torch.zeros_like(Q)
            )
        if W_p is not None and need[15]:
            grads["W_p"] = DY.view(T * B, Hr).t() @ Yh.view(T * B, H)
        return (None, None, None, *grads.values())


def _chunk_steps(step_bytes: int, target: int = 1 << 20) -> int:
    """Steps per chunk of derivative factors: about ``target`` bytes per factor tensor, so
    that a chunk's factors stay in the cache (a step's widest factor is ``step_bytes``)."""
    return max(1, target // max(1, step_bytes))


def _prev_product(d: Tensor, Y: Tensor, y0: Tensor) -> Tensor:
    """Σ_t d_tᵀ y_{t-1} with y_{-1} = y0: d (T, B, K), Y (T, B, N) -> (K, N)."""
    T, B, K = d.shape
    out = d[0].t() @ y0
    if T > 1:
        out = out.addmm(d[1:].reshape(-1, K).t(), Y[:-1].reshape((T - 1) * B, -1))
    return out


def _peep_grad(d: Tensor, c: Tensor, nb: int, cpb: int) -> Tensor:
    """Σ_{t,b} δ[t, b, j] c[t, b, j, k]: d (T, B, nb), c (T, B, H) -> (nb, cpb)."""
    T, B = c.shape[:2]
    # an elementwise product and a reduction: no copy of the (strided) δ slice is needed
    return (d.unsqueeze(-1) * c.view(T, B, nb, cpb)).sum((0, 1))
