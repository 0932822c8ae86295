"""The bptt engine's feature-major layout: its forward and backward time loops in Python.

Per step, quantities are (features, B): seed 000's nodes in rows and samples in columns, so a
gate's or a cell group's slice is a contiguous block whose rows run over the whole batch — the
layout of the long time-lag nets (a few units, batches of thousands). The equations are the
engine's (``lstmlab.engines.bptt``); the gate algebra is ``gates``', the step bookkeeping
``layout``'s; ``bptt.run`` calls ``LSTMLayerBPTT`` when ``layout.choose_layout`` says
"features". Its batch-major twin is ``bptt_rows``; the tests hold both to the autograd engine.

Hand-written: this is the project's subject.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmlab.engines import gates, layout, native, structured
from lstmlab.nn.variants import CellSpec

__all__ = ["LSTMLayerBPTT"]


class LSTMLayerBPTT(torch.autograd.Function):
    """One layer-direction over a whole (sorted) batch; see the engine's docstring (``bptt``).

    Inputs: x (T, B, I) sorted by length (descending), h0 (B, Hr), c0 (B, H), and the dense
    weights of ``LSTMCell.weights``. ``batch_sizes``: list of n_t (rows alive at step t), or
    None when every sequence has length T. Outputs: Y (T, B, Hr), C (T, B, H), h_n, c_n.

    Layout: inside the engine every per-step quantity is feature-major, (features, B), so that a
    gate's or a cell group's slice is a contiguous block whose rows run over the whole batch (a
    (B, D) layout would make every gate slice a short strided row — slow elementwise loops when
    the network is small, as in the long time-lag problems). Forward keeps ZAT = [g(z-pre) |
    gate activations (= q_t)], in which each step's pre-activations are formed and activated in
    place, CT, HCT = h(C), YT (and ŷ with a projection, u = W_mh y and m for mLSTM), all
    (T, ·, B). Backward first forms, a chunk of steps at a time (``gates.FactorChunks``), the
    derivative factors that do not depend on the carried error (α σ(1−σ), o h'(c), i g'(z), …),
    so that each reverse step is a handful of multiply-adds and one recurrent product.
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
        Ws, Rs, bsc, Qs, Ps = gates.forward_weights(s, alpha, W, R, b, Q, P_i, P_f, P_o)
        # F-LSTM / G-LSTM given as their factors / groups: their own products (``structured``,
        # on row views: (n, features) = this layout's (features, n) transposed)
        zs = gates.z_scale(s.g, gates.uses_sigmoid_form(x))
        smap = structured.make(s, alpha, W, R, x, bsc, zs)
        xT = x.transpose(1, 2)  # (T, I, B)
        mult = s.multiplicative_size is not None
        # Per step, W x_t + b is written into that step's rows of ZAT (x_t enters the product
        # as a transposed operand, not copied), the recurrent product R y_{t-1} (mLSTM: R m_t)
        # is added to it, and the activations overwrite it.
        # the one place that picks the native loop (``engines/native``: the same steps in C++,
        # each thread a slice of the columns through the whole loop) or the Python loop below;
        # the structured maps of F-LSTM / G-LSTM run their own products in the Python loop
        use_native = smap is None and native.use_native(s, x, True, gates.uses_sigmoid_form(x))
        # without a backward to come, the native loop keeps only what it returns (Y, C) for
        # every step: the activations of one step (two with a full gate recurrence), h(C) and
        # ŷ of one
        ring = use_native and not layout.keeps_graph(ctx.needs_input_grad)
        kz, kh = ((2 if Q is not None else 1), 1) if ring else (T, T)
        # every entry is written when all sequences are full-length; else dead columns must be 0
        new = x.new_empty if full else x.new_zeros
        YT, CT, HCT = new(T, Hr, B), new(T, H, B), new(kh, H, B)
        # [g(z) | gate activations] of every step, in the pre-activation rows (dead columns stay
        # 0: the weight-gradient products meet them, with δ = 0, and 0 · garbage may be NaN)
        ZAT = new(kz, D, B)
        ZT, AT = ZAT[:, :H], ZAT[:, H:]
        YhT = new(kh, H, B) if W_p is not None else None
        if mult:
            M = s.multiplicative_size
            MXT = torch.matmul(W_mx, xT)  # (T, M, B)
            UT, MmT = new(T, M, B), new(T, M, B)
        if use_native:
            mx = (MXT, UT, MmT, W_mh.detach().contiguous()) if mult else None
            bias = bsc if bsc is not None else x.new_zeros(D)
            native.forward_features(
                s, bs, x, Ws, bias, Rs, h0, c0, ZAT, CT, HCT, YT, YhT, W_p, Qs, Ps, mx
            )  # fmt: skip
        else:  # the Python loop: the native loop's reference twin and fallback
            has_i, has_f, has_o = ("i" in s.gates), ("f" in s.gates), ("o" in s.gates)
            # one sigmoid call right after the product covers rows [lo, hi) (gates.sigmoid_span)
            lo, hi = gates.sigmoid_span(s, gates.uses_sigmoid_form(x))
            act_g, act_h = gates.activation(s.g, x, prescaled=True), gates.activation(s.h, x)
            z_affine_ = gates.affine(gates.SIGMOID_FORM[s.g][1], x) if lo == 0 else None
            if_gates = [g for g in ("i", "f") if g in s.gates] if s.peepholes else []
            o_late = has_o and s.peepholes  # the output gate sees c_t

            # per-step views, restricted to the columns alive, made once: the loop indexes lists
            def steps(v: Tensor) -> list[Tensor] | tuple[Tensor, ...]:
                return layout.steps(v, bs, full, 1)

            PRE, Zs, Cs, HCs, Ys = steps(ZAT), steps(ZT), steps(CT), steps(HCT), steps(YT)
            xTs = steps(xT)
            b_col = bsc.view(D, 1) if bsc is not None else x.new_zeros(D, 1)
            SIG = steps(ZAT[:, lo:hi]) if hi > lo else None
            Yhs = steps(YhT) if YhT is not None else Ys
            AI = steps(AT[:, s.q_slice("i")]) if has_i else None
            AF = steps(AT[:, s.q_slice("f")]) if has_f else None
            AO = steps(AT[:, s.q_slice("o")]) if has_o else None
            if Qs is not None:
                AG = steps(
                    AT
                )  # rows [H, D) of a step: the gates' pre-activations, then activations
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
                        c3, z3, cp3 = (
                            c.view(nb, cpb, n),
                            z.view(nb, cpb, n),
                            c_prev.view(nb, cpb, n),
                        )
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
            last = layout.last_index(bs, B, x.device)
            rows = torch.arange(B, device=x.device)
            h_n, c_n = Y[last, rows], C[last, rows]
        ctx.spec, ctx.alpha, ctx.bs = s, alpha, batch_sizes
        ctx.save_for_backward(x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y)
        ctx.CT, ctx.ZT, ctx.AT, ctx.HCT, ctx.YhT = CT, ZT, AT, HCT, YhT
        ctx.smap, ctx.native, ctx.ZAT = smap, use_native, ZAT
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

        P = {"i": P_i, "f": P_f, "o": P_o}

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
        smap = ctx.smap
        if ctx.native:  # the same steps in C++ (``engines/native``)
            native.backward_features(
                s, alpha, bs, ctx.ZAT, CT, HCT, c0, R, W_p, Q, P, dY, dC, dPre, DYT,
                dy_next, dc_next, dq_next,
                (MXT, UT, W_mh.detach().contiguous(), dUT, dMXT) if mult else None,
            )  # fmt: skip
        else:  # the Python loop: the native loop's reference twin and fallback
            # derivative factors (α σ(1−σ), o h'(c), i g'(z), …) that do not depend on the
            # carried error, a chunk of steps at a time (see ``gates.FactorChunks``)
            chunks = gates.FactorChunks(s, alpha, AT, HCT, ZT, CT, c0T, YhT, 1, bs, full, P)
            chunk, fold = chunks.chunk, chunks.fold
            dc_buf = x.new_empty(H, B)
            dyh_buf = x.new_empty(H, B) if W_p is not None else None
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
                return layout.steps(v, bs, full, 1)

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
                        grads["P_o"] = gates.peep_grad(d_g, CT, nb, cpb)
                    else:  # i and f see c_{t-1}: step 0 meets c0
                        P_g = gates.peep_grad(d_g[:1], c0T.unsqueeze(0), nb, cpb)
                        grads[f"P_{g}"] = (
                            P_g + gates.peep_grad(d_g[1:], CT[:-1], nb, cpb) if T > 1 else P_g
                        )
        if fgr and need[14]:
            q0 = x.new_zeros(B, G)  # q_{-1} = 0
            grads["Q"] = accumulate(dPre[:, H:], AT.transpose(1, 2), q0)
        if W_p is not None and need[15]:
            grads["W_p"] = accumulate(DYT, YhT.transpose(1, 2))
        return (None, None, None, *grads.values())


def _add_peep_fm(acc: Tensor, d: Tensor, p3: Tensor, n: int, nb: int, cpb: int) -> None:
    """acc += P ⊙ δ, feature-major: (H, n) += P (nb, [cpb,] 1) ⊙ δ (nb, n)."""
    if cpb == 1:
        acc.addcmul_(d, p3)
    else:
        acc.view(nb, cpb, n).addcmul_(d.unsqueeze(1), p3)
