"""One LSTM layer-direction as one PyTorch operator, for ``torch.compile``, ``torch.export`` and
``torch.jit.trace``: ``torch.ops.lstmlab.lstm_layer`` and its backward
``torch.ops.lstmlab.lstm_layer_backward``.

    Y, h_n, c_n = lstm_layer(x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p,
                             lengths, spec, alpha)

x (T, B, I), h0 (B, Hr), c0 (B, H) → Y (T, B, Hr), h_n (B, Hr), c_n (B, H): the layer of
``lstmlab.engines.bptt.run`` (dense weights in the engine's layout, rows z|i|f|o, see
``fast_layer.WEIGHT_NAMES``; ``lengths`` (B,) or None; ``spec`` the ``CellSpec`` as a JSON
string, ``alpha`` the gate sharpness [α_i, α_f, α_o]). The operator is registered with
``torch.library`` so that a tracer sees it whole instead of following the Python time loop:

- its real kernel (CPU and CUDA) is the ``bptt`` engine's forward, reached through the public
  entry ``lstmlab.engines.get_engine("bptt")`` (so a compiled core behind that entry is used
  as it lands);
- its fake kernel gives the output shapes from the input shapes (T symbolic under export);
- its autograd formula calls ``lstm_layer_backward``, itself one operator: it runs the engine's
  forward again on the saved inputs and the engine's hand-written backward through it (the
  forward's activations are not outputs of this operator);
- a compiled training step (``torch.compile``, a backward to come, on the CPU) calls
  ``lstm_layer_taped`` instead: the same layer in the batch-major layout, returning its
  activations after Y, h_n, c_n (``engines.bptt.TAPE_NAMES``); its backward operator
  ``lstm_layer_taped_backward`` runs the engine's hand-written backward on them, so the forward
  runs once. ``torch.export`` and ``torch.jit.trace`` keep ``lstm_layer`` (one operator with
  the layer's three outputs, whatever the grad mode);
- a backward with ``create_graph=True`` (double backward) differentiates the reference twin
  (``lstmlab.engines.autograd``) instead, as ``fast_layer`` does.

``torch.ops.lstmlab.baseline_layer`` (and its backward) is the same for ``TorchGRU`` /
``TorchRNN``: their baseline recurrence (``baseline_run``), whose backward re-runs it under
autograd.

``lstmlab.TorchLSTM`` calls the operator while a graph is being captured (``tracing()``:
dynamo, export, ``torch.jit.trace``, ONNX export); in eager mode it keeps ``fast_layer``'s
path, which reuses the forward's activations in the backward. The ONNX translation of the
operator (to the standard ONNX ``LSTM`` operator) is in ``lstmlab.nn.onnx_export``.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import torch
from torch import Tensor

from lstmlab.engines import autograd as autograd_engine
from lstmlab.engines import bptt as bptt_engine
from lstmlab.engines import get_engine
from lstmlab.nn.fast_layer import WEIGHT_NAMES, DenseCell, dense_spec
from lstmlab.nn.gru import GRU as _LabGRU
from lstmlab.nn.rnn import RNN as _LabRNN
from lstmlab.nn.variants import GATES, CellSpec

__all__ = [
    "graph_grads",
    "lstm_layer",
    "lstm_layer_backward",
    "lstm_layer_taped",
    "lstm_layer_taped_backward",
    "run_layer",
    "spec_code",
    "decode_spec",
    "tracing",
    "baseline_layer",
    "baseline_run",
    "run_baseline",
]

_ARGS = (
    "Tensor x, Tensor h0, Tensor c0, Tensor W, Tensor R, Tensor? b, Tensor? W_mx, Tensor? W_mh, "
    "Tensor? peep_i, Tensor? peep_f, Tensor? peep_o, Tensor? Q, Tensor? W_p, Tensor? lengths, "
    "str spec, float[] alpha"
)
_N_DIFF = 3 + len(WEIGHT_NAMES)  # x, h0, c0 and the weights: the differentiable inputs


def tracing() -> bool:
    """Whether a graph is being captured (dynamo / torch.compile, torch.export, ONNX export,
    ``torch.jit.trace``), when the layer must appear as the one operator."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def spec_code(spec: CellSpec) -> str:
    """The dense ``CellSpec`` as the operator's string argument (JSON)."""
    return json.dumps(dataclasses.asdict(dense_spec(spec)), sort_keys=True)


@functools.lru_cache(maxsize=256)
def decode_spec(code: str) -> CellSpec:
    """The ``CellSpec`` of ``spec_code``."""
    d = json.loads(code)
    d["gates"] = tuple(d["gates"])
    return CellSpec(**d)


def _alpha(alpha: list[float]) -> dict[str, float]:
    return dict(zip(GATES, (float(a) for a in alpha), strict=True))


def _fresh(outs, inputs) -> list[Tensor]:
    """The outputs as the fake kernels describe them (contiguous, at offset 0), cloned where
    one shares memory with an input or an earlier output (an operator's outputs must not
    alias)."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if t is not None and t.numel()}
    result = []
    for t in outs:
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and (ptr in seen or t.storage_offset() or not t.is_contiguous()):
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        seen.add(ptr)
        result.append(t)
    return result


_AUTOGRAD_KEYS = (
    torch._C.DispatchKey.AutogradFunctionality,
    torch._C.DispatchKey.AutogradOther,
    torch._C.DispatchKey.AutogradNestedTensor,
    torch._C.DispatchKey.ADInplaceOrView,
)


def _leaf_grads(outputs_and_grads, leaves, inputs) -> list[Tensor]:
    """The backward ops' vector-Jacobian product through a recomputed forward: for every input,
    the gradient of Σ ⟨output, its incoming gradient⟩ with respect to its leaf (zeros where the
    leaf is unused, an empty tensor where it needs none). Runs under the caller's grad mode."""
    needs = [t is not None and t.requires_grad for t in leaves]
    got = graph_grads(outputs_and_grads, leaves, needs, create_graph=False)
    return [  # inputs[0]: the layer input x
        (torch.zeros_like(t) if g is None else g) if n else inputs[0].new_empty(0)
        for g, t, n in zip(got, inputs, needs, strict=True)
    ]


def _autograd_restored():
    """A context in which ATen calls record autograd again: a custom operator's kernel runs
    below the autograd dispatch key, and the backward kernel differentiates the engine."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in _AUTOGRAD_KEYS:
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


def _cell(spec: CellSpec, weights) -> DenseCell:
    return DenseCell(spec, dict(zip(WEIGHT_NAMES, weights, strict=True)))


# ------------------------------------------------------------------------------- forward
@torch.library.custom_op(
    "lstmlab::lstm_layer",
    mutates_args=(),
    schema=f"({_ARGS}) -> (Tensor, Tensor, Tensor)",
)
def lstm_layer(
    x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p, lengths, spec, alpha
):
    weights = (W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p)
    with torch.no_grad():
        Y, _, h_n, c_n = get_engine("bptt")(
            _cell(decode_spec(spec), weights), x, lengths, h0, c0, _alpha(alpha)
        )
    return tuple(_fresh((Y, h_n, c_n), (x, h0, c0, *weights)))


@lstm_layer.register_fake
def _(x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p, lengths, spec, alpha):
    s = decode_spec(spec)
    T, B = x.shape[0], x.shape[1]
    return (
        x.new_empty(T, B, s.recurrent_size),
        x.new_empty(B, s.recurrent_size),
        x.new_empty(B, s.hidden_size),
    )


# ------------------------------------------------------------------------------- backward
@torch.library.custom_op(
    "lstmlab::lstm_layer_backward",
    mutates_args=(),
    schema=f"(Tensor? gY, Tensor? gh, Tensor? gc, {_ARGS}, bool[] needs) -> Tensor[]",
)
def lstm_layer_backward(
    gY, gh, gc, x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p, lengths, spec,
    alpha, needs
):  # fmt: skip
    inputs = (x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p)
    leaves = [
        None if t is None else t.detach().requires_grad_(bool(n))
        for t, n in zip(inputs, needs, strict=True)
    ]
    with _autograd_restored(), torch.enable_grad():
        Y, _, h_n, c_n = get_engine("bptt")(
            _cell(decode_spec(spec), leaves[3:]),
            leaves[0],
            lengths,
            leaves[1],
            leaves[2],
            _alpha(alpha),
        )
        out = _leaf_grads(((Y, gY), (h_n, gh), (c_n, gc)), leaves, inputs)
    return _fresh(out, (gY, gh, gc, *inputs))


@lstm_layer_backward.register_fake
def _(
    gY, gh, gc, x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p, lengths, spec,
    alpha, needs
):  # fmt: skip
    return _fake_grads((x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p), needs)


def _fake_grads(inputs, needs) -> list[Tensor]:
    """A backward operator's outputs as its fake kernel gives them: each input's shape where
    it needs a gradient, else an empty tensor."""
    return [
        t.new_empty(t.shape) if t is not None and n else inputs[0].new_empty(0)
        for t, n in zip(inputs, needs, strict=True)
    ]


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:_N_DIFF], inputs[_N_DIFF])
    ctx.spec, ctx.alpha = inputs[_N_DIFF + 1], inputs[_N_DIFF + 2]


def _reference_grads(ctx, inputs, lengths, gY, gh, gc, needs) -> list[Tensor | None]:
    """create_graph=True: the reference twin on the saved inputs, differentiated with a graph,
    so that the gradient is itself differentiable (any order)."""
    spec, alpha = decode_spec(ctx.spec), _alpha(ctx.alpha)
    Y, _, h_n, c_n = autograd_engine.run(
        _cell(spec, inputs[3:]), inputs[0], lengths, inputs[1], inputs[2], alpha
    )
    return graph_grads(((Y, gY), (h_n, gh), (c_n, gc)), inputs, needs)


def graph_grads(outputs_and_grads, inputs, needs, create_graph: bool = True) -> list[Tensor | None]:
    """The vector-Jacobian product of the outputs with their incoming gradients (None: not
    used) for every input that ``needs`` one (else None; None too where an input is unused),
    with a graph (``create_graph``) unless told otherwise."""
    pairs = [(o, g) for o, g in outputs_and_grads if g is not None]
    wanted = [i for i, n in enumerate(needs) if n]
    grads: list[Tensor | None] = [None] * len(inputs)
    if pairs and wanted:
        got = torch.autograd.grad(
            [o for o, _ in pairs],
            [inputs[i] for i in wanted],
            [g for _, g in pairs],
            create_graph=create_graph,
            allow_unused=True,
        )
        for i, g in zip(wanted, got, strict=True):
            grads[i] = g
    return grads


def _backward(ctx, gY, gh, gc):
    saved = ctx.saved_tensors
    inputs, lengths = saved[:_N_DIFF], saved[_N_DIFF]
    needs = [bool(n) for n in ctx.needs_input_grad[:_N_DIFF]]
    if torch.is_grad_enabled() and not tracing():
        grads = _reference_grads(ctx, inputs, lengths, gY, gh, gc, needs)
    else:
        out = torch.ops.lstmlab.lstm_layer_backward(
            gY, gh, gc, *inputs, lengths, ctx.spec, ctx.alpha, needs
        )
        grads = [g if n else None for g, n in zip(out, needs, strict=True)]
    return (*grads, None, None, None)


lstm_layer.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------- with the tape as outputs
# In a compiled training step (torch.compile with dynamo's allow_rnn), ``lstm_layer``'s backward
# would run the forward again. ``lstm_layer_taped`` instead returns the batch-major layer's
# activations (``bptt.TAPE_NAMES``: C, ZA, HC and, where the variant has them, Yh, MX, U, Mm,
# each (T, B, ·), rows sorted by length) after Y, h_n, c_n, and its backward operator runs the
# engine's hand-written backward on them: the forward runs once.
def _tape_shapes(s: CellSpec, T, B) -> list[tuple]:
    H, D = s.hidden_size, s.n_pre
    shapes = [(T, B, H), (T, B, D), (T, B, H)]  # C, ZA, HC
    if s.proj_size is not None:
        shapes.append((T, B, H))  # Yh
    if s.multiplicative_size is not None:
        shapes += [(T, B, s.multiplicative_size)] * 3  # MX, U, Mm
    return shapes


def _tape_names(s: CellSpec) -> list[str]:
    names = ["C", "ZA", "HC"]
    if s.proj_size is not None:
        names.append("Yh")
    if s.multiplicative_size is not None:
        names += ["MX", "U", "Mm"]
    return names


@torch.library.custom_op(
    "lstmlab::lstm_layer_taped",
    mutates_args=(),
    schema=f"({_ARGS}, bool[] needs) -> Tensor[]",
)
def lstm_layer_taped(
    x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p, lengths, spec, alpha, needs
):  # fmt: skip
    weights = (W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p)
    s = decode_spec(spec)
    with torch.no_grad():
        Y, h_n, c_n, tape = bptt_engine.run_taped(
            _cell(s, weights), x, lengths, h0, c0, _alpha(alpha), needs
        )
    outs = [Y, h_n, c_n, *(tape[n] for n in _tape_names(s))]
    return _fresh(outs, (x, h0, c0, *weights))


@lstm_layer_taped.register_fake
def _(x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p, lengths, spec, alpha, needs):
    s = decode_spec(spec)
    T, B = x.shape[0], x.shape[1]
    outs = [x.new_empty(T, B, s.recurrent_size), x.new_empty(B, s.recurrent_size)]
    outs.append(x.new_empty(B, s.hidden_size))
    return outs + [x.new_empty(*shape) for shape in _tape_shapes(s, T, B)]


@torch.library.custom_op(
    "lstmlab::lstm_layer_taped_backward",
    mutates_args=(),
    schema=f"(Tensor? gY, Tensor? gh, Tensor? gc, Tensor Y, Tensor[] tape, {_ARGS}, "
    "bool[] needs) -> Tensor[]",
)
def lstm_layer_taped_backward(
    gY, gh, gc, Y, tape, x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p,
    lengths, spec, alpha, needs
):  # fmt: skip
    inputs = (x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p)
    s = decode_spec(spec)
    kept = dict.fromkeys(bptt_engine.TAPE_NAMES)
    kept.update(zip(_tape_names(s), tape, strict=True))
    with torch.no_grad():
        grads = bptt_engine.backward_taped(
            _cell(s, inputs[3:]), x, lengths, h0, c0, _alpha(alpha), Y, kept, gY, gh, gc, needs
        )
    out = [  # as the fake kernel: a gradient where needed, else an empty tensor
        (g if g is not None else torch.zeros_like(t)) if n else x.new_empty(0)
        for g, t, n in zip(grads, inputs, needs, strict=True)
    ]
    return _fresh(out, (gY, gh, gc, Y, *tape, *inputs))


@lstm_layer_taped_backward.register_fake
def _(
    gY, gh, gc, Y, tape, x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p,
    lengths, spec, alpha, needs
):  # fmt: skip
    return _fake_grads((x, h0, c0, W, R, b, W_mx, W_mh, peep_i, peep_f, peep_o, Q, W_p), needs)


def _taped_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:_N_DIFF], inputs[_N_DIFF], output[0], *output[3:])
    ctx.spec, ctx.alpha = inputs[_N_DIFF + 1], inputs[_N_DIFF + 2]


def _taped_backward(ctx, grads):
    saved = ctx.saved_tensors
    inputs, lengths = saved[:_N_DIFF], saved[_N_DIFF]
    Y, tape = saved[_N_DIFF + 1], saved[_N_DIFF + 2 :]
    gY, gh, gc = grads[:3]
    needs = [bool(n) for n in ctx.needs_input_grad[:_N_DIFF]]
    if torch.is_grad_enabled() and not tracing():  # create_graph=True: the reference twin
        return (*_reference_grads(ctx, inputs, lengths, gY, gh, gc, needs), None, None, None, None)
    out = torch.ops.lstmlab.lstm_layer_taped_backward(
        gY, gh, gc, Y, list(tape), *inputs, lengths, ctx.spec, ctx.alpha, needs
    )
    grads_in = [g if n else None for g, n in zip(out, needs, strict=True)]
    return (*grads_in, None, None, None, None)


lstm_layer_taped.register_autograd(_taped_backward, setup_context=_taped_setup_context)


def taped(x: Tensor, tensors) -> bool:
    """Whether a layer call while a graph is captured takes ``lstm_layer_taped``: compiling
    (not exporting, not ``torch.jit.trace``: those keep the one plain operator), a backward to
    come (grad mode, an input that requires grad), on the CPU (the batch-major loop, native
    where the core is built; other devices keep ``lstm_layer``)."""
    if not (torch.compiler.is_compiling() and torch.is_grad_enabled()):
        return False
    if torch.compiler.is_exporting() or x.device.type != "cpu":
        return False
    return any(t is not None and t.requires_grad for t in (x, *tensors))


# ------------------------------------------------------------------------------- entry
def run_layer(
    spec: CellSpec,
    tensors: dict[str, Tensor | None],
    x: Tensor,
    lengths: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    alpha: dict[str, float],
    code: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """x (T, B, I) → Y (T, B, Hr), h_n (B, Hr), c_n (B, H) through the operator; ``code``:
    ``spec_code(spec)`` when the caller keeps it (a tracer then reads a constant)."""
    weights = [tensors.get(n) for n in WEIGHT_NAMES]
    code = spec_code(spec) if code is None else code
    a = [float(alpha[g]) for g in GATES]
    if taped(x, (h0, c0, *weights)):
        needs = [t is not None and t.requires_grad for t in (x, h0, c0, *weights)]
        out = torch.ops.lstmlab.lstm_layer_taped(x, h0, c0, *weights, lengths, code, a, needs)
        return out[0], out[1], out[2]
    return torch.ops.lstmlab.lstm_layer(x, h0, c0, *weights, lengths, code, a)


# ------------------------------------------------------------------------ GRU and RNN
# TorchGRU / TorchRNN run lstmlab's baseline recurrences (autograd, no hand-written backward):
# the same operator pattern, its backward re-running the recurrence under autograd.
BASELINE_KINDS = ("gru", "tanh", "relu")
_BASELINE_ARGS = (
    "Tensor x, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias, Tensor? bias_hn, "
    "Tensor? lengths, str kind"
)


def baseline_run(kind: str, p: dict[str, Tensor | None], x: Tensor, lengths, h0: Tensor):
    """x (T, B, I), h0 (B, H) → Y (T, B, H), h_n (B, H) for the GRU ("gru") or the RNN
    ("tanh" / "relu") of ``lstmlab.nn.gru`` / ``rnn`` with torch-layout weights ``p``
    (``weight_ih``, ``weight_hh``, ``bias`` = b_ih (+ b_hh where it merges), ``bias_hn``).
    Padded steps (``lengths``) carry h and emit 0, as a packed sequence."""
    shim = _Hidden(h0.shape[-1])
    if x.shape[1] == 0:  # an empty batch (the baseline's projection reshapes by -1)
        xp = x @ p["weight_ih"].T + (0 if p["bias"] is None else p["bias"])
    else:
        xp = (_LabGRU if kind == "gru" else _LabRNN)._project(shim, p, x)
    h = h0
    outs = []
    for t in range(x.shape[0]):
        if kind == "gru":
            h_new = _LabGRU._step(shim, p, xp[t], h)
        elif kind == "relu":
            h_new = torch.relu(xp[t] + h @ p["weight_hh"].T)
        else:
            h_new = _LabRNN._step(shim, p, xp[t], h)
        if lengths is None:
            h = h_new
            outs.append(h_new)
        else:
            alive = (lengths > t).unsqueeze(1)
            h = torch.where(alive, h_new, h)
            outs.append(h_new * alive)
    return torch.stack(outs), h


class _Hidden:
    """What the baseline step functions read of their module."""

    def __init__(self, hidden_size: int):
        self.hidden_size = hidden_size


def _baseline_p(weight_ih, weight_hh, bias, bias_hn) -> dict[str, Tensor | None]:
    return {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias": bias, "bias_hn": bias_hn}


@torch.library.custom_op(
    "lstmlab::baseline_layer",
    mutates_args=(),
    schema=f"({_BASELINE_ARGS}) -> (Tensor, Tensor)",
)
def baseline_layer(x, h0, weight_ih, weight_hh, bias, bias_hn, lengths, kind):
    with torch.no_grad():
        Y, h_n = baseline_run(
            kind, _baseline_p(weight_ih, weight_hh, bias, bias_hn), x, lengths, h0
        )
    return tuple(_fresh((Y, h_n), (x, h0, weight_ih, weight_hh, bias, bias_hn)))


@baseline_layer.register_fake
def _(x, h0, weight_ih, weight_hh, bias, bias_hn, lengths, kind):
    T, B, H = x.shape[0], x.shape[1], h0.shape[-1]
    return x.new_empty(T, B, H), x.new_empty(B, H)


@torch.library.custom_op(
    "lstmlab::baseline_layer_backward",
    mutates_args=(),
    schema=f"(Tensor? gY, Tensor? gh, {_BASELINE_ARGS}, bool[] needs) -> Tensor[]",
)
def baseline_layer_backward(
    gY, gh, x, h0, weight_ih, weight_hh, bias, bias_hn, lengths, kind, needs
):  # fmt: skip
    inputs = (x, h0, weight_ih, weight_hh, bias, bias_hn)
    leaves = [
        None if t is None else t.detach().requires_grad_(bool(n))
        for t, n in zip(inputs, needs, strict=True)
    ]
    with _autograd_restored(), torch.enable_grad():
        Y, h_n = baseline_run(kind, _baseline_p(*leaves[2:]), leaves[0], lengths, leaves[1])
        out = _leaf_grads(((Y, gY), (h_n, gh)), leaves, inputs)
    return _fresh(out, (gY, gh, *inputs))


@baseline_layer_backward.register_fake
def _(gY, gh, x, h0, weight_ih, weight_hh, bias, bias_hn, lengths, kind, needs):
    return _fake_grads((x, h0, weight_ih, weight_hh, bias, bias_hn), needs)


def _baseline_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:7])
    ctx.kind = inputs[7]


def _baseline_backward(ctx, gY, gh):
    saved = ctx.saved_tensors
    inputs, lengths = saved[:6], saved[6]
    needs = [bool(n) for n in ctx.needs_input_grad[:6]]
    if torch.is_grad_enabled() and not tracing():  # create_graph=True: differentiable
        Y, h_n = baseline_run(ctx.kind, _baseline_p(*inputs[2:]), inputs[0], lengths, inputs[1])
        grads = graph_grads(((Y, gY), (h_n, gh)), inputs, needs)
    else:
        out = torch.ops.lstmlab.baseline_layer_backward(gY, gh, *inputs, lengths, ctx.kind, needs)
        grads = [g if n else None for g, n in zip(out, needs, strict=True)]
    return (*grads, None, None)


baseline_layer.register_autograd(_baseline_backward, setup_context=_baseline_setup_context)


def run_baseline(kind: str, p: dict[str, Tensor | None], x: Tensor, lengths, h0: Tensor):
    """``baseline_run`` through the operator."""
    if kind not in BASELINE_KINDS:
        raise ValueError(f"kind must be one of {BASELINE_KINDS}, got {kind!r}")
    return torch.ops.lstmlab.baseline_layer(
        x, h0, p["weight_ih"], p["weight_hh"], p.get("bias"), p.get("bias_hn"), lengths, kind
    )
