"""F-LSTM and G-LSTM in the bptt engine: the pre-activations computed the way the structure
allows, never through a dense matrix (Kuchaiev & Ginsburg 2017, "Factorization tricks for LSTM
networks", seed 004).

Both variants change only the affine map [x_t, y_{t-1}] → a_t (all D gate pre-activations):

- **F-LSTM** (factorized, rank r): a_t = W2 (W1 [x_t; y_{t-1}]) + b with W1 (r, I + Hr) and
  W2 (D, r). With W1 = [W1x | W1h], the rank-r intermediate is u_t = W1x x_t + W1h y_{t-1}:
  its input part W1x x_t is one product over all steps before the loop, the step adds
  W1h y_{t-1} (r·Hr multiply-adds a row) and forms a_t = W2 u_t + b (D·r). The backward pass
  mirrors it: e_t = δ_t W2 (D·r), dy_{t-1} = e_t W1h (r·Hr), and after the loop
  dW2 = Σ_t δ_tᵀ u_t, dW1 = Σ_t e_tᵀ [x_t; y_{t-1}], dx_t = e_t W1x — each one product over the
  stored rank-r intermediates u and e. Per row and step that is r (I + Hr) + D r multiply-adds
  instead of the dense D (I + Hr).
- **G-LSTM** (k groups): group j maps its slice of x_t (I/k) and of y_{t-1} (Hr/k) to its own
  slice of z and of every gate (D/k rows): a_t = block-diag(W_j) [x_t; y_{t-1}] + b, run as k
  independent products in one batched call (``torch.bmm``) — D (I + Hr) / k multiply-adds. The
  input part is one batched product over all steps. A group's D/k pre-activations lie in the
  group-local order z | i | f | o (the layout of ``LSTMCell.Wg``, ``Rg``); ``_from_groups`` and
  ``_to_groups`` move them to and from the engine's global z | i | f | o rows (a copy of D
  numbers a row, no product).

The engine's ``LSTMLayerBPTT`` / ``LSTMLayerBPTTRows`` take, in their W and R slots, either
the dense matrices of ``LSTMCell.weights()`` or the structured parameters of
``LSTMCell.weights(structured=True)`` (F: W1, W2; G: Wg, Rg); ``make`` tells them apart by
shape, so both keep working (the dense form is what other code that wants the effective
matrices uses). Everything here works on row views, (n, features): the feature-major engine
hands in transposed views of its (features, n) tensors. The map keeps its own intermediates
batch-major, (T, B, ·), whichever the engine's layout.

The elementwise part of a step, the derivative factors and the carried errors are the
engine's; this module replaces its three products (input projection, recurrent product, their
transposes) and the weight gradients of W and R. Hand-written: this is the project's subject.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmlab.nn.variants import CellSpec

__all__ = ["Factorized", "Grouped", "kind", "make", "multiply_adds"]


def _row_scale(s: CellSpec, alpha: dict[str, float], zs: float, like: Tensor) -> Tensor | None:
    """(D,) factor per global pre-activation row: zs on the block input, α_g on gate g (the
    engine folds them into forward-only copies of the weights, see ``gates.forward_weights``);
    None when all are 1."""
    if zs == 1.0 and all(alpha[g] == 1.0 for g in s.gates):
        return None
    scale = torch.ones(s.n_pre, dtype=like.dtype, device=like.device)
    scale[: s.hidden_size] = zs
    for g in s.gates:
        scale[s.gate_slice(g)] = alpha[g]
    return scale


def make(s: CellSpec, alpha, W: Tensor, R: Tensor, x: Tensor, b: Tensor | None, zs: float):
    """The structured map for the weights given, or None when they are the dense W (D, I) and
    R (D, Hr): F-LSTM's W1 (r, I + Hr) and W2 (D, r), G-LSTM's Wg (k, D/k, I/k) and
    Rg (k, D/k, Hr/k). ``b``: the bias with the row scales already folded in (or None);
    ``zs``: the block input's argument scale."""
    k = kind(s, W, x)
    if k == "factorized":
        return Factorized(s, alpha, W, R, x, b, zs)
    if k == "grouped":
        return Grouped(s, alpha, W, R, x, b, zs)
    return None


def kind(s: CellSpec, W: Tensor, x: Tensor) -> str | None:
    """Which map ``make`` builds for the weights given: "factorized" (F-LSTM's W1), "grouped"
    (G-LSTM's Wg) or None (the dense W)."""
    if s.factorization_rank is not None and W.shape == (
        s.factorization_rank,
        x.shape[2] + s.recurrent_size,
    ):
        return "factorized"
    if s.groups > 1 and W.dim() == 3:
        return "grouped"
    return None


class Factorized:
    """F-LSTM's map (module docstring): u_t = W1 [x_t; y_{t-1}] (r), a_t = W2 u_t + b.

    ``U`` (T, B, r) keeps every u_t for dW2; ``E`` (T, B, r) keeps every e_t = δ_t W2 for dW1 and
    dx."""

    def __init__(self, s: CellSpec, alpha, W1: Tensor, W2: Tensor, x: Tensor, b, zs: float):
        T, B, I = x.shape
        r = s.factorization_rank
        self.I, self.r = I, r
        self.W1x, self.W1h, self.W2 = W1[:, :I], W1[:, I:], W2
        scale = _row_scale(s, alpha, zs, W2)
        self.W2s_t = (W2 if scale is None else W2 * scale.unsqueeze(1)).t()  # (r, D), forward
        self.bias = b if b is not None else x.new_zeros(s.n_pre)
        # the input part of every u_t: one product over all steps
        self.U = torch.mm(x.reshape(T * B, I), self.W1x.t()).view(T, B, r)
        self.E: Tensor | None = None

    # ---- forward
    def step(self, t: int, pre: Tensor, y_prev: Tensor) -> None:
        """pre (n, D) ← b + W2 (u_t + W1h y_{t-1}); y_prev (n, Hr); u_t is kept in U."""
        u = self.U[t, : pre.shape[0]]
        u.addmm_(y_prev, self.W1h.t())
        torch.addmm(self.bias, u, self.W2s_t, out=pre)

    # ---- backward
    def begin_backward(self, full: bool) -> None:
        T, B, r = self.U.shape
        self.E = self.U.new_empty(T, B, r) if full else self.U.new_zeros(T, B, r)

    def back_step(self, t: int, dpre: Tensor, dy: Tensor, add: Tensor | None) -> None:
        """dy (n, Hr) ← (δ_t W2) W1h (+ add); δ_t = dpre (n, D)."""
        e = torch.mm(dpre, self.W2, out=self.E[t, : dpre.shape[0]])
        if add is None:
            torch.mm(e, self.W1h, out=dy)
        else:
            torch.addmm(add, e, self.W1h, out=dy)

    def grads(self, dpre: Tensor, x: Tensor, Y: Tensor, h0: Tensor, need_x, need_W, need_R):
        """(dx (T, B, I), dW1 (r, I + Hr), dW2 (D, r)); dpre: δ of all steps as (T·B, D) rows
        (any strides), Y (T, B, Hr) the outputs, h0 (B, Hr)."""
        T, B, I = x.shape
        r = self.r
        E2 = self.E.view(T * B, r)
        dx = dW1 = dW2 = None
        if need_x:
            dx = torch.mm(E2, self.W1x).view(T, B, I)
        if need_W:
            dW1 = x.new_empty(r, I + Y.shape[2])
            torch.mm(E2.t(), x.reshape(T * B, I), out=dW1[:, :I])
            dh = dW1[:, I:]  # step t meets y_{t-1}, step 0 meets h0
            torch.mm(E2[:B].t(), h0, out=dh)
            if T > 1:
                dh.addmm_(E2[B:].t(), Y[:-1].reshape((T - 1) * B, -1))
        if need_R:
            dW2 = torch.mm(dpre.t(), self.U.view(T * B, r))
        return dx, dW1, dW2


class Grouped:
    """G-LSTM's map (module docstring): k batched group products, group-local rows moved to the
    global layout by ``_from_groups``.

    ``XG`` (T, B, k, D/k) holds each step's pre-activations in group order (first the input
    part, over all steps at once, then the recurrent part added at its step); ``DG`` (T, B, k,
    D/k) holds every δ_t in group order for the weight gradients."""

    def __init__(self, s: CellSpec, alpha, Wg: Tensor, Rg: Tensor, x: Tensor, b, zs: float):
        T, B, I = x.shape
        k = s.groups
        self.s, self.k, self.Dk = s, k, s.n_pre // k
        self.Ik, self.Hk = I // k, s.recurrent_size // k
        self.Wg, self.Rg = Wg, Rg
        # (global start, rows per group, group-local start) of z and of every gate
        H, nb = s.hidden_size, s.blocks
        self.sections = [(0, H // k, 0)] + [
            (s.gate_slice(g).start, nb // k, H // k + n * (nb // k)) for n, g in enumerate(s.gates)
        ]
        scale = _row_scale(s, alpha, zs, Wg)
        if scale is not None:
            local = self._to_groups(scale.view(1, -1), Wg.new_empty(1, k, self.Dk))[0]  # (k, Dk)
            Wg, Rg = Wg * local.unsqueeze(-1), Rg * local.unsqueeze(-1)
        self.Rgs_t = Rg.transpose(1, 2)  # (k, Hr/k, D/k), forward copy
        # the input part of every step, k products over all steps in one call, plus the bias
        self.XG = x.new_empty(T, B, k, self.Dk)
        xg = x.reshape(T * B, k, self.Ik).transpose(0, 1)  # (k, T·B, I/k)
        torch.bmm(xg, Wg.transpose(1, 2), out=self.XG.view(T * B, k, self.Dk).transpose(0, 1))
        if b is not None:
            self.XG += self._to_groups(b.view(1, -1), x.new_empty(1, k, self.Dk))
        self.DG: Tensor | None = None

    def _from_groups(self, g: Tensor, out: Tensor) -> Tensor:
        """out (n, D) global rows ← g (n, k, D/k) group-local rows."""
        n, k = g.shape[0], self.k
        for start, w, local in self.sections:
            out[:, start : start + k * w].view(n, k, w).copy_(g[:, :, local : local + w])
        return out

    def _to_groups(self, a: Tensor, out: Tensor) -> Tensor:
        """out (n, k, D/k) group-local rows ← a (n, D) global rows."""
        n, k = a.shape[0], self.k
        for start, w, local in self.sections:
            out[:, :, local : local + w].copy_(a[:, start : start + k * w].view(n, k, w))
        return out

    def _split(self, v: Tensor) -> Tensor:
        """(n, k·m) rows → (k, n, m): each group's slice as one batch entry (a view)."""
        return v.view(v.shape[0], self.k, -1).transpose(0, 1)

    # ---- forward
    def step(self, t: int, pre: Tensor, y_prev: Tensor) -> None:
        """pre (n, D) ← the group products of x_t and y_{t-1}, plus b, in the global rows."""
        g = self.XG[t, : pre.shape[0]]  # (n, k, D/k): input part + bias
        g.transpose(0, 1).baddbmm_(self._split(y_prev), self.Rgs_t)
        self._from_groups(g, pre)

    # ---- backward
    def begin_backward(self, full: bool) -> None:
        self.DG = self.XG.new_empty(self.XG.shape) if full else self.XG.new_zeros(self.XG.shape)

    def back_step(self, t: int, dpre: Tensor, dy: Tensor, add: Tensor | None) -> None:
        """dy (n, Hr) ← δ_t block-diag(Rg) (+ add), group by group in one batched call."""
        dg = self._to_groups(dpre, self.DG[t, : dpre.shape[0]]).transpose(0, 1)  # (k, n, D/k)
        out = self._split(dy)
        if add is None:
            torch.bmm(dg, self.Rg, out=out)
        else:
            out.copy_(torch.baddbmm(self._split(add), dg, self.Rg))

    def grads(self, dpre: Tensor, x: Tensor, Y: Tensor, h0: Tensor, need_x, need_W, need_R):
        """(dx (T, B, I), dWg (k, D/k, I/k), dRg (k, D/k, Hr/k)); arguments as for
        ``Factorized.grads`` (the δ are read from ``DG``)."""
        T, B, I = x.shape
        dg = self.DG.view(T * B, self.k, self.Dk).transpose(0, 1)  # (k, T·B, D/k)
        dx = dWg = dRg = None
        if need_x:
            dx = x.new_empty(T, B, I)
            torch.bmm(dg, self.Wg, out=self._split(dx.view(T * B, I)))
        if need_W:
            dWg = torch.bmm(dg.transpose(1, 2), self._split(x.reshape(T * B, I)))
        if need_R:
            Hr = Y.shape[2]
            yp = torch.cat([h0, Y[:-1].reshape((T - 1) * B, Hr)]) if T > 1 else h0
            dRg = torch.bmm(dg.transpose(1, 2), self._split(yp))
        return dx, dWg, dRg


def multiply_adds(s: CellSpec) -> int:
    """Multiply-adds of the map [x_t, y_{t-1}] → a_t for one row and step (forward; the backward
    costs twice this): dense D (I + Hr), F-LSTM r (I + Hr) + D r, G-LSTM D (I + Hr) / k."""
    I, Hr, D = s.input_size, s.recurrent_size, s.n_pre
    if s.factorization_rank is not None:
        r = s.factorization_rank
        return r * (I + Hr) + D * r
    return D * (I + Hr) // s.groups
