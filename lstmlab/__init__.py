"""lstmlab: LSTM-family recurrent networks trained with matrix-based full-BPTT batch learning,
and the optimizers this makes possible (SGD and momentum, L-BFGS, nonlinear CG, Hessian-free).

The public API is what this module re-exports; everything else may change. The names are
imported on first use (PEP 562 ``__getattr__``), so ``import lstmlab`` -- and the ``lstmlab``
command's ``--help``, ``--version`` and usage errors -- do not import torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (None: the name is a sub-package of the API)
_EXPORTS: dict[str, str | None] = {
    "Batch": "lstmlab.data",
    "LSTM": "lstmlab.nn",
    "RNN": "lstmlab.nn",
    "MRNN": "lstmlab.nn",
    "GRU": "lstmlab.nn",
    "TorchLSTM": "lstmlab.nn",
    "TorchGRU": "lstmlab.nn",
    "TorchRNN": "lstmlab.nn",
    "VARIANTS": "lstmlab.nn",
    "SequenceModel": "lstmlab.nn.sequence_model",
    "Objective": "lstmlab.objective",
    "FunctionObjective": "lstmlab.objective",
    "optim": None,
    "tasks": None,
    "check_gradients": "lstmlab.gradcheck",
    "as_schedule": "lstmlab.schedules",
}

__all__ = [  # the names of _EXPORTS, and __version__
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

if TYPE_CHECKING:  # what type checkers and IDEs see
    from lstmlab import optim, tasks
    from lstmlab.data import Batch
    from lstmlab.gradcheck import check_gradients
    from lstmlab.nn import GRU, LSTM, MRNN, RNN, VARIANTS, TorchGRU, TorchLSTM, TorchRNN
    from lstmlab.nn.sequence_model import SequenceModel
    from lstmlab.objective import FunctionObjective, Objective
    from lstmlab.schedules import as_schedule


# torch.load(weights_only=True) of whole models holding lstmlab layers needs lstmlab's classes on
# torch's allow-list (lstmlab/nn/safe_globals.py, registered when lstmlab.nn is imported). When
# torch is already loaded, registering costs little, so ``import torch; import lstmlab`` is
# enough before torch.load; the command line (torch not loaded) stays fast.
if "torch" in sys.modules:
    importlib.import_module("lstmlab.nn")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:  # a sub-package (lstmlab.nn, …), as an eager import made it one
        if not name.startswith("_") and importlib.util.find_spec(f"lstmlab.{name}") is not None:
            return importlib.import_module(f"lstmlab.{name}")
        raise AttributeError(f"module 'lstmlab' has no attribute {name!r}")
    where = _EXPORTS[name]
    value = (
        importlib.import_module(f"lstmlab.{name}")
        if where is None
        else getattr(importlib.import_module(where), name)
    )
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
