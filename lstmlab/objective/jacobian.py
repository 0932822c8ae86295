"""J v and Jᵀ u of a model's outputs at one point: the two halves of every curvature product.

J is the Jacobian of the model's logits z (and, for structural damping, of its states s) with
respect to the flat parameter vector. A curvature operator builds one of these once per point
and then asks for J v and Jᵀ u many times (``CurvatureOperator``):

``FastJacobian`` (a ``SequenceModel`` with an LSTM on the ``bptt`` engine):
    set-up   one bptt forward pass that keeps its graph, recording each layer's tape
             (``engines.rop.recording``);
    J v      the R-forward pass through every layer (``engines.rop_stack.stack_jvp``: one extra
             recurrent product per step), then the output layer's tangent by hand;
    Jᵀ u     a backward pass through the kept graph: the hand-written bptt backward.

``ReferenceJacobian`` (any model; the reference twin of the fast one):
    set-up   forward on ``objective.curvature_engine`` (default ``autograd``) and r(u) = Jᵀ u
             with ``create_graph`` for a dummy cotangent u (linear in u);
    J v      ∂(r(u)·v)/∂u: the "double backward" R-op without forward mode;
    Jᵀ u     a backward pass through the kept graph.

Written by hand: curvature products are this project's subject.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lstmlab.engines import rop, rop_stack
from lstmlab.nn.lstm import LSTM

if TYPE_CHECKING:  # pragma: no cover
    from lstmlab.objective.model import Objective

__all__ = ["FastJacobian", "ReferenceJacobian", "fast_products_available"]


def fast_products_available(model: torch.nn.Module) -> tuple[bool, str]:
    """(whether ``FastJacobian`` serves ``model``, why not)."""
    from lstmlab.nn.sequence_model import SequenceModel

    if not isinstance(model, SequenceModel):
        return False, f"the model is a {type(model).__name__}, not a SequenceModel"
    if not isinstance(model.rnn, LSTM):
        return False, f"cell={model.cell_type!r}: only LSTM layers have the fast R-forward pass"
    if model.engine != "bptt":
        return False, f"the model's engine is {model.engine!r}, not 'bptt'"
    if not isinstance(model.head, torch.nn.Linear):
        return False, "the output layer is not a torch.nn.Linear"
    return True, ""


class ReferenceJacobian:
    """J v by double backward and Jᵀ u by backward, on the reference engine's graph.

    ``outputs``: which of "z" (logits) and "s" (states) J covers; ``parts`` labels the tensors
    ``jvp`` returns and ``vjp`` takes (here one per output). The forward graph is kept (``x``,
    ``z``), so an exact-Hessian product can be built on the same forward pass."""

    def __init__(self, obj: Objective, x0: Tensor, outputs: tuple[str, ...]) -> None:
        x = x0.clone().requires_grad_(True)
        need_states = "s" in outputs
        with obj.engine(obj.curvature_engine):
            out = obj.forward(x, return_states=need_states)
        self.z, s = out if need_states else (out, None)
        self.x = x
        self._outs = [self.z if k == "z" else s for k in outputs]
        self.parts = list(outputs)
        self._us = [torch.zeros_like(o, requires_grad=True) for o in self._outs]
        self._jt_u = None
        if self._outs:
            (self._jt_u,) = torch.autograd.grad(self._outs, x, self._us, create_graph=True)

    def jvp(self, v: Tensor) -> list[Tensor]:
        """[J v] per part, in the order of ``parts``."""
        return list(torch.autograd.grad(self._jt_u, self._us, v, retain_graph=True))

    def vjp(self, cotangents: list[Tensor]) -> Tensor:
        """Jᵀ u (P,) for one cotangent per part."""
        (back,) = torch.autograd.grad(self._outs, self.x, cotangents, retain_graph=True)
        return back


class FastJacobian:
    """J v by the R-forward pass through the bptt engine, Jᵀ u by its hand-written backward.

    The model must pass ``fast_products_available``. ``outputs`` as in ``ReferenceJacobian``;
    the states "s" come in pieces (``parts``): the stack's output, then each layer's cell
    states, the tensors the states are concatenated from (B, T, ·), so that neither J v nor
    Jᵀ u pays for the concatenation."""

    def __init__(self, obj: Objective, x0: Tensor, outputs: tuple[str, ...]) -> None:
        model = obj.model
        ok, why = fast_products_available(model)
        if not ok:
            raise ValueError(f"fast curvature products are not available: {why}")
        self.obj, self.model, self.outputs = obj, model, outputs
        x = x0.clone().requires_grad_(True)
        captured: list = []
        hook = model.rnn.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            with rop.recording() as tapes:
                self.z = obj.forward(x)
        finally:
            hook.remove()
        self.x = x
        self.tapes = tapes
        rnn_out, (h_n, _), cells = captured[-1]  # (B, T, D·Hr), h_n (L·D, B, Hr), [(B, T, D·H)]
        self._rnn_out, self._h_n = rnn_out.detach(), h_n.detach()
        self._outs: list[Tensor] = []
        self.parts: list[str] = []
        if "z" in outputs:
            self._outs.append(self.z)
            self.parts.append("z")
        if "s" in outputs:  # the pieces of ``model(..., return_states=True)``'s states
            self._outs += [rnn_out, *cells]
            self.parts += ["s"] * (1 + len(cells))
        self._params = {n: t.detach() for n, t in obj._as_dict(x0).items()}
        b = obj.batch
        self._lengths = b.lengths.to(device=b.inputs.device, dtype=torch.long)
        self._mask = b.mask().to(device=b.inputs.device, dtype=x0.dtype).unsqueeze(-1)

    @torch.no_grad()
    def jvp(self, v: Tensor) -> list[Tensor]:
        """[J v] per part: the R-forward pass of the stack, then of the output layer."""
        rnn = self.model.rnn
        tangents = self.obj._as_dict(v)
        sub = {n[len("rnn.") :]: t for n, t in tangents.items() if n.startswith("rnn.")}
        params = {n[len("rnn.") :]: t for n, t in self._params.items() if n.startswith("rnn.")}
        d_out, d_cells, d_hn = rop_stack.stack_jvp(rnn, self.tapes, params, sub, self._lengths)
        if rnn.batch_first:  # the stack ran time-major
            d_out = d_out.transpose(0, 1)
            d_cells = [c.transpose(0, 1) for c in d_cells]
        result = []
        if "z" in self.outputs:
            result.append(self._head_jvp(d_out, d_hn, tangents))
        if "s" in self.outputs:
            result += [d_out, *d_cells]
        return result

    def _head_jvp(self, d_out: Tensor, d_hn: list[Tensor], tangents: dict[str, Tensor]) -> Tensor:
        """Tangent of the logits: z = head(features), the features being every step's output
        (read="every", masked) or the top layer's h_n (read="last")."""
        model = self.model
        W = self._params.get("head.weight", model.head.weight.detach())
        dW, db = tangents.get("head.weight"), tangents.get("head.bias")
        if dW is None:  # a frozen output layer
            dW = torch.zeros_like(W)
        if model.read == "last":
            nd = model.rnn.num_directions
            feats = self._h_n[-nd:].transpose(0, 1).reshape(self._h_n.shape[1], -1)
            d_feats = torch.cat(d_hn[-nd:], dim=1)
            dz = d_feats @ W.t() + feats @ dW.t()
            return dz + db if db is not None else dz
        dz = torch.matmul(d_out, W.t()).add_(torch.matmul(self._rnn_out, dW.t()))
        if db is not None:
            dz += db
        return dz.mul_(self._mask)

    def vjp(self, cotangents: list[Tensor]) -> Tensor:
        """Jᵀ u (P,) for one cotangent per part: one backward pass through the kept graph (the
        bptt backward)."""
        (back,) = torch.autograd.grad(self._outs, self.x, cotangents, retain_graph=True)
        return back
