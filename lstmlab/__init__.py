"""lstmlab: LSTM-family recurrent networks trained with matrix-based full-BPTT batch learning,
and the optimizers this makes possible (SGD and momentum, L-BFGS, nonlinear CG, Hessian-free).

The public API is what this module re-exports; everything else may change.
"""

from __future__ import annotations

from lstmlab import optim, tasks  # noqa: E402  (sub-packages of the public API)
from lstmlab.data import Batch
from lstmlab.gradcheck import check_gradients
from lstmlab.nn import GRU, LSTM, MRNN, RNN, VARIANTS, TorchGRU, TorchLSTM, TorchRNN
from lstmlab.nn.sequence_model import SequenceModel
from lstmlab.objective import FunctionObjective, Objective
from lstmlab.schedules import as_schedule

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "LSTM",
    "RNN",
    "MRNN",
    "GRU",
    "TorchLSTM",
    "TorchGRU",
    "TorchRNN",
    "VARIANTS",
    "SequenceModel",
    "Objective",
    "FunctionObjective",
    "optim",
    "tasks",
    "check_gradients",
    "as_schedule",
    "__version__",
]
