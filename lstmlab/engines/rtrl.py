"""The 1997 learning rule: truncated BPTT + forward RTRL sensitivities (seed 000 Sec. 3.2).

Written by hand: this rule is one of the project's subjects and no library implements it.
Engines ``"rtrl"`` (the sensitivities of the whole batch as one tensor) and
``"rtrl-per-sample"`` (the same code looped over samples, as seed 000 says it must be done).
The forward pass is the ordinary one (outputs equal the other engines'); only the gradient
differs: it is the TRUNCATED gradient, not the gradient of the loss.

Truncation (the definition; ``truncated_step`` is the same step with ``.detach()`` at exactly
these points, and autograd through it is the reference this engine is tested against):
at every step t the inputs that come from step t-1 into the block input and the gates —
y_{t-1}, q_{t-1} (full gate recurrence) and the peephole inputs c_{t-1} of i and f — are
constants, and so is c_t where it enters the output gate's peephole. The only path through
time is the constant error carousel (CEC) c_{t-1} → c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t.

Notation of ``lstmlab.nn.lstm_cell``; cell k belongs to block j(k); u_t is the step's input
vector [x_t, y_{t-1}, q_{t-1}, 1, c_{t-1}[j(k), :]] (q only with FGR, 1 only with a bias, the
block's own cpb cell states only with peepholes). Per sample:

RTRL sensitivities (seed 000 Eqs. 5–6, generalised). Cell k depends on exactly three weight
rows: z row k, and the i and f rows of block j(k). For λ ∈ {z, i, f} (those that exist)
S^λ_t[k, :] = ∂c_t[k] / ∂w^λ_{row(λ, k)}, carried forward in time:

    S^λ_t = φ_t ⊙ S^λ_{t-1} + e^λ_t ⊗ u_t,    φ_t = f_t (1 without forget gate, 1 - i_t CIFG)
    e^z_t = i_t ⊙ g'(a^z_t)                       (Eq. 5: (∂y^c/∂x^c ∘ y^l)ᵀ y^n)
    e^i_t = i'_t ⊙ z_t   (CIFG: i'_t ⊙ (z_t - c_{t-1}), as ∂c/∂i = z - c_{t-1})   (Eq. 6)
    e^f_t = f'_t ⊙ c_{t-1}

with gate derivatives i' = α_i i (1 - i) (seed 000 Sec. 4) broadcast over a block's cells.
The z rows read only the x, y and bias columns of u (the others are carried but unused).

Errors (Eqs. 7–10; no error crosses a time step except through S):

    dy_t = ∂E/∂y_t (+ ∂E/∂h_n at the last valid step);  dŷ_t = dy_t W_p, or dy_t
    δ_t  = dŷ_t ⊙ o_t ⊙ h'(c_t) + ∂E/∂C_t (+ ∂E/∂c_n at the last valid step)      (Eq. 10)
    δ^o_t = α_o o_t (1 - o_t) ⊙ Σ_{cells of the block} dŷ_t ⊙ h(c_t)             (Eq. 9)

Gradients:

    Δw^λ_row = Σ_t Σ_{k fed by the row} δ_t[k] S^λ_t[k, :]    λ ∈ {z, i, f}        (Eq. 11)
    ΔW_o, ΔR_o, ΔQ_o, Δb_o = Σ_t δ^oᵀ_t [x_t, y_{t-1}, q_{t-1}, 1],
    ΔP_o = Σ_t δ^o_t c_t (per block),     ΔW_p = Σ_t dy_tᵀ ŷ_t                      (Eq. 12)

The columns of Δw^λ are then scattered into the dense weights of ``LSTMCell.weights()``
(W, R, b, peepholes, Q, W_p); F-LSTM / G-LSTM factors get theirs by autograd through
``weights()``.

Vectorisation — seed 000 claims the batch's sensitivities "could not be vectorized" because
memory cell statuses of different samples would mix in Eqs. 5–6. They need not: keep S for the
whole batch as one tensor (B, H, K, n_u) (K ≤ 3 weight families, n_u = |u|). The update is
elementwise over the batch (a broadcast outer product e ⊗ u), and samples meet only in
Eq. 11, which is a contraction over the batch and cells (one einsum per step). The Python
loop runs over time only; memory of S is O(B·H·n_u), nothing of S is stored per step.
The direct terms e_t of all steps are formed before the loop, (T, B, H, K): the size of the
activations the forward pass saves anyway (as the BPTT engine does).
``"rtrl-per-sample"`` runs the same backward one sample at a time (S of shape (1, H, K, n_u))
after a batched forward; ``"rtrl:per-sample"`` (the generic suffix of ``lstmlab.LSTM``) loops
the forward pass over samples too.

Unequal lengths: the batch is sorted by length (descending) so the n_t rows alive at step t
are the first ones; only they are updated, so a finished row's S is frozen and contributes no
more. Outputs at padded steps are zero and their gradients are ignored.

Scope: the multiplicative variant (mLSTM) is not covered by the 1997 rule (ValueError). The
rule gives no gradient for the layer input (the error is truncated before it reaches a lower
layer: seed 000 Sec. 3.3, "cannot generalize to a deeper network"), so an input that needs a
gradient — a stacked layer above another, or a user's x.requires_grad — is a ValueError; use
num_layers=1 (bidirectional is fine). The initial state h0, c0 gets no gradient (None): the
rule treats each sequence's starting state as fixed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmlab.engines.autograd import run as _autograd_run
from lstmlab.engines.packing import sort_by_length
from lstmlab.nn.activations import activate, derivative_from_output, gate
from lstmlab.nn.variants import CellSpec


def _check_supported(spec: CellSpec, engine: str) -> None:
    if spec.multiplicative_size is not None:
        raise ValueError(
            f"engine {engine!r} (the 1997 truncated BPTT/RTRL rule) does not support the "
            "multiplicative variant 'mLSTM': use engine='bptt' or 'autograd'"
        )


# ---------------------------------------------------------------------------- reference twin
def truncated_step(cell, x: Tensor, state: tuple[Tensor, Tensor, Tensor], alpha: dict[str, float]):
    """``LSTMCell.step`` with ``.detach()`` at the truncation points (the definition).

    x (B, I), state (y, c, q) -> y_t, (y_t, c_t, q_t). Autograd through a loop of this step
    gives the truncated gradient that the ``rtrl`` engines compute by hand."""
    s = cell.spec
    _check_supported(s, "rtrl")
    y_prev, c_prev, q_prev = state
    y_in, q_in, c_peep = y_prev.detach(), q_prev.detach(), c_prev.detach()  # truncated inputs
    B, H, nb, cpb = x.shape[0], s.hidden_size, s.blocks, s.cells_per_block

    if s.factorization_rank is not None:
        a = torch.cat([x, y_in], dim=1) @ cell.W1.T @ cell.W2.T
    elif s.groups > 1:
        k = s.groups
        ag = torch.einsum("bki,kdi->bkd", x.reshape(B, k, -1), cell.Wg) + torch.einsum(
            "bkh,kdh->bkd", y_in.reshape(B, k, -1), cell.Rg
        )
        a = ag.reshape(B, -1)[:, cell.group_rows]
    else:
        a = x @ cell.W.T + y_in @ cell.R.T
    if cell.b is not None:
        a = a + cell.b
    if s.fgr:
        a = torch.cat([a[:, :H], a[:, H:] + q_in @ cell.Q.T], dim=1)

    def peep(g: str, c: Tensor) -> Tensor:  # (B, blocks)
        if not s.peepholes:
            return 0.0
        return (c.reshape(B, nb, cpb) * getattr(cell, f"peep_{g}")).sum(-1)

    z = activate(s.g, a[:, :H])
    acts = {}
    for g in ("i", "f"):
        if g in s.gates:
            acts[g] = gate(a[:, s.gate_slice(g)] + peep(g, c_peep), alpha[g])
    ones = torch.ones(B, nb, dtype=x.dtype, device=x.device)
    i = acts.get("i", ones)
    f = 1.0 - i if s.coupled else acts.get("f", ones)
    # the CEC: the only path through time
    c = f.unsqueeze(-1) * c_prev.reshape(B, nb, cpb) + i.unsqueeze(-1) * z.reshape(B, nb, cpb)
    c = c.reshape(B, H)
    if "o" in s.gates:
        acts["o"] = gate(a[:, s.gate_slice("o")] + peep("o", c.detach()), alpha["o"])
    o = acts.get("o", ones)
    y_hat = (o.unsqueeze(-1) * activate(s.h, c).reshape(B, nb, cpb)).reshape(B, H)
    y = y_hat @ cell.W_p.T if s.proj_size is not None else y_hat
    q = torch.cat([acts[g] for g in s.gates], dim=1) if s.gates else q_prev
    return y, (y, c, q)


class _TruncatedCell:
    """A cell whose ``step`` is ``truncated_step`` (for the autograd reference loop)."""

    def __init__(self, cell):
        self.cell, self.spec = cell, cell.spec

    def step(self, x, state, alpha):
        return truncated_step(self.cell, x, state, alpha)


def reference_run(cell, x: Tensor, lengths, h0: Tensor, c0: Tensor, alpha: dict[str, float]):
    """The truncated gradient by definition: ``truncated_step`` in the autograd engine's loop.

    Same signature and outputs as every engine; c0 does get a (CEC) gradient here."""
    return _autograd_run(_TruncatedCell(cell), x, lengths, h0, c0, alpha)


# ---------------------------------------------------------------------------- forward
def _forward(s: CellSpec, alpha, bs, x, h0, c0, W, R, b, peep, Q, W_p):
    """The ordinary forward pass over a length-sorted batch; saves the activations.

    Returns Y (T, B, Hr), C, Z, HC = h(C) (T, B, H), A (T, B, n_q) gate activations = q_t,
    Yh (T, B, H) = ŷ (only with a projection, else None). Padded entries are zero."""
    T, B, I = x.shape
    H, nb, cpb, Hr = s.hidden_size, s.blocks, s.cells_per_block, s.recurrent_size
    new = x.new_zeros
    Y, C, Z, HC, A = new(T, B, Hr), new(T, B, H), new(T, B, H), new(T, B, H), new(T, B, s.n_q)
    Yh = new(T, B, H) if W_p is not None else None
    PX = x.reshape(T * B, I) @ W.t()  # (T·B, D): all input projections at once
    if b is not None:
        PX += b
    PX = PX.view(T, B, -1)
    for t in range(T):
        n = bs[t]
        if n == 0:
            break
        y_prev = h0[:n] if t == 0 else Y[t - 1, :n]
        c_prev = c0[:n] if t == 0 else C[t - 1, :n]
        pre = PX[t, :n] + y_prev @ R.t()  # (n, D)
        if Q is not None and t > 0:
            pre[:, H:] += A[t - 1, :n] @ Q.t()
        z = activate(s.g, pre[:, :H])
        a = A[t, :n]
        for g in ("i", "f"):
            if g in s.gates:
                pg = pre[:, s.gate_slice(g)]
                if s.peepholes:
                    pg = pg + (c_prev.view(n, nb, cpb) * peep[g]).sum(-1)
                a[:, s.q_slice(g)] = gate(pg, alpha[g])
        ones = x.new_ones(n, nb)
        i = a[:, s.q_slice("i")] if "i" in s.gates else ones
        f = 1.0 - i if s.coupled else (a[:, s.q_slice("f")] if "f" in s.gates else ones)
        c = f.unsqueeze(-1) * c_prev.view(n, nb, cpb) + i.unsqueeze(-1) * z.view(n, nb, cpb)
        hc = activate(s.h, c.view(n, H))
        if "o" in s.gates:
            po = pre[:, s.gate_slice("o")]
            if s.peepholes:
                po = po + (c * peep["o"]).sum(-1)
            o = gate(po, alpha["o"])
            a[:, s.q_slice("o")] = o
            y_hat = (o.unsqueeze(-1) * hc.view(n, nb, cpb)).view(n, H)
        else:
            y_hat = hc
        Z[t, :n], C[t, :n], HC[t, :n] = z, c.view(n, H), hc
        if W_p is not None:
            Yh[t, :n] = y_hat
            Y[t, :n] = y_hat @ W_p.t()
        else:
            Y[t, :n] = y_hat
    return Y, C, Z, HC, A, Yh


# ---------------------------------------------------------------------------- backward
def _cells(v: Tensor, cpb: int) -> Tensor:
    """Per-block values broadcast to the block's cells: (..., blocks) -> (..., H)."""
    return v if cpb == 1 else v.repeat_interleave(cpb, dim=-1)


def _truncated_grads(s: CellSpec, alpha, bs, x, h0, c0, Y, C, Z, HC, A, Yh, dY, dC, W_p):
    """The 1997 rule's gradient for one length-sorted (sub)batch (module docstring).

    dY (T, B, Hr) and dC (T, B, H) already hold the final-state errors at each row's last
    valid step and are zero at padded steps. Returns per-row-block gradients
    {"z", "i", "f", "o": (rows, n_u) sums; "P_o", "W_p"}."""
    T, B, I = x.shape
    H, nb, cpb, Hr, nq = s.hidden_size, s.blocks, s.cells_per_block, s.recurrent_size, s.n_q
    gates = s.gates
    # u_t without the peephole part, for all steps: [x_t, y_{t-1}, q_{t-1}, 1]  (T, B, n_s)
    parts = [x, torch.cat([h0.unsqueeze(0), Y[:-1]])]
    if s.fgr:
        parts.append(torch.cat([x.new_zeros(1, B, nq), A[:-1]]))
    if s.bias:
        parts.append(x.new_ones(T, B, 1))
    U = torch.cat(parts, dim=2)
    C_prev = torch.cat([c0.unsqueeze(0), C[:-1]])  # (T, B, H)

    # ---- errors, all steps at once (nothing crosses a time step)
    dyh = dY @ W_p if W_p is not None else dY  # (T, B, H)
    hprime = derivative_from_output(s.h, HC)
    if "o" in gates:
        o = A[..., s.q_slice("o")]  # (T, B, nb)
        delta = dyh * _cells(o, cpb) * hprime + dC  # Eq. 10  (T, B, H)
        d_o = (dyh * HC).view(T, B, nb, cpb).sum(-1) * (alpha["o"] * o * (1.0 - o))  # Eq. 9
    else:
        delta = dyh * hprime + dC

    # ---- direct terms e^λ_t and CEC decay φ_t, all steps at once: (T, B, H, K), (T, B, H)
    i = _cells(A[..., s.q_slice("i")], cpb) if "i" in gates else None
    e = [derivative_from_output(s.g, Z) * (i if i is not None else 1.0)]
    if i is not None:
        di = alpha["i"] * i * (1.0 - i)
        e.append(di * (Z - C_prev) if s.coupled else di * Z)
    phi = None
    if "f" in gates:
        f = _cells(A[..., s.q_slice("f")], cpb)
        e.append(alpha["f"] * f * (1.0 - f) * C_prev)
        phi = f
    elif s.coupled:
        phi = 1.0 - i
    E = torch.stack(e, dim=-1)  # (T, B, H, K)
    K = E.shape[-1]

    # ---- forward in time: S_t = φ_t ⊙ S_{t-1} + e_t ⊗ u_t;  G += Σ_b δ_t S_t  (Eqs. 5, 6, 11)
    n_s = U.shape[2]
    n_u = n_s + (cpb if s.peepholes else 0)
    S = x.new_zeros(B, H, K, n_u)  # the whole batch's sensitivities, one tensor
    G = x.new_zeros(H, K, n_u)
    for t in range(T):
        n = bs[t]
        if n == 0:
            break
        St = S[:n]  # (n, H, K, n_u), a view: rows that have finished stay frozen
        if phi is not None:
            St.mul_(phi[t, :n, :, None, None])
        if s.peepholes:  # cell k's gates see the cpb cell states of its own block
            cp = C_prev[t, :n].view(n, nb, 1, cpb).expand(n, nb, cpb, cpb).reshape(n, H, cpb)
            u = torch.cat([U[t, :n].unsqueeze(1).expand(n, H, n_s), cp], dim=2)  # (n, H, n_u)
        else:
            u = U[t, :n].unsqueeze(1)  # (n, 1, n_s)
        St.addcmul_(E[t, :n].unsqueeze(-1), u.unsqueeze(2))
        G += torch.einsum("bk,bkgm->kgm", delta[t, :n], St)

    out = {"z": G[:, 0]}  # (H, n_u); z rows read only the x, y and bias columns
    for k, g in enumerate(g for g in ("i", "f") if g in gates):
        out[g] = G[:, k + 1].reshape(nb, cpb, n_u).sum(1)  # a block's cells share its row
    if "o" in gates:  # Eq. 12: direct products, one matrix product over all steps
        out["o"] = d_o.reshape(T * B, nb).t() @ U.reshape(T * B, n_s)  # (nb, n_s)
        if s.peepholes:
            out["P_o"] = torch.einsum("tbj,tbjk->jk", d_o, C.view(T, B, nb, cpb))
    if W_p is not None:
        out["W_p"] = dY.reshape(T * B, Hr).t() @ Yh.reshape(T * B, H)
    return out


def _assemble(s: CellSpec, g: dict[str, Tensor], W, R, b, Q):
    """Scatter the row-block sums of ``_truncated_grads`` into the dense weights' gradients."""
    I, H, Hr, nq = s.input_size, s.hidden_size, s.recurrent_size, s.n_q
    cx, cy = slice(0, I), slice(I, I + Hr)
    cq = slice(I + Hr, I + Hr + (nq if s.fgr else 0))
    cb = cq.stop  # bias column, if any
    cp = slice(cb + (1 if s.bias else 0), None)  # peephole columns
    dW, dR = torch.zeros_like(W), torch.zeros_like(R)
    db = torch.zeros_like(b) if b is not None else None
    dQ = torch.zeros_like(Q) if Q is not None else None
    dP = {}
    for name, Gr in g.items():
        if name in ("P_o", "W_p"):
            continue
        rows = slice(0, H) if name == "z" else s.gate_slice(name)
        dW[rows] = Gr[:, cx]
        dR[rows] = Gr[:, cy]
        if db is not None:
            db[rows] = Gr[:, cb]
        if name != "z":
            if dQ is not None:
                dQ[s.q_slice(name)] = Gr[:, cq]
            if s.peepholes:
                dP[name] = g["P_o"] if name == "o" else Gr[:, cp]
    return dW, dR, db, dP, dQ, g.get("W_p")


def _add(acc: dict[str, Tensor] | None, g: dict[str, Tensor]) -> dict[str, Tensor]:
    if acc is None:
        return dict(g)
    return {k: acc[k] + v for k, v in g.items()}


class LSTMLayerRTRL(torch.autograd.Function):
    """One layer-direction: ordinary forward, backward = the 1997 rule (module docstring).

    Inputs: x (T, B, I) sorted by length (descending), h0 (B, Hr), c0 (B, H) and the dense
    weights of ``LSTMCell.weights`` (mLSTM excluded). ``batch_sizes``: n_t per step, or None.
    ``per_sample``: run the backward one sample at a time. Outputs: Y, C, h_n, c_n."""

    @staticmethod
    def forward(
        ctx, spec, alpha, batch_sizes, per_sample, x, h0, c0, W, R, b, P_i, P_f, P_o, Q, W_p
    ):
        T, B, _ = x.shape
        bs = batch_sizes if batch_sizes is not None else [B] * T
        peep = {"i": P_i, "f": P_f, "o": P_o}
        Y, C, Z, HC, A, Yh = _forward(spec, alpha, bs, x, h0, c0, W, R, b, peep, Q, W_p)
        last = _last_index(bs, B, x.device)
        rows = torch.arange(B, device=x.device)
        h_n, c_n = Y[last, rows], C[last, rows]
        ctx.spec, ctx.alpha, ctx.bs, ctx.per_sample = spec, alpha, bs, per_sample
        ctx.save_for_backward(x, h0, c0, W, R, b, Q, W_p, Y, C)
        ctx.Z, ctx.HC, ctx.A, ctx.Yh = Z, HC, A, Yh
        return Y, C, h_n, c_n

    @staticmethod
    def backward(ctx, dY, dC, dh_n, dc_n):
        x, h0, c0, W, R, b, Q, W_p, Y, C = ctx.saved_tensors
        s, alpha, bs = ctx.spec, ctx.alpha, ctx.bs
        T, B, _ = x.shape
        # errors of the final states enter at each row's last valid step; padding gets none
        last = _last_index(bs, B, x.device)
        rows = torch.arange(B, device=x.device)
        alive = torch.arange(B, device=x.device) < torch.tensor(bs, device=x.device)[:, None]
        alive = alive.unsqueeze(-1).to(x.dtype)  # (T, B, 1)
        dY = dY * alive
        dC = dC * alive
        dY[last, rows] += dh_n
        dC[last, rows] += dc_n
        saved = (x, h0, c0, Y, C, ctx.Z, ctx.HC, ctx.A, ctx.Yh, dY, dC)
        if not ctx.per_sample:
            g = _truncated_grads(s, alpha, bs, *saved[:9], dY, dC, W_p)
        else:  # seed 000: "we have to loop through the samples in a batch"
            g = None
            for r in range(B):
                L = int(last[r]) + 1
                one = [v[:L, r : r + 1] if v is not None and v.dim() == 3 else v for v in saved]
                one[1], one[2] = h0[r : r + 1], c0[r : r + 1]
                g = _add(g, _truncated_grads(s, alpha, [1] * L, *one[:9], one[9], one[10], W_p))
        dW, dR, db, dP, dQ, dWp = _assemble(s, g, W, R, b, Q)
        return (
            None,
            None,
            None,
            None,
            None,  # x: the rule gives no gradient for the layer input (checked in run)
            None,  # h0, c0: fixed starting state
            None,
            dW,
            dR,
            db,
            dP.get("i"),
            dP.get("f"),
            dP.get("o"),
            dQ,
            dWp,
        )


def _last_index(bs: list[int], B: int, device) -> Tensor:
    """Last alive step of each (sorted) row, from the batch sizes n_t."""
    bs_t = torch.tensor(bs, device=device)
    return (bs_t.unsqueeze(1) > torch.arange(B, device=device).unsqueeze(0)).sum(0) - 1


def _run(cell, x, lengths, h0, c0, alpha, per_sample: bool, engine: str):
    s = cell.spec
    _check_supported(s, engine)
    if torch.is_grad_enabled() and x.requires_grad:
        raise ValueError(
            f"engine {engine!r} (the 1997 truncated BPTT/RTRL rule) gives no gradient for the "
            "layer input: the error is truncated before it reaches a lower layer, so it cannot "
            "train a stacked network (use num_layers=1; bidirectional is fine) or give dE/dx "
            "(use engine='bptt')"
        )
    w = cell.weights()
    args = (w["W"], w["R"], w["b"], *(w["peep"].get(g) for g in "ifo"), w["Q"], w["W_p"])
    T, B, _ = x.shape
    packing = sort_by_length(lengths, T)
    if packing is None:
        return LSTMLayerRTRL.apply(s, alpha, None, per_sample, x, h0, c0, *args)
    perm, inv, batch_sizes = packing
    Y, C, h_n, c_n = LSTMLayerRTRL.apply(
        s, alpha, batch_sizes, per_sample, x[:, perm], h0[perm], c0[perm], *args
    )
    return Y[:, inv], C[:, inv], h_n[inv], c_n[inv]


def run(cell, x: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor, alpha: dict[str, float]):
    """``"rtrl"``: x (T, B, I) -> Y (T, B, Hr), C (T, B, H), h_n, c_n; whole-batch sensitivities."""
    return _run(cell, x, lengths, h0, c0, alpha, per_sample=False, engine="rtrl")


def run_per_sample(
    cell, x: Tensor, lengths: Tensor | None, h0: Tensor, c0: Tensor, alpha: dict[str, float]
):
    """``"rtrl-per-sample"``: as ``run``, the backward looping over the samples."""
    return _run(cell, x, lengths, h0, c0, alpha, per_sample=True, engine="rtrl-per-sample")
