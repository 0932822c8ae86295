"""lstmlab's modules and plain values on ``torch.load``'s ``weights_only=True`` allow-list.

Since torch 2.6 ``torch.load`` unpickles with ``weights_only=True`` by default: only classes on
an allow-list may be rebuilt. torch lists its tensors and a few plain types, not even its own
``nn.LSTM``: a whole model saved with ``torch.save(model)`` loads once the user allow-lists the
model's classes (``torch.serialization.add_safe_globals([MyModel, nn.LSTM, …])``). So that a
model holding an lstmlab layer loads wherever the same model with ``nn.LSTM`` does, importing
lstmlab adds its layers and the plain values they carry to that list (``register``):

- the drop-ins ``TorchLSTM``, ``TorchGRU``, ``TorchRNN`` and lstmlab's own layers ``LSTM``
  (with its ``LSTMCell``), ``GRU``, ``RNN``, ``MRNN``;
- ``CellSpec`` (a frozen dataclass of ints, bools and strings), ``GateSharpness`` (a dict of
  schedules) and the schedule dataclasses ``Constant``, ``Linear``, ``Exponential``,
  ``Piecewise``, ``Cosine`` (numbers only).

Why this runs no code from a file: the weights-only unpickler rebuilds an allow-listed class
with ``cls.__new__`` and fills its ``__dict__`` (or calls its ``__setstate__``; none of these
classes defines one beyond torch's ``nn.Module`` / ``RNNBase`` ones, which only store
attributes), or calls an allow-listed callable with arguments that are themselves only
allow-listed objects and plain data. None of these classes reaches ``eval``, ``import`` or
a function named by the file. A schedule made from a Python function (``_Callable``) is
deliberately NOT on the list: such a checkpoint still refuses to load under
``weights_only=True``, naming the function, because loading it would mean calling code
picked by the file.

A process must import lstmlab's layers before ``torch.load`` (the pickle names lstmlab's classes
and torch does not import modules itself), as for any third-party module's classes:
``import torch`` then ``import lstmlab`` does it (``lstmlab/__init__.py`` imports ``lstmlab.nn``
when torch is already loaded), and so does any use of ``lstmlab.nn`` or its layers; a bare
``import lstmlab`` before torch does not (it keeps the command line free of torch).
"""

from __future__ import annotations

import torch

from lstmlab import schedules
from lstmlab.nn.dropin import TorchGRU, TorchLSTM, TorchRNN
from lstmlab.nn.gru import GRU
from lstmlab.nn.lstm import LSTM
from lstmlab.nn.lstm_cell import LSTMCell
from lstmlab.nn.mrnn import MRNN
from lstmlab.nn.rnn import RNN
from lstmlab.nn.variants import CellSpec, GateSharpness

SAFE_GLOBALS: tuple[type, ...] = (
    TorchLSTM,
    TorchGRU,
    TorchRNN,
    LSTM,
    LSTMCell,
    GRU,
    RNN,
    MRNN,
    CellSpec,
    GateSharpness,
    schedules.Constant,
    schedules.Linear,
    schedules.Exponential,
    schedules.Piecewise,
    schedules.Cosine,
)


def register() -> None:
    """Add ``SAFE_GLOBALS`` to torch's weights-only allow-list (idempotent)."""
    known = set(torch.serialization.get_safe_globals())
    torch.serialization.add_safe_globals([c for c in SAFE_GLOBALS if c not in known])
