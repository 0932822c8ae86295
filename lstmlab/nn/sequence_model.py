"""``SequenceModel``: a recurrent stack plus an output layer with its matching loss.

    model = SequenceModel(input_size, hidden_size, output_size, output="linear", read="every",
                          cell="lstm", **cell_kwargs)
    logits = model(inputs, lengths)          # inputs (B, T, I) batch-first, zero-padded
    loss = model.loss(logits, batch)         # scalar mean loss

Outputs (``output=``) and their losses, per step or per sequence (seed 000: E = ‖y − O‖²/2):

| output    | prediction         | loss per step / sequence                        | matching pair |
|-----------|--------------------|-------------------------------------------------|---------------|
| linear    | a                  | ½ Σ_k (a_k − t_k)²                              | yes           |
| sigmoid   | σ(a)               | ½ Σ_k (σ(a_k) − t_k)² (the 1997 output unit)    | no            |
| bernoulli | σ(a)               | −Σ_k t_k log σ(a_k) + (1 − t_k) log(1 − σ(a_k)) | yes           |
| softmax   | softmax(a)         | −log softmax(a)_t (targets are class indices)   | yes           |
| ctc       | log-softmax(a)     | CTC negative log-likelihood (blank = class 0)   | —             |

``read="every"`` reads an output at every valid step; ``read="last"`` at each sequence's last
valid step (for a bidirectional stack: the forward direction's last valid output and the
backward direction's output at step 0, i.e. h_n of the top layer). ``ctc`` reads every step.

Normalisation (seed 000 Sec. 3.3): the loss is the mean over samples; with ``read="every"``
each sample's summed per-step loss is divided by its own length. For softmax targets, the
class index −100 marks steps that carry no target (they add nothing; the length still
divides). CTC: mean over samples of each sequence's negative log-likelihood.

Symbol inputs (word-level language models): with ``embedding=E`` the inputs are symbol indices
(B, T, 1) in [0, input_size) (−1 on padding) and a learned table (input_size, E) maps them to
the vectors the recurrent stack reads (``embedding="auto"``: E = the stack's output size, the
projection size with LSTMP) — a lookup instead of a product with a one-hot vector of the
vocabulary's size. ``model(inputs, lengths, initial_state=(h0, c0))`` starts an LSTM stack
from a given state, and ``model.final_state`` keeps (h_n, c_n) of the last forward pass
(detached) so that a state can be carried from one chunk of a text to the next.

The output layer starts ``head_init="uniform"`` (U[−s, s], s = ``head_scale`` or 0.1) or
``"sparse"`` (M&S's released HF-RNN readout: 15 non-zero N(0, 1)·s inputs per output unit,
s = ``head_scale`` or 1); its bias starts at 0 either way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmlab.data import Batch, lengths_mask
from lstmlab.nn.gru import GRU
from lstmlab.nn.lstm import LSTM
from lstmlab.nn.mrnn import MRNN
from lstmlab.nn.rnn import RNN

OUTPUTS = ("linear", "sigmoid", "bernoulli", "softmax", "ctc")
READS = ("every", "last")
CELLS = {"lstm": LSTM, "rnn": RNN, "mrnn": MRNN, "gru": GRU}
IGNORE_INDEX = -100


HEAD_INITS = ("uniform", "sparse")


class SequenceModel(nn.Module):
    """Recurrent stack + output layer (see the module docstring)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        output: str = "linear",
        read: str = "every",
        cell: str = "lstm",
        num_layers: int = 1,
        bidirectional: bool = False,
        engine: str = "bptt",
        dtype: torch.dtype | None = None,
        device=None,
        seed: int | None = None,
        embedding: int | str | None = None,
        head_init: str = "uniform",
        head_scale: float | None = None,
        **cell_kwargs: Any,
    ):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
        if read not in READS:
            raise ValueError(f"read must be one of {list(READS)}, got {read!r}")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {list(CELLS)}, got {cell!r}")
        if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 1:
            raise ValueError(f"output_size must be a positive integer, got {output_size!r}")
        if output == "ctc" and read != "every":
            raise ValueError("output='ctc' reads every step; use read='every'")
        if output == "ctc" and output_size < 2:
            raise ValueError("output='ctc' needs output_size >= 2 (class 0 is the blank)")
        self.output = output
        self.read = read
        self.cell_type = cell
        self.output_size = output_size
        kw: dict[str, Any] = dict(
            num_layers=num_layers,
            bidirectional=bidirectional,
            batch_first=True,
            dtype=dtype,
            device=device,
        )
        if cell == "lstm":
            kw.update(engine=engine, seed=seed)
        else:
            if engine != "bptt" and engine != "autograd":
                raise ValueError(
                    f"engine {engine!r} exists only for cell='lstm'; the {cell} baseline is "
                    "differentiated by autograd"
                )
            if seed is not None:
                torch.manual_seed(seed)
        unknown = set(cell_kwargs) - _accepted(cell)
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for cell={cell!r}; valid: {sorted(_accepted(cell))}"
            )
        self.embed = None
        self.final_state: tuple[Tensor, Tensor] | None = None
        if embedding is not None:
            width = cell_kwargs.get("proj_size") or hidden_size
            E = width if embedding == "auto" else embedding
            if isinstance(E, bool) or not isinstance(E, int) or E < 1:
                raise ValueError(
                    f"embedding must be a positive integer or 'auto', got {embedding!r}"
                )
            # row input_size is the padding symbol: zero, and never updated
            self.embed = nn.Embedding(
                input_size + 1, E, padding_idx=input_size, dtype=dtype, device=device
            )
            g = torch.Generator().manual_seed(seed + 2) if seed is not None else None
            with torch.no_grad():
                w = torch.rand(self.embed.weight.shape, generator=g, dtype=self.embed.weight.dtype)
                self.embed.weight.copy_((w * 2 - 1) * 0.1)
                self.embed.weight[input_size].zero_()
            input_size = E
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {list(HEAD_INITS)}, got {head_init!r}")
        if head_scale is not None and not (
            isinstance(head_scale, int | float)
            and not isinstance(head_scale, bool)
            and math.isfinite(head_scale)
            and head_scale > 0
        ):
            raise ValueError(f"head_scale must be a finite number > 0 or None, got {head_scale!r}")
        self.rnn = CELLS[cell](input_size, hidden_size, **kw, **cell_kwargs)
        rec_out = _output_width(self.rnn)
        generator = torch.Generator().manual_seed(seed + 1) if seed is not None else None
        self.head = nn.Linear(rec_out, output_size, dtype=dtype, device=device)
        with torch.no_grad():
            wt = self.head.weight
            if head_init == "uniform":  # same scale as the recurrent weights (1997: U[-0.1, 0.1])
                w = torch.rand(wt.shape, generator=generator, dtype=wt.dtype)
                wt.copy_((w * 2 - 1) * (0.1 if head_scale is None else head_scale))
            else:  # sparse (M&S's released readout): 15 non-zero N(0, 1)·s inputs per output
                k = min(15, rec_out)
                cols = torch.rand(wt.shape, generator=generator).argsort(dim=1)[:, :k]
                vals = torch.randn((wt.shape[0], k), generator=generator, dtype=wt.dtype)
                wt.zero_()
                wt.scatter_(1, cols.to(wt.device), vals.to(wt.device) * (head_scale or 1.0))
            self.head.bias.zero_()

    # ------------------------------------------------------------------ engine / schedules
    @property
    def engine(self) -> str:
        return getattr(self.rnn, "engine", "autograd")

    @engine.setter
    def engine(self, name: str) -> None:
        if isinstance(self.rnn, LSTM):
            self.rnn.engine = name
        elif name not in ("bptt", "autograd"):
            raise ValueError(f"engine {name!r} exists only for cell='lstm'")

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.rnn, "set_epoch"):
            self.rnn.set_epoch(epoch)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        inputs: Tensor,
        lengths: Tensor | None = None,
        *,
        return_states: bool = False,
        initial_state: tuple[Tensor, Tensor] | None = None,
    ):
        """inputs (B, T, I) -> logits (B, T, O) for read="every", (B, O) for read="last".

        With ``return_states=True`` also returns states (B, T, S): every layer's outputs and,
        for LSTMs, cell states, concatenated (zero at padded steps). ``initial_state``: (h0, c0)
        of an LSTM stack (zero when None); ``self.final_state`` keeps (h_n, c_n), detached."""
        if self.embed is not None:
            if inputs.shape[-1] != 1:
                raise ValueError(
                    f"with an embedding the inputs are symbol indices (B, T, 1), got shape "
                    f"{tuple(inputs.shape)}"
                )
            idx = inputs[..., 0].long()
            inputs = self.embed(torch.where(idx < 0, self.embed.padding_idx, idx))
        if isinstance(self.rnn, LSTM):
            out, (h_n, c_n), cells = self.rnn(
                inputs, initial_state, lengths=lengths, return_states=True
            )
            self.final_state = (h_n.detach(), c_n.detach())
        elif initial_state is not None:
            raise ValueError("initial_state is only for cell='lstm'")
        else:
            out, h_n = self.rnn(inputs, lengths=lengths)
            cells = []
        if self.read == "last":
            nd = 2 if self.rnn.bidirectional else 1
            top = h_n[-nd:]  # (nd, B, Hr)
            feats = top.transpose(0, 1).reshape(top.shape[1], -1)
            logits = self.head(feats)
        else:
            logits = self.head(out)
            if lengths is not None:
                mask = lengths_mask(torch.as_tensor(lengths, device=out.device), out.shape[1])
                logits = logits * mask.unsqueeze(-1).to(logits.dtype)
        if not return_states:
            return logits
        states = torch.cat([out, *cells], dim=2)
        return logits, states

    def output_nonlinearity(self, logits: Tensor) -> Tensor:
        """The output layer's nonlinearity: identity, σ, σ, softmax or log-softmax."""
        if self.output == "linear":
            return logits
        if self.output in ("sigmoid", "bernoulli"):
            return torch.sigmoid(logits)
        if self.output == "softmax":
            return torch.softmax(logits, dim=-1)
        return torch.log_softmax(logits, dim=-1)

    def predict(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.output_nonlinearity(self(inputs, lengths))

    # ------------------------------------------------------------------ losses
    def per_step_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of each output read: logits (..., O) -> (...). Not for CTC."""
        if self.output == "linear":
            return 0.5 * (logits - targets).pow(2).sum(-1)
        if self.output == "sigmoid":
            return 0.5 * (torch.sigmoid(logits) - targets).pow(2).sum(-1)
        if self.output == "bernoulli":
            return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)
        if self.output == "softmax":
            flat = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                reduction="none",
                ignore_index=IGNORE_INDEX,
            )
            return flat.view(targets.shape)
        raise ValueError("per_step_loss is not defined for output='ctc'")

    def per_sample_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """(B,) loss of each sample, normalised as in the module docstring."""
        self._check_targets(logits, batch)
        if self.output == "ctc":
            logp = torch.log_softmax(logits, dim=-1).transpose(0, 1)  # (T, B, O)
            return F.ctc_loss(
                logp,
                batch.targets,
                batch.lengths,
                batch.target_lengths,
                blank=0,
                reduction="none",
                zero_infinity=False,
            )
        per = self.per_step_loss(logits, batch.targets)
        if self.read == "last":
            return per
        mask = lengths_mask(batch.lengths.to(per.device), per.shape[1]).to(per.dtype)
        return (per * mask).sum(1) / batch.lengths.to(per.dtype)

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """Scalar mean over samples of ``per_sample_loss``."""
        return self.per_sample_loss(logits, batch).mean()

    def _check_targets(self, logits: Tensor, batch: Batch) -> None:
        t = batch.targets
        if self.output == "ctc":
            if batch.target_lengths is None:
                raise ValueError("output='ctc' needs batch.target_lengths")
            return
        if self.output == "softmax":
            if t.dtype.is_floating_point:
                raise ValueError("softmax targets must be integer class indices")
            if tuple(t.shape) != tuple(logits.shape[:-1]):
                raise ValueError(
                    f"softmax targets must have shape {tuple(logits.shape[:-1])}, got {tuple(t.shape)}"
                )
            valid = t[t != IGNORE_INDEX]
            if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.output_size):
                raise ValueError(
                    f"class indices must lie in [0, {self.output_size - 1}] (or -100 for no target)"
                )
            return
        if tuple(t.shape) != tuple(logits.shape):
            raise ValueError(
                f"targets must have shape {tuple(logits.shape)} for output={self.output!r}, "
                f"read={self.read!r}; got {tuple(t.shape)}"
            )

    def extra_repr(self) -> str:
        return f"output={self.output!r}, read={self.read!r}, cell={self.cell_type!r}"


def _output_width(rnn: nn.Module) -> int:
    nd = 2 if rnn.bidirectional else 1
    return (getattr(rnn, "proj_size", None) or rnn.hidden_size) * nd


def _accepted(cell: str) -> set[str]:
    import inspect

    params = inspect.signature(CELLS[cell].__init__).parameters
    fixed = {"self", "input_size", "hidden_size", "num_layers", "bidirectional", "batch_first"}
    fixed |= {"dtype", "device", "engine", "seed"}
    return {p for p in params if p not in fixed}
