"""One LSTM layer-direction on the fast ``bptt`` engine, with double backward by recomputation.

The ``bptt`` engine's hand-written backward is a first-order gradient: it works on activations
saved in the forward pass, which are not themselves functions of the inputs in autograd's
eyes, so differentiating through that backward (``create_graph=True``: gradient penalties,
MAML, ``gradgradcheck``, Hessian-vector products by double backward) cannot be done from it.
``run_layer`` wraps the engine in one more ``torch.autograd.Function``:

- forward: the ``bptt`` engine, on detached copies of the inputs, inside a private graph;
- backward without ``create_graph`` (the usual case): the engine's own backward, through that
  private graph — the same numbers and nearly the same cost as calling the engine directly;
- backward with ``create_graph=True`` (autograd runs the backward with grad mode on): the
  forward is recomputed from the saved inputs with the ``autograd`` reference engine (the
  cell's plain step loop), and its gradient is taken with ``create_graph=True``. The result is
  the same first-order gradient (the two engines agree to round-off, tested), now itself a
  differentiable function of the inputs and of the incoming gradients, so any order works.

Under a ``torch.func`` transform (``grad``, ``jvp``, ``vmap``, …) or forward-mode AD the layer
runs on the reference engine from the start (``needs_reference``).

The dense weights come in already assembled (``LSTMCell.weights`` layout, rows ``z|i|f|o``),
so a single "dense" cell spec serves every variant (F-LSTM and G-LSTM are assembled into W and
R before this point, and the assembly is ordinary autograd).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.autograd import forward_ad

from lstmlab.engines import autograd as autograd_engine
from lstmlab.engines import bptt as bptt_engine
from lstmlab.nn.lstm_cell import LSTMCell
from lstmlab.nn.variants import CellSpec

# the order of the dense weights, as ``bptt.run`` hands them to the engine
WEIGHT_NAMES = ("W", "R", "b", "W_mx", "W_mh", "peep_i", "peep_f", "peep_o", "Q", "W_p")


class DenseCell:
    """The engines' view of one layer-direction: a dense ``CellSpec`` and its weights as plain
    tensors (no ``nn.Module``); ``weights`` and ``step`` are ``LSTMCell``'s own."""

    weights = LSTMCell.weights
    step = LSTMCell.step

    def __init__(self, spec: CellSpec, tensors: dict[str, Tensor | None]):
        self.spec = dense_spec(spec)
        for name in WEIGHT_NAMES:
            setattr(self, name, tensors.get(name))


def dense_spec(spec: CellSpec) -> CellSpec:
    """The spec with F-LSTM's factors and G-LSTM's groups already multiplied out."""
    if spec.factorization_rank is None and spec.groups == 1:
        return spec
    return dataclasses.replace(spec, factorization_rank=None, groups=1)


def run_layer(
    spec: CellSpec,
    tensors: dict[str, Tensor | None],
    x: Tensor,
    lengths: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    alpha: dict[str, float],
    engine: str = "bptt",
):
    """x (T, B, I) → Y (T, B, Hr), C (T, B, H), h_n (B, Hr), c_n (B, H) for one
    layer-direction with dense weights ``tensors`` (names of ``WEIGHT_NAMES``)."""
    weights = [tensors.get(n) for n in WEIGHT_NAMES]
    inputs = [x, h0, c0, *weights]
    if engine == "autograd" or needs_reference(inputs):
        return autograd_engine.run(DenseCell(spec, tensors), x, lengths, h0, c0, alpha)
    if not torch.is_grad_enabled() or not any(
        t is not None and t.requires_grad for t in inputs
    ):  # no graph wanted: the engine alone
        return bptt_engine.run(DenseCell(spec, tensors), x, lengths, h0, c0, alpha)
    return _FastLayer.apply(dense_spec(spec), alpha, lengths, x, h0, c0, *weights)


def needs_reference(inputs) -> bool:
    """Whether the call runs under what only the reference engine supports: a ``torch.func``
    transform (grad, jvp, vmap, jacrev, …) or forward-mode AD (a dual tensor among the
    inputs). The engine's ``autograd.Function`` has neither a ``setup_context`` for functorch
    nor a ``jvp``."""
    if torch._C._are_functorch_transforms_active():
        return True
    if forward_ad._current_level >= 0:
        return any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in inputs)
    return False


def _cell(spec: CellSpec, weights) -> DenseCell:
    return DenseCell(spec, dict(zip(WEIGHT_NAMES, weights, strict=True)))


class _FastLayer(torch.autograd.Function):
    """See the module docstring."""

    @staticmethod
    def forward(ctx, spec, alpha, lengths, x, h0, c0, *weights):
        inputs = (x, h0, c0, *weights)
        leaves = [
            None if t is None else t.detach().requires_grad_(need)
            for t, need in zip(inputs, ctx.needs_input_grad[3:], strict=True)
        ]
        with torch.enable_grad():
            outs = bptt_engine.run(
                _cell(spec, leaves[3:]), leaves[0], lengths, leaves[1], leaves[2], alpha
            )
        ctx.spec, ctx.alpha, ctx.lengths = spec, alpha, lengths
        ctx.leaves, ctx.outs = leaves, outs
        ctx.save_for_backward(*inputs)
        ctx.set_materialize_grads(False)
        return tuple(o.detach() for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        wanted = [i for i, need in enumerate(ctx.needs_input_grad[3:]) if need]
        pairs = [(o, g) for o, g in zip(ctx.outs, grads, strict=True) if g is not None]
        result: list[Tensor | None] = [None] * len(ctx.leaves)
        if not pairs or not wanted:
            return (None, None, None, *result)
        if torch.is_grad_enabled():
            # create_graph=True: recompute with the autograd reference engine on the saved
            # inputs (connected to the outer graph) and differentiate that, keeping the graph
            saved = ctx.saved_tensors
            x, h0, c0, weights = saved[0], saved[1], saved[2], saved[3:]
            outs = autograd_engine.run(_cell(ctx.spec, weights), x, ctx.lengths, h0, c0, ctx.alpha)
            pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if g is not None]
            inputs = [saved[i] for i in wanted]
            got = torch.autograd.grad(
                [o for o, _ in pairs],
                inputs,
                [g for _, g in pairs],
                create_graph=True,
                allow_unused=True,
            )
        else:
            got = torch.autograd.grad(
                [o for o, _ in pairs],
                [ctx.leaves[i] for i in wanted],
                [g for _, g in pairs],
                retain_graph=True,  # a second backward (retain_graph=True outside) must work
                allow_unused=True,
            )
        for i, g in zip(wanted, got, strict=True):
            result[i] = g
        return (None, None, None, *result)
