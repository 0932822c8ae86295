"""The gate algebra of an LSTM variant, as the bptt engine evaluates it: one home for both
layouts, the R-forward pass and (as constants) the native core.

What is here, for a ``CellSpec`` s with gate sharpness α (a dict gate -> α_g):

* the activation forms: on the CPU the tanh family is k σ(s a) − k/2 (``SIGMOID_FORM``,
  ``uses_sigmoid_form``), elsewhere k' tanh(s' a) (``TANH_FORM``); ``activation`` returns
  (a, out) ↦ out = f(a), ``affine`` the in-place v ↦ k v − k/2;
* the folding of α and of the block input's argument scale into forward-only copies of the
  weights: σ(α a) with a linear in W, R, b, P, Q is σ of the scaled rows (``scaled_rows``,
  ``forward_weights``, ``z_scale``), and which pre-activation rows one sigmoid call covers right
  after the recurrent product (``sigmoid_span``);
* the derivative factors of the backward (and R-forward) pass that do not depend on the
  carried error, from the saved activations (``times_derivative``, ``factors``), a chunk of
  steps at a time in reused buffers (``FactorChunks``), and the peephole weight gradient
  Σ_{t,b} δ c (``peep_grad``).

Every function works for either layout: where a tensor's feature dimension matters it takes it
as ``fdim`` (1 feature-major (T, F, B), -1 batch-major (T, B, F)); the step bookkeeping is
``layout``'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lstmlab.engines import layout
from lstmlab.nn.activations import derivative_from_output
from lstmlab.nn.variants import CellSpec

__all__ = [
    "SIGMOID_FORM",
    "TANH_FORM",
    "FactorChunks",
    "activation",
    "affine",
    "factors",
    "forward_weights",
    "peep_grad",
    "scaled_rows",
    "sigmoid_span",
    "times_derivative",
    "uses_sigmoid_form",
    "z_scale",
]

# The block-input and cell-output activations of the tanh family are affine maps of a logistic
# sigmoid, f(a) = k σ(s a) − k/2:
#     tanh(a) = 2σ(2a) − 1        bipolar1(a) = 2σ(a) − 1        bipolar2(a) = 4σ(a) − 2
# On the CPU the engine evaluates them this way: torch's CPU tanh costs 2.8 / 5.2 ns per float32 /
# float64 element, its sigmoid 0.5 / 1.5 (`bench_lstm.py --sections activations`), and σ(s a)
# then also joins the gates' sigmoid call. The result differs from torch.tanh by at most 2 units in the last place of
# 1 (absolute). Elsewhere (CUDA) they are k' tanh(s' a) with the constants of TANH_FORM.
# The argument scale s (or s') of the block input is folded into the weights like α.
SIGMOID_FORM = {"tanh": (2.0, 2.0), "bipolar1": (1.0, 2.0), "bipolar2": (1.0, 4.0)}  # (s, k)
TANH_FORM = {"tanh": (1.0, 1.0), "bipolar1": (0.5, 1.0), "bipolar2": (0.5, 2.0)}  # (s', k')


def uses_sigmoid_form(t: Tensor) -> bool:
    """Whether the tanh-family activations of tensors like ``t`` go through a sigmoid."""
    return t.device.type == "cpu"


def z_scale(name: str, sigmoid_form: bool) -> float:
    """The factor folded into the block-input rows of W, R, b for activation ``name``."""
    if name == "identity":
        return 1.0
    return (SIGMOID_FORM if sigmoid_form else TANH_FORM)[name][0]


def scaled_rows(t, spec: CellSpec, alpha: dict[str, float], offset: int, zs: float = 1.0):
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


def forward_weights(s: CellSpec, alpha, W, R, b, Q, P_i, P_f, P_o):
    """Forward-only copies of the weights with each gate's rows scaled by its α and the
    block-input rows by the activation's argument scale: (W, R, b, Q, {gate: peephole})."""
    zs = z_scale(s.g, uses_sigmoid_form(W))
    Ws, Rs, bsc = (scaled_rows(t, s, alpha, 0, zs) for t in (W, R, b))
    Qs = scaled_rows(Q, s, alpha, s.hidden_size)
    Ps = {g: (p if p is None else p * alpha[g]) for g, p in (("i", P_i), ("f", P_f), ("o", P_o))}
    return Ws, Rs, bsc, Qs, Ps


_OFFSETS: dict[tuple, Tensor] = {}


def affine(k: float, like: Tensor) -> Callable[[Tensor], Tensor]:
    """v ↦ (v ← k v − k/2) in one pass: a cached 0-dim −k/2 plus k·v (a Python scalar would be
    copied into a tensor on every call)."""
    key = (k, like.dtype, like.device)
    c = _OFFSETS.get(key)
    if c is None:
        c = _OFFSETS[key] = torch.tensor(-k / 2, dtype=like.dtype, device=like.device)

    def affine_(v: Tensor) -> Tensor:
        return torch.add(c, v, alpha=k, out=v)

    return affine_


def activation(
    name: str, like: Tensor, prescaled: bool = False
) -> Callable[[Tensor, Tensor], Tensor]:
    """(a, out) ↦ out = f(a) for the block-input / cell-output activation ``name`` on tensors
    like ``like``, its constants resolved once (the step loops call it T times). ``prescaled``:
    the argument scale is already folded into the weights (see ``forward_weights``)."""
    if name == "identity":
        return lambda a, out: out if out is a else out.copy_(a)
    if uses_sigmoid_form(like):
        s, k = SIGMOID_FORM[name]
        affine_ = affine(k, like)
        if s != 1.0 and not prescaled:  # s = 2 (tanh): σ(a + a)

            def f(a: Tensor, out: Tensor) -> Tensor:
                return affine_(torch.sigmoid(torch.add(a, a, out=out), out=out))

        else:

            def f(a: Tensor, out: Tensor) -> Tensor:
                return affine_(torch.sigmoid(a, out=out))

        return f
    s, k = TANH_FORM[name]

    def f_tanh(a: Tensor, out: Tensor) -> Tensor:
        if s != 1.0 and not prescaled:
            a = torch.mul(a, s, out=out)
        torch.tanh(a, out=out)
        return out if k == 1.0 else out.mul_(k)

    return f_tanh


def sigmoid_span(s: CellSpec, sigmoid_form: bool) -> tuple[int, int]:
    """Pre-activation rows [lo, hi) activated by one sigmoid call right after the recurrent
    product: the gates that do not see c_t (all of them without peepholes; i and f with), and
    the block input too when its activation is of the sigmoid form (then rows [0, H) still need
    ``affine``). The rest (the block input otherwise, o with peepholes) is done on its own."""
    H = s.hidden_size
    lo = 0 if (sigmoid_form and s.g != "identity") else H
    if not s.peepholes or "o" not in s.gates:
        hi = s.n_pre
    else:
        hi = s.gate_slice("o").start
    return lo, hi


def times_derivative(
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


def factors(
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
        out["OHp"] = times_derivative(s.h, HC_, sel(A_, "o"), out=buf("OHp", H), wy=Yhat_)
        out["o"] = torch.mul(HC_, sel(SA, "o"), out=buf("o", H))  # h(c) α o(1-o)
    else:
        out["OHp"] = times_derivative(s.h, HC_, None, out=buf("OHp", H))
    out["IGp"] = times_derivative(s.g, Z_, i_c, out=buf("IGp", H))
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


class FactorChunks:
    """The backward's derivative factors (``factors``) a chunk of steps at a time, in buffers
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
        self.chunk = layout.chunk_steps(max(s.hidden_size, s.n_q) * B * A.element_size())
        self.rows = min(self.chunk, T)
        self.work: dict[str, Tensor] = {}
        self.fold = None
        if s.peepholes and s.cells_per_block == 1 and not s.fgr:
            shape = (s.blocks, 1) if fdim == 1 else (1, s.blocks)
            self.fold = {g: p.view(shape) for g, p in P.items() if p is not None}

    def __call__(self, t0: int, t1: int) -> dict[str, list[Tensor] | tuple[Tensor, ...]]:
        bs, full, fdim = self.bs[t0:t1], self.full, self.fdim
        return {k: layout.steps(v, bs, full, fdim) for k, v in self.tensors(t0, t1).items()}

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
        return factors(
            self.s, self.alpha, A[t0:t1], HC[t0:t1], Z[t0:t1], Cp, Yh, fdim, buf, self.fold
        )


def peep_grad(d: Tensor, c: Tensor, nb: int, cpb: int, fdim: int = 1) -> Tensor:
    """Σ_{t,b} δ[t, j, b] c[t, (j, k), b] -> (nb, cpb), for either layout (``fdim``: the
    feature dimension, 1 feature-major: d (T, nb, B), c (T, H, B); -1 batch-major: d (T, B, nb),
    c (T, B, H)). An elementwise product and a reduction (no copy of the strided δ slice), a
    chunk of steps at a time (≈ 1 MB of c each): the products stay in the cache instead of going
    through a (T, ·, ·) temporary (4-5x faster at T·B·H = 13 M)."""
    T = c.shape[0]
    k = layout.chunk_steps(c[0].numel() * c.element_size())
    out = None
    for t0 in range(0, T, k):
        d_, c_ = d[t0 : t0 + k], c[t0 : t0 + k]
        if fdim == 1:
            part = (d_.unsqueeze(2) * c_.view(-1, nb, cpb, c.shape[2])).sum((0, 3))
        else:
            part = (d_.unsqueeze(-1) * c_.view(-1, c.shape[1], nb, cpb)).sum((0, 1))
        out = part if out is None else out.add_(part)
    return out
