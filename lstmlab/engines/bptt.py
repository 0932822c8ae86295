"""Matrix-based full BPTT with a hand-written backward pass (seed 000 Sec. 3.3, Eqs. 13–18).

This engine is the project's subject and is written by hand. The whole batch goes through the
recurrence at once (samples are rows of one matrix). Forward, per step: one recurrent matrix
product (two for mLSTM, one more with full gate recurrence or a projection) plus elementwise
work; the input projection W x_t + b of all steps is one big product before the loop. Backward
runs in reverse time computing the error responsibilities (Eqs. 13–17, generalised to every
variant), writing δ of every step into one (T, B, D) tensor; the weight gradients of Eq. 18 are
then a few large products after the loop:

    dW = Σ_t δ_tᵀ x_t        dR = Σ_t δ_tᵀ y_{t-1}        db = Σ_t δ_t      dx_t = δ_t W

Unequal lengths: the batch is sorted by length (descending) so that at step t only the first
n_t rows are alive; they are processed as a contiguous slice, the rest are left untouched.
Outputs at padded steps are zero, and (h_n, c_n) is each sequence's state at its last valid
step — the semantics of packed sequences. Gradients of the final state enter at each row's
last valid step automatically, because a row's carried gradient is not touched after it dies.

Backward pass in the notation of ``lstmlab.nn.lstm_cell`` (per step, rows alive at t):

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

import torch
from torch import Tensor

from lstmlab.nn.activations import activate, derivative_from_output
from lstmlab.nn.variants import CellSpec


def _gate_groups(spec: CellSpec, alpha: dict[str, float]):
    """Contiguous runs of gates that can share one sigmoid call: [(gates, alpha)]."""
    runs: list[tuple[list[str], float]] = []
    for g in spec.gates:
        if g == "o":
            continue  # the output gate needs c_t first
        if runs and runs[-1][1] == alpha[g]:
            runs[-1][0].append(g)
        else:
            runs.append(([g], alpha[g]))
    return runs


def _peep_sum(c: Tensor, P: Tensor, n: int, nb: int, cpb: int) -> Tensor:
    """(P c)_j = Σ_k P[j, k] c[j, k]: c (n, H), P (blocks, cpb) -> (n, blocks)."""
    if cpb == 1:
        return c * P.view(1, nb)
    return (c.view(n, nb, cpb) * P).sum(-1)


class LSTMLayerBPTT(torch.autograd.Function):
    """One layer-direction over a whole (sorted) batch; see the module docstring.

    Inputs: x (T, B, I) sorted by length (descending), h0 (B, Hr), c0 (B, H), and the dense
    weights of ``LSTMCell.weights``. ``batch_sizes``: list of n_t (rows alive at step t), or
    None when every sequence has length T. Outputs: Y (T, B, Hr), C (T, B, H), h_n, c_n.
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
        peep = {"i": P_i, "f": P_f, "o": P_o}
        x2 = x.reshape(T * B, I)
        pre_all = (torch.addmm(b, x2, W.t()) if b is not None else x2 @ W.t()).view(T, B, D)
        mult = s.multiplicative_size is not None
        if mult:
            M = s.multiplicative_size
            MX = (x2 @ W_mx.t()).view(T, B, M)
            U = x.new_zeros(T, B, M)
            Mm = x.new_zeros(T, B, M)
        new = x.new_zeros
        Y, C, Z, HC = new(T, B, Hr), new(T, B, H), new(T, B, H), new(T, B, H)
        A = new(T, B, G)  # gate activations = q_t
        Yh = new(T, B, H) if W_p is not None else None
        runs = _gate_groups(s, alpha)
        Rt = R.t()
        Qt = Q.t() if Q is not None else None
        Wpt = W_p.t() if W_p is not None else None
        ones = None
        for t in range(T):
            n = bs[t]
            if n == 0:
                break
            pre = pre_all[t, :n]  # (n, D), this step's pre-activations, built in place
            y_prev = h0[:n] if t == 0 else Y[t - 1, :n]
            c_prev = c0[:n] if t == 0 else C[t - 1, :n]
            if mult:
                u = torch.mm(y_prev, W_mh.t(), out=U[t, :n])
                m = torch.mul(MX[t, :n], u, out=Mm[t, :n])
                pre.addmm_(m, Rt)
            else:
                pre.addmm_(y_prev, Rt)
            if Qt is not None and t > 0:
                pre[:, H:].addmm_(A[t - 1, :n], Qt)
            z = activate(s.g, pre[:, :H])
            Z[t, :n] = z
            a = A[t, :n]
            for gates, al in runs:
                lo = s.gate_slice(gates[0]).start
                hi = s.gate_slice(gates[-1]).stop
                pg = pre[:, lo:hi]
                if s.peepholes:
                    for g in gates:
                        sl = s.gate_slice(g)
                        pre[:, sl] += _peep_sum(c_prev, peep[g], n, nb, cpb)
                if al != 1.0:
                    pg.mul_(al)
                torch.sigmoid(pg, out=a[:, lo - H : hi - H])
            if "i" in s.gates:
                i = a[:, s.q_slice("i")]
            else:
                if ones is None:
                    ones = x.new_ones(B, nb)
                i = ones[:n]
            if s.coupled:
                f = 1.0 - i
            elif "f" in s.gates:
                f = a[:, s.q_slice("f")]
            else:
                f = None
            c = C[t, :n]
            c3 = c.view(n, nb, cpb)
            if f is None:
                torch.addcmul(c_prev.view(n, nb, cpb), i.unsqueeze(-1), z.view(n, nb, cpb), out=c3)
            else:
                torch.mul(f.unsqueeze(-1), c_prev.view(n, nb, cpb), out=c3)
                c3.addcmul_(i.unsqueeze(-1), z.view(n, nb, cpb))
            hc = activate(s.h, c)
            HC[t, :n] = hc
            if "o" in s.gates:
                so = s.gate_slice("o")
                po = pre[:, so]
                if s.peepholes:
                    po += _peep_sum(c, P_o, n, nb, cpb)
                if alpha["o"] != 1.0:
                    po.mul_(alpha["o"])
                o = torch.sigmoid(po, out=a[:, s.q_slice("o")])
                y_hat = (o.unsqueeze(-1) * hc.view(n, nb, cpb)).view(n, H)
            else:
                y_hat = hc
            if Wpt is not None:
                Yh[t, :n] = y_hat
                torch.mm(y_hat, Wpt, out=Y[t, :n])
            else:
                Y[t, :n] = y_hat
        if batch_sizes is None:
            h_n, c_n = Y[-1].clone(), C[-1].clone()
        else:
            last = _last_index(bs, B, x.device)
            rows = torch.arange(B, device=x.device)
            h_n, c_n = Y[last, rows], C[last, rows]
        ctx.spec, ctx.alpha, ctx.bs = s, alpha, bs
        ctx.save_for_backward(x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y, C)
        ctx.Z, ctx.A, ctx.HC, ctx.Yh = Z, A, HC, Yh
        if mult:
            ctx.MX, ctx.U, ctx.Mm = MX, U, Mm
        ctx.has_b = b is not None
        return Y, C, h_n, c_n

    @staticmethod
    def backward(ctx, dY, dC, dh_n, dc_n):
        x, h0, c0, W, R, W_mx, W_mh, P_i, P_f, P_o, Q, W_p, Y, C = ctx.saved_tensors
        s: CellSpec = ctx.spec
        alpha, bs = ctx.alpha, ctx.bs
        Z, A, HC, Yh = ctx.Z, ctx.A, ctx.HC, ctx.Yh
        T, B, I = x.shape
        H, nb, cpb, Hr, G, D = (
            s.hidden_size,
            s.blocks,
            s.cells_per_block,
            s.recurrent_size,
            s.n_q,
            s.n_pre,
        )
        mult = s.multiplicative_size is not None
        peep = {"i": P_i, "f": P_f, "o": P_o}
        dPre = x.new_zeros(T, B, D)  # δ of every step; rows not alive stay 0
        DY = x.new_zeros(T, B, Hr) if W_p is not None else None
        if mult:
            MX, U = ctx.MX, ctx.U
            dU = x.new_zeros(T, B, MX.shape[2])
            dMX = x.new_zeros(T, B, MX.shape[2])
        dy_next = dh_n.clone()
        dc_next = dc_n.clone()
        dq_next = x.new_zeros(B, G) if Q is not None else None
        has = {g: g in s.gates for g in ("i", "f", "o")}
        gp_g = lambda v: derivative_from_output(s.g, v)  # noqa: E731
        gp_h = lambda v: derivative_from_output(s.h, v)  # noqa: E731
        for t in reversed(range(T)):
            n = bs[t]
            if n == 0:
                continue
            a = A[t, :n]
            dpre = dPre[t, :n]
            dy = dY[t, :n] + dy_next[:n]  # (n, Hr)
            if W_p is not None:
                DY[t, :n] = dy
                dyh = dy @ W_p  # (n, H)
            else:
                dyh = dy
            hc = HC[t, :n]
            dc = dc_next[:n] + dC[t, :n]
            if has["o"]:
                so, qo = s.gate_slice("o"), s.q_slice("o")
                o = a[:, qo]
                do = (dyh * hc).view(n, nb, cpb).sum(-1)
                if dq_next is not None:
                    do += dq_next[:n, qo]
                d_o = dpre[:, so]
                torch.mul(do, o * (1.0 - o), out=d_o)
                if alpha["o"] != 1.0:
                    d_o.mul_(alpha["o"])
                dc += ((dyh * gp_h(hc)).view(n, nb, cpb) * o.unsqueeze(-1)).view(n, H)
                if s.peepholes:
                    dc += (d_o.unsqueeze(-1) * P_o).view(n, H)
            else:
                dc += dyh * gp_h(hc)
            c_prev = c0[:n] if t == 0 else C[t - 1, :n]
            z = Z[t, :n]
            dc3 = dc.view(n, nb, cpb)
            i = a[:, s.q_slice("i")] if has["i"] else None
            if s.coupled:
                f = 1.0 - i
            elif has["f"]:
                f = a[:, s.q_slice("f")]
            else:
                f = None
            dcc = (dc * c_prev).view(n, nb, cpb).sum(-1) if (has["f"] or s.coupled) else None
            if has["i"]:
                di = (dc * z).view(n, nb, cpb).sum(-1)
                if s.coupled:
                    di -= dcc
                if dq_next is not None:
                    di += dq_next[:n, s.q_slice("i")]
                d_i = dpre[:, s.gate_slice("i")]
                torch.mul(di, i * (1.0 - i), out=d_i)
                if alpha["i"] != 1.0:
                    d_i.mul_(alpha["i"])
            if has["f"]:
                df = dcc
                if dq_next is not None:
                    df = df + dq_next[:n, s.q_slice("f")]
                d_f = dpre[:, s.gate_slice("f")]
                torch.mul(df, f * (1.0 - f), out=d_f)
                if alpha["f"] != 1.0:
                    d_f.mul_(alpha["f"])
            dz = dc if i is None else (dc3 * i.unsqueeze(-1)).view(n, H)
            torch.mul(dz, gp_g(z), out=dpre[:, :H])
            # carried gradients for step t-1
            dc_prev = dc if f is None else (dc3 * f.unsqueeze(-1)).view(n, H)
            if s.peepholes:
                for g in ("i", "f"):
                    if has[g]:
                        dc_prev = dc_prev + (dpre[:, s.gate_slice(g)].unsqueeze(-1) * peep[g]).view(
                            n, H
                        )
            if mult:
                dm = dpre @ R  # (n, M)
                du = torch.mul(dm, MX[t, :n], out=dU[t, :n])
                torch.mul(dm, U[t, :n], out=dMX[t, :n])
                dy_next[:n] = du @ W_mh
            else:
                dy_next[:n] = dpre @ R
            dc_next[:n] = dc_prev
            if dq_next is not None:
                dq_next[:n] = dpre[:, H:] @ Q
        # ---- Eq. 18: weight gradients as a few large products after the time loop
        need = ctx.needs_input_grad
        dPre2 = dPre.view(T * B, D)
        x2 = x.reshape(T * B, I)
        grads = dict.fromkeys(
            ["x", "h0", "c0", "W", "R", "b", "W_mx", "W_mh", "P_i", "P_f", "P_o", "Q", "W_p"]
        )
        if need[3]:
            grads["x"] = (dPre2 @ W).view(T, B, I)
            if mult:
                grads["x"] += (dMX.view(T * B, -1) @ W_mx).view(T, B, I)
        grads["h0"] = dy_next if need[4] else None
        grads["c0"] = dc_next if need[5] else None
        if need[6]:
            grads["W"] = dPre2.t() @ x2
        if need[7]:
            if mult:
                grads["R"] = dPre2.t() @ ctx.Mm.view(T * B, -1)
            else:
                grads["R"] = _prev_product(dPre, Y, h0)
        if need[8] and ctx.has_b:
            grads["b"] = dPre2.sum(0)
        if mult:
            if need[9]:
                grads["W_mx"] = dMX.view(T * B, -1).t() @ x2
            if need[10]:
                grads["W_mh"] = _prev_product(dU, Y, h0)
        if s.peepholes:
            for k, g in ((11, "i"), (12, "f"), (13, "o")):
                if has[g] and need[k]:
                    d_g = dPre[:, :, s.gate_slice(g)]  # (T, B, nb)
                    if g == "o":
                        grads["P_o"] = _peep_grad(d_g, C, nb, cpb)
                    else:
                        grads[f"P_{g}"] = _peep_grad(d_g[1:], C[:-1], nb, cpb) + _peep_grad(
                            d_g[:1], c0.unsqueeze(0), nb, cpb
                        )
        if Q is not None and need[14] and T > 1:
            grads["Q"] = dPre[1:, :, H:].reshape(-1, G).t() @ A[:-1].reshape(-1, G)
        elif Q is not None and need[14]:
            grads["Q"] = torch.zeros_like(Q)
        if W_p is not None and need[15]:
            grads["W_p"] = DY.view(T * B, Hr).t() @ Yh.view(T * B, H)
        return (None, None, None, *grads.values())


def _prev_product(d: Tensor, Y: Tensor, y0: Tensor) -> Tensor:
    """Σ_t d_tᵀ y_{t-1} with y_{-1} = y0: d (T, B, K), Y (T, B, N) -> (K, N)."""
    T, B, K = d.shape
    out = d[0].t() @ y0
    if T > 1:
        out = out.addmm(d[1:].reshape(-1, K).t(), Y[:-1].reshape((T - 1) * B, -1))
    return out


def _peep_grad(d: Tensor, c: Tensor, nb: int, cpb: int) -> Tensor:
    """Σ_{t,b} δ[t, b, j] c[t, b, j, k]: d (T, B, nb), c (T, B, H) -> (nb, cpb)."""
    return torch.einsum("tbj,tbjk->jk", d, c.reshape(*c.shape[:2], nb, cpb))


def _last_index(bs: list[int], B: int, device) -> Tensor:
    """Last alive step of each (sorted) row, from the batch sizes n_t."""
    bs_t = torch.tensor(bs, device=device)
    rows = torch.arange(B, device=device)
    return (bs_t.unsqueeze(1) > rows.unsqueeze(0)).sum(0) - 1


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
    if lengths is None or bool((lengths == T).all()):
        return LSTMLayerBPTT.apply(s, alpha, None, x, h0, c0, *args)
    sorted_len, perm = torch.sort(lengths, descending=True, stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(B, device=perm.device)
    steps = torch.arange(T, device=lengths.device)
    batch_sizes = (sorted_len.unsqueeze(0) > steps.unsqueeze(1)).sum(1).tolist()
    Y, C, h_n, c_n = LSTMLayerBPTT.apply(
        s, alpha, batch_sizes, x[:, perm], h0[perm], c0[perm], *args
    )
    return Y[:, inv], C[:, inv], h_n[inv], c_n[inv]
