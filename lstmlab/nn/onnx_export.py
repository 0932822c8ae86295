"""ONNX export of the layer operator ``lstmlab::lstm_layer`` as the standard ONNX ``LSTM``.

    import lstmlab.nn.onnx_export  # registers the translation (needs onnxscript)
    torch.onnx.export(model, (tokens,), "model.onnx",
                      dynamic_shapes={"tokens": {0: torch.export.Dim("T")}})

``torch.onnx.export`` (torch's default dynamo exporter) captures each layer-direction of a
``lstmlab.TorchLSTM`` as the one operator of ``lstmlab.nn.ops``; this module translates it
into one ONNX ``LSTM`` node (opset 18), so that the graph keeps a dynamic sequence length and
runs in onnxruntime:

    X (T, B, I) → LSTM(X, W[iofc], R[iofc], B = [b[iofc], 0], initial_h, initial_c)
    Y (T, 1, B, H) → squeeze → (T, B, H);   Y_h, Y_c (1, B, H) → (B, H)

The engine's rows z|i|f|o are reordered to ONNX's i|o|f|c (c = the block input z). Importing
this module registers the translation with onnxscript's torch_lib registry, which the
exporter reads when an export starts (so it must be imported before ``torch.onnx.export``;
lstmlab does not import it itself, onnxscript costs seconds to import);
``translation_table()`` is the same for ``custom_translation_table=``. A ``TorchLSTM``
captured for ONNX export without it refuses in one line saying so (``lstmlab.nn.dropin``).

What the ONNX ``LSTM`` operator cannot express is refused with one line naming it
(``unsupported``, checked while the model is captured, before anything is written):
peepholes, blocks of shared-gate cells, missing or coupled gates, full gate recurrence,
activations other than tanh, gate sharpness α ≠ 1, mLSTM, projections, per-sequence lengths.
The check of the numbers is onnxruntime against torch (tests/nn/test_onnx_export.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnxscript import opset18 as op
from onnxscript.function_libs.torch_lib.registration import torch_op

from lstmlab.nn.variants import GATES, CellSpec

__all__ = ["OnnxExportError", "unsupported", "lstm_layer_onnx", "translation_table"]


class OnnxExportError(ValueError):
    """A layer the ONNX ``LSTM`` operator cannot express."""


def unsupported(spec: CellSpec, alpha: dict[str, float], lengths_given: bool) -> list[str]:
    """What of one layer-direction the ONNX ``LSTM`` operator cannot express (empty: none)."""
    why = []
    if spec.gates != GATES or spec.coupled:
        why.append(f"gates {spec.gates}" + (" coupled (CIFG)" if spec.coupled else ""))
    if spec.cells_per_block != 1:
        why.append(f"cells_per_block={spec.cells_per_block}")
    if spec.peepholes:
        why.append("peepholes")
    if spec.fgr:
        why.append("full gate recurrence")
    if spec.g != "tanh" or spec.h != "tanh":
        why.append(f"activations {spec.g!r}/{spec.h!r}")
    if any(a != 1.0 for a in alpha.values()):
        why.append(f"gate sharpness {alpha}")
    if spec.multiplicative_size is not None:
        why.append("mLSTM (multiplicative)")
    if spec.proj_size is not None:
        why.append(f"proj_size={spec.proj_size}")
    if lengths_given:
        why.append("per-sequence lengths (PackedSequence)")
    return why


def check(spec: CellSpec, alpha: dict[str, float], lengths_given: bool) -> None:
    """Raise ``OnnxExportError`` (one line) for what the ONNX ``LSTM`` cannot express."""
    why = unsupported(spec, alpha, lengths_given)
    if why:
        raise OnnxExportError(
            "ONNX export of TorchLSTM: the ONNX LSTM operator cannot express "
            + ", ".join(why)
            + "; only the torch-compatible cell (variant 'NP', gate_sharpness 1, no projection, "
            "padded input) exports"
        )


def lstm_layer_onnx(
    x,
    h0,
    c0,
    W,
    R,
    b=None,
    W_mx=None,
    W_mh=None,
    peep_i=None,
    peep_f=None,
    peep_o=None,
    Q=None,
    W_p=None,
    lengths=None,
    spec: str = "",
    alpha: Sequence[float] = (1.0, 1.0, 1.0),
):
    """The ONNX translation (onnxscript, trace mode) of one ``lstmlab::lstm_layer`` call."""
    from lstmlab.nn.ops import decode_spec

    s = decode_spec(spec)
    check(s, dict(zip(GATES, alpha, strict=True)), lengths is not None)
    H = s.hidden_size

    def onnx_order(t):  # rows z|i|f|o → i|o|f|c
        block = [op.Slice(t, [k * H], [(k + 1) * H], [0]) for k in range(4)]
        return op.Concat(block[1], block[3], block[2], block[0], axis=0)

    zero = [0]
    Wo = op.Unsqueeze(onnx_order(W), zero)
    Ro = op.Unsqueeze(onnx_order(R), zero)
    h = op.Unsqueeze(h0, zero)
    c = op.Unsqueeze(c0, zero)
    if b is None:
        Y, Y_h, Y_c = op.LSTM(x, Wo, Ro, initial_h=h, initial_c=c, hidden_size=H)
    else:
        bo = onnx_order(b)
        nought = op.Sub(bo, bo)  # the recurrent bias: the engine holds one bias
        Bo = op.Unsqueeze(op.Concat(bo, nought, axis=0), zero)
        Y, Y_h, Y_c = op.LSTM(x, Wo, Ro, Bo, initial_h=h, initial_c=c, hidden_size=H)
    return op.Squeeze(Y, [1]), op.Squeeze(Y_h, zero), op.Squeeze(Y_c, zero)


def translation_table() -> dict:
    """``{operator: translation}`` for ``torch.onnx.export(custom_translation_table=...)``."""
    return {torch.ops.lstmlab.lstm_layer.default: lstm_layer_onnx}


torch_op("lstmlab::lstm_layer", trace_only=True)(lstm_layer_onnx)
