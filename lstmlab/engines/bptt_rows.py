"""The bptt engine's batch-major layout, for wide layers (see ``lstmlab.engines.bptt``).

Same equations, same inputs and outputs as ``bptt_features.LSTMLayerBPTT``; only the memory
layout of the per-step quantities differs: samples are rows, (B, features), as in
``torch.nn.LSTM``. Then the recurrent product of a step is (n, Hr)·(Hr, D) with the long side D
as BLAS's leading dimension, which the BLAS kernels run up to 1.6× faster than the
feature-major (D, Hr)·(Hr, n) when the layer is wide and the batch narrow, and the input
projection W x_t + b is one large product per chunk of steps, written straight into the
steps' rows of the activation tensor. For the
smallest layers (the long time-lag nets: a few units, batches of thousands) the feature-major
layout wins: there every gate slice of a (B, D) row is a few elements, and elementwise loops
over short strided rows are slow. ``bptt.run`` picks one by shape and dtype
(``layout.choose_layout``); the tests hold both to the autograd reference. The per-step products
(R, Rᵀ, and W_p, Q, W_mh where a variant has them) go through ``products.StepProduct``: BLAS,
or oneDNN's matmul on a packed weight for wide float32 layers.

Where the native core is built (``engines/native``: the same steps in C++, one product and one
fused pass per step), both time loops run there; this module prepares the buffers either way,
and its own loops are the native core's reference twin and fallback (``native.use_native``
decides, once per call; ``native.forced_python()`` forces these loops).

Hand-written, like ``bptt``: this is the project's subject.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmlab.engines import gates, layout, native, structured
from lstmlab.engines.products import StepProduct
from lstmlab.nn.variants import CellSpec

__all__ = ["LSTMLayerBPTTRows", "without_backward"]

without_backward = layout.without_backward  # its public path from here (tests, users)


class LSTMLayerBPTTRows(torch.autograd.Function):
    """One layer-direction over a whole (sorted) batch, batch-major; see the module docstring.

    Inputs: x (T, B, I) sorted by length (descending), h0 (B, Hr), c0 (B, H), and the dense
    weights of ``LSTMCell.weights``. ``batch_sizes``: list of n_t (rows alive at step t), or
    None when every sequence has length T. Outputs: Y (T, B, Hr), C (T, B, H), h_n, c_n.

    Forward keeps ZA = [g(z-pre) | gate activations (= q_t)], in which each step's
    pre-activations are formed and activated in place, C, HC = h(C), Y (and ŷ with a projection,
    u = W_mh y and m for mLSTM), all (T, B, ·). Backward forms the derivative factors that do
    not depend on the carried error (``gates.factors``: α σ(1−σ), o h'(c), i g'(z), …) for a
    chunk of steps at a time, so that each reverse step is a handful of multiply-adds and one
    recurrent product on cache-resident data; the weight gradients dW, dR, db are then one
    product over all steps.
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
        # the one place that picks the native loop or this module's Python loop
        # (so do the structured maps: F-LSTM's rank-r intermediate takes y_{t-1}'s place, and
        # G-LSTM's group products fill its group-ordered rows XG before they move to theirs)
        use_native = native.use_native(s, x, True, gates.uses_sigmoid_form(x))
        zs = gates.z_scale(s.g, gates.uses_sigmoid_form(x))
        # the native step applies the block input's scale itself: with every α = 1 the
        # weights go in as they are (no scaled copies of W, R, b per call; the scale is a
        # power of two, so the pre-activations are the same to the last bit)
        raw = (
            use_native
            and structured.kind(s, W, x) is None
            and all(alpha[g] == 1.0 for g in s.gates)
        )
        if raw:
            Ws, Rs, bsc, Qs, Ps = W, R, b, Q, {"i": P_i, "f": P_f, "o": P_o}
        else:
            Ws, Rs, bsc, Qs, Ps = gates.forward_weights(s, alpha, W, R, b, Q, P_i, P_f, P_o)
        # F-LSTM / G-LSTM given as their factors / groups: their own products (``structured``)
        smap = structured.make(s, alpha, W, R, x, bsc, zs)
        factorized = isinstance(smap, structured.Factorized)
        grouped = isinstance(smap, structured.Grouped)
        x2 = x.reshape(T * B, I)
        # the input projection W x_t + b, one large product per chunk of k steps (a few MB, so
        # that a chunk is still in the cache when its steps run)
        k = min(T, layout.chunk_steps(B * D * x.element_size(), target=4 << 20))
        bias = bsc if bsc is not None else x.new_zeros(D)
        mult = s.multiplicative_size is not None
        # every entry is written when all sequences are full-length; else dead rows must be 0
        new = x.new_empty if full else x.new_zeros
        # without a backward to come, the native loop keeps only what it returns (Y, C) for
        # every step: ZA for one chunk of steps (a ring), h(C) and ŷ for one step
        ring = use_native and Qs is None and not layout.keeps_graph(ctx.needs_input_grad)
        # (and, where the caller reads no cell-state trajectory, C for two steps: c_{t-1}, c_t)
        ring_c = ring and not layout.keeps_states()
        Y, C, HC = new(T, B, Hr), new(2 if ring_c else T, B, H), new(1 if ring else T, B, H)
        # [g(z) | gate activations] of every step, in the pre-activation order. Each step's
        # pre-activations are formed in its own row and activated in place. (Dead rows keep
        # the padding's input projection: the weight-gradient products meet them with δ = 0.)
        # (a structured map writes only the rows alive: the dead ones then start at 0)
        ZA = x.new_zeros(T, B, D) if (smap is not None and not full) else x.new_empty(T, B, D)
        if ring:  # (the ring's chunk: sized for the cache, see ``layout.ring_chunk``)
            k = min(T, layout.ring_chunk(B * D * x.element_size(), D * I * x.element_size(), B))
            ZA = x.new_empty(k, B, D)
        Z, A = ZA[..., :H], ZA[..., H:]
        Yh = new(1 if ring else T, B, H) if W_p is not None else None
        if mult:
            M = s.multiplicative_size
            MX = (x2 @ W_mx.t()).view(T, B, M)
            U, Mm = new(T, B, M), new(T, B, M)
        if use_native:  # the same steps in C++ (``engines/native``)
            mx = (MX, U, Mm, W_mh.detach().contiguous()) if mult else None
            if factorized:  # u_t in smap.U (its input part there already), a_t = W2 u_t
                mx = (None, smap.U, None, smap.W1h.detach().contiguous())
                Rs = smap.W2s_t.t()
            elif grouped:  # XG holds the input part and the bias: none added again
                mx = (None, smap.XG, None, smap.Rgs_t.detach().transpose(1, 2).contiguous())
                bias = x.new_zeros(D)
                Ws = Rs = x.new_zeros(D, 1)  # (the groups' weights are 3-D; these go unread)
            native.forward_rows(
                s, bs, k, x2, Ws, bias, Rs, h0, c0, ZA, C, HC, Y, Yh, W_p, Qs, Ps, mx,
                zs if raw else 1.0,
            )  # fmt: skip
        else:
            # the per-step products (BLAS, or oneDNN on a packed weight: see ``products``)
            rec = StepProduct(Rs, T, B) if smap is None else None
            proj = StepProduct(W_p, T, B) if W_p is not None else None
            qrec = StepProduct(Qs, T, B) if Qs is not None else None
            mh = StepProduct(W_mh, T, B) if mult else None
            has_i, has_f, has_o = ("i" in s.gates), ("f" in s.gates), ("o" in s.gates)
            # one sigmoid call right after the product covers columns [lo, hi)
            # (see gates.sigmoid_span)
            lo, hi = gates.sigmoid_span(s, gates.uses_sigmoid_form(x))
            act_g, act_h = gates.activation(s.g, x, prescaled=True), gates.activation(s.h, x)
            z_affine_ = gates.affine(gates.SIGMOID_FORM[s.g][1], x) if lo == 0 else None
            if_gates = [g for g in ("i", "f") if g in s.gates] if s.peepholes else []
            o_late = has_o and s.peepholes  # the output gate sees c_t

            # per-step views, restricted to the rows alive, made once: the loop only indexes lists
            def steps(v: Tensor) -> list[Tensor]:
                return layout.steps(v, bs, full, -1)

            PRE, Ys, Cs, HCs, Zs = steps(ZA), steps(Y), steps(C), steps(HC), steps(Z)
            ZAsig = steps(ZA[..., lo:hi]) if hi > lo else None
            Yhs = steps(Yh) if Yh is not None else Ys
            AI = steps(A[..., s.q_slice("i")]) if has_i else None
            AF = steps(A[..., s.q_slice("f")]) if has_f else None
            AO = steps(A[..., s.q_slice("o")]) if has_o else None
            if qrec is not None:
                AG = steps(A)  # rows [H, D) of a step: the gates' pre-activations, then activations
            if mult:
                MXs, Us, Ms = steps(MX), steps(U), steps(Mm)
            if if_gates:
                lo_if, hi_if = s.gate_slice(if_gates[0]).start, s.gate_slice(if_gates[-1]).stop
                PIF = steps(ZA[..., lo_if:hi_if])
                P_if = torch.stack([Ps[g] for g in if_gates])  # (gates, nb, cpb)
                P_if = P_if.view(-1, nb) if cpb == 1 else P_if
            Po = Ps["o"].view(1, nb) if (o_late and cpb == 1) else Ps.get("o")  # α-scaled
            y_prev, c_prev = h0, c0
            for t in range(T):
                n = bs[t]
                if n == 0:
                    break
                if smap is None and t % k == 0:  # the input projection of the next chunk of steps
                    m = min(k, T - t)
                    torch.addmm(
                        bias, x2[t * B : (t + m) * B], Ws.t(), out=ZA[t : t + m].view(m * B, D)
                    )
                if not full:
                    y_prev, c_prev = y_prev[:n], c_prev[:n]
                pre, z_t, c_t, hc_t = PRE[t], Zs[t], Cs[t], HCs[t]
                if mult:
                    u = mh.into(Us[t], y_prev)
                    rec.add_(pre, torch.mul(MXs[t], u, out=Ms[t]))
                elif smap is not None:
                    smap.step(t, pre, y_prev)
                else:
                    rec.add_(pre, y_prev)
                if qrec is not None and t > 0:
                    qrec.add_(AG[t], AG[t - 1] if full else AG[t - 1][:n])
                if if_gates:  # peepholes from c_{t-1}
                    p_if = PIF[t].view(n, len(if_gates), nb)
                    if cpb == 1:
                        p_if.addcmul_(c_prev.view(n, 1, nb), P_if)
                    else:
                        p_if.add_((c_prev.view(n, 1, nb, cpb) * P_if).sum(-1))
                if lo == H:
                    act_g(z_t, z_t)
                if ZAsig is not None:
                    ZAsig[t].sigmoid_()
                if z_affine_ is not None:
                    z_affine_(z_t)
                i = AI[t] if has_i else None
                f = AF[t] if has_f else None  # CIFG has no f rows: f = 1 − i
                if s.coupled:  # c = (1 − i) c_{t-1} + i z = lerp(c_{t-1}, z, i): one pass
                    if cpb == 1:
                        torch.lerp(c_prev, z_t, i, out=c_t)
                    else:
                        c3, zc = c_t.view(n, nb, cpb), z_t.view(n, nb, cpb)
                        torch.lerp(c_prev.view(n, nb, cpb), zc, i.unsqueeze(-1), out=c3)
                elif cpb == 1:
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
                act_h(c_t, hc_t)
                y_hat = Yhs[t]
                if has_o:
                    o = AO[t]
                    if o_late:  # o still holds its pre-activation: add c_t's peepholes, activate
                        if cpb == 1:
                            o.addcmul_(c_t, Po)
                        else:
                            o.add_((c_t.view(n, nb, cpb) * Po).sum(-1))
                        o.sigmoid_()
                    if cpb == 1:
                        torch.mul(o, hc_t, out=y_hat)
                    else:
                        torch.mul(
                            o.unsqueeze(-1), hc_t.view(n, nb, cpb), out=y_hat.view(n, nb, cpb)
                        )
                else:
                    y_hat.copy_(hc_t)
                if proj is not None:
                    proj.into(Ys[t], y_hat)
                y_prev, c_prev = Ys[t], c_t
        if full:
            h_n, c_n = Y[-1].clone(), C[(T - 1) % C.shape[0]].clone()
        else:
            last = layout.last_index(bs, B, x.device)
            rows = torch.arange(B, device=x.device)
            # (a row's last c stays in its ring slot: later steps touch only the rows alive)
            h_n, c_n = Y[last, rows], C[last % C.shape[0], rows]
        if ring_c:
            C = C[:0]  # no trajectory: the caller reads none
        ctx.spec, ctx.alpha, ctx.bs = s, alpha, batch_sizes
        ctx.save_for_backward(x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y, C)
        ctx.ZA, ctx.Z, ctx.A, ctx.HC, ctx.Yh = ZA, Z, A, HC, Yh
        ctx.smap, ctx.native = smap, use_native
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
        fgr, peep = Q is not None, s.peepholes

        # ---- derivative factors (α σ(1−σ), o h'(c), i g'(z), …) that do not depend on the
        # carried error, formed a chunk of steps at a time: few calls per step, and a chunk
        # stays in cache until the reverse loop has used it (see ``layout.chunk_steps``)
        P = {"i": P_i, "f": P_f, "o": P_o}
        Yhat = Yh if Yh is not None else Y  # o ⊙ h(c)
        chunks = gates.FactorChunks(s, alpha, A, HC, Z, C, c0, Yhat, -1, bs, full, P)
        chunk, fold = chunks.chunk, chunks.fold
        fac: dict[str, list] = {}  # name -> per-step views of the current chunk (index t - t0)
        t0 = T
        dY_any = dY is not None

        new = x.new_empty if full else x.new_zeros  # dead rows must stay 0
        dPre = new(T, B, D)  # δ of every step
        DY = new(T, B, Hr) if W_p is not None else None
        if mult:
            MX, U = ctx.MX, ctx.U
            dU, dMX = new(T, B, MX.shape[2]), new(T, B, MX.shape[2])
        # at the top of step t, dy_next holds ∂E/∂y_t of the rows alive: carried + output
        dy_next = dh_n.clone() if dh_n is not None else x.new_zeros(B, Hr)
        dc_next = dc_n.clone() if dc_n is not None else x.new_zeros(B, H)
        dq_next = x.new_zeros(B, G) if fgr else None
        smap = ctx.smap

        if ctx.native:  # the same steps in C++ (``engines/native``)
            dy_next, dc_next = dy_next.contiguous(), dc_next.contiguous()
            mx = (MX, U, W_mh.detach().contiguous(), dU, dMX) if mult else None
            if isinstance(smap, structured.Factorized):  # e_t = δ_t W2 into E, dy = e_t W1h
                smap.begin_backward(full)
                mx = (None, None, smap.W1h.detach().contiguous(), smap.E, None)
            elif smap is not None:  # G-LSTM: δ_t in group order into DG, dy = its slices Rg
                smap.begin_backward(full)
                mx = (None, None, smap.Rg.detach().contiguous(), smap.DG, None)
            native.backward_rows(
                s, alpha, bs, ctx.ZA, C, HC, c0, R, W_p, Q, P, dY, dC, dPre, DY,
                dy_next, dc_next, dq_next, mx,
            )  # fmt: skip
        else:
            # per-step views made once, restricted to the rows alive: the loop only indexes lists
            def steps(v: Tensor) -> list[Tensor]:
                return layout.steps(v, bs, full, -1)

            dPres, dPz = steps(dPre), steps(dPre[..., :H])
            dPg = {g: steps(dPre[..., s.gate_slice(g)]) for g in s.gates}
            dPgates = steps(dPre[..., H:]) if fgr else None
            dYs = steps(dY) if dY_any else None
            dCs = steps(dC) if dC is not None else None
            DYs = steps(DY) if DY is not None else None
            if mult:
                MXs, Us, dUs, dMXs = steps(MX), steps(U), steps(dU), steps(dMX)
            qs = {g: s.q_slice(g) for g in s.gates}
            dc_buf = x.new_empty(B, H)
            dyh_buf = x.new_empty(B, H) if W_p is not None else None
            # the per-step products δ R, dy W_p, δ_gates Q, du W_mh (see ``products``)
            rec = StepProduct(R.t(), T, B) if smap is None else None
            if smap is not None:
                smap.begin_backward(full)
            proj = StepProduct(W_p.t(), T, B) if W_p is not None else None
            qrec = StepProduct(Q.t(), T, B) if fgr else None
            mh = StepProduct(W_mh.t(), T, B) if mult else None
            n_after = 0  # rows alive at step t + 1
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
                dy = dyn = dy_next if full else dy_next[:n]
                dcn = dc_next if full else dc_next[:n]
                if dY_any and n > n_after:  # rows whose last step is t: their output error enters
                    dy_next[n_after:n] += dYs[t][n_after:n]
                if W_p is not None:
                    DYs[t].copy_(dy)
                    dy = proj.into(dyh_buf[:n], dy)  # dŷ
                dc = torch.addcmul(dcn, dy, f_ohp[r], out=dc_buf[:n])
                if dCs is not None:
                    dc += dCs[t]
                for g, dP, K in f_gates:  # δ_g = Σ_cells d ⊙ K_g, written into dPre
                    d, out = (dy if g == "o" else dc), dP[t]
                    if cpb == 1:
                        torch.mul(d, K[r], out=out)
                    else:
                        torch.sum((d * K[r]).view(n, nb, cpb), -1, out=out)
                    if fgr:  # + dq_g α σ'(·)
                        out.addcmul_(dq_next[:n, qs[g]], f_sa[r][:, qs[g]])
                    if g == "o" and peep and not fold:
                        _add_peep(dc, out, P["o"], n, nb, cpb)
                torch.mul(dc, f_igp[r], out=dPz[t])
                # carried to step t-1
                if f_fc is not None:
                    torch.mul(dc, f_fc[r], out=dcn)
                else:
                    dcn.copy_(dc)
                if peep and not fold:
                    for g, dP, _ in f_gates:
                        if g != "o":
                            _add_peep(dcn, dP[t], P[g], n, nb, cpb)
                if fgr:
                    qrec.into(dq_next[:n], dPgates[t])
                dY_prev = dYs[t - 1][:n] if (dY_any and t > 0) else None  # folded into the product
                if mult:
                    dm = rec(dpre)  # (n, M)
                    du = torch.mul(dm, MXs[t], out=dUs[t])
                    torch.mul(dm, Us[t], out=dMXs[t])
                    mh.into(dyn, du, dY_prev)
                elif smap is not None:
                    smap.back_step(t, dpre, dyn, dY_prev)
                else:
                    rec.into(dyn, dpre, dY_prev)
                n_after = n
        # ---- Eq. 18: weight gradients as a few large products after the time loop
        need = ctx.needs_input_grad
        dPre2 = dPre.view(T * B, D)
        x2 = x.reshape(T * B, I)
        grads = dict.fromkeys(
            ["x", "h0", "c0", "W", "R", "b", "W_mx", "W_mh", "P_i", "P_f", "P_o", "Q", "W_p"]
        )
        if smap is not None:  # dx, dW, dR from the map's own intermediates
            dx, grads["W"], grads["R"] = smap.grads(dPre2, x, Y, h0, need[3], need[6], need[7])
            grads["x"] = dx
            need = list(need)
            need[3] = need[6] = need[7] = False
        if need[3]:
            dx = dPre2 @ W
            if mult:
                dx.addmm_(dMX.view(T * B, -1), W_mx)
            grads["x"] = dx.view(T, B, I)
        grads["h0"] = dy_next if need[4] else None
        grads["c0"] = dc_next if need[5] else None
        # dW, dR and db as one product over the T·B rows: [x_t | y_{t-1} | 1]ᵀ δ (mLSTM: m_t
        # instead of y_{t-1}); one wide product runs faster than three narrow ones
        blocks = [(n, w) for n, w, k in (("W", I, 6), ("R", R.shape[1], 7), ("b", 1, 8)) if need[k]]
        blocks = [(n, w) for n, w in blocks if n != "b" or ctx.has_b]
        if blocks:
            V = x.new_empty(T * B, sum(w for _, w in blocks))
            col, where = 0, {}
            for name, w in blocks:
                v, where[name] = V[:, col : col + w], (col, col + w)
                col += w
                if name == "W":
                    v.copy_(x2)
                elif name == "b":
                    v.fill_(1.0)
                elif mult:
                    v.copy_(ctx.Mm.view(T * B, -1))
                else:  # step t meets y_{t-1}, step 0 meets h0
                    v[:B].copy_(h0)
                    v[B:].copy_(Y[:-1].reshape((T - 1) * B, Hr))
            VtD = V.t() @ dPre2  # (columns of V, D)
            for name, (a, b_) in where.items():
                grads[name] = VtD[a] if name == "b" else VtD[a:b_].t().contiguous()
        if mult:
            if need[9]:
                grads["W_mx"] = dMX.view(T * B, -1).t() @ x2
            if need[10]:
                grads["W_mh"] = _prev_product(dU, Y, h0)
        if peep:
            for k, g in ((11, "i"), (12, "f"), (13, "o")):
                if g in s.gates and need[k]:
                    d_g = dPre[:, :, s.gate_slice(g)]  # (T, B, nb)
                    if g == "o":  # the output gate sees c_t
                        grads["P_o"] = gates.peep_grad(d_g, C, nb, cpb, -1)
                    else:  # i and f see c_{t-1}: step 0 meets c0
                        P_g = gates.peep_grad(d_g[:1], c0.unsqueeze(0), nb, cpb, -1)
                        grads[f"P_{g}"] = (
                            P_g + gates.peep_grad(d_g[1:], C[:-1], nb, cpb, -1) if T > 1 else P_g
                        )
        if fgr and need[14]:
            grads["Q"] = (
                dPre[1:, :, H:].reshape(-1, G).t() @ A[:-1].reshape(-1, G)
                if T > 1
                else torch.zeros_like(Q)
            )
        if W_p is not None and need[15]:
            grads["W_p"] = DY.view(T * B, Hr).t() @ Yh.view(T * B, H)
        return (None, None, None, *grads.values())


def _add_peep(acc: Tensor, d: Tensor, p: Tensor, n: int, nb: int, cpb: int) -> None:
    """acc += P ⊙ δ: a gate's error through its peepholes, (n, H) += (n, nb) ⊙ P (nb, cpb)."""
    if cpb == 1:
        acc.addcmul_(d, p.view(1, nb))
    else:
        acc.view(n, nb, cpb).addcmul_(d.unsqueeze(-1), p)


def _prev_product(d: Tensor, Y: Tensor, y0: Tensor) -> Tensor:
    """Σ_t d_tᵀ y_{t-1} with y_{-1} = y0: d (T, B, K), Y (T, B, N) -> (K, N)."""
    T, B, K = d.shape
    out = d[0].t() @ y0
    if T > 1:
        out = out.addmm(d[1:].reshape(-1, K).t(), Y[:-1].reshape((T - 1) * B, -1))
    return out
