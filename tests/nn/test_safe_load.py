"""A whole model saved with an lstmlab layer loads under ``torch.load(weights_only=True)``
wherever the same model with torch's layer loads (``lstmlab.nn.safe_globals``).

Files are written here and loaded in fresh Python processes: one that imports lstmlab (loads,
same outputs), one that imports only torch (refuses, naming lstmlab's class: ``import
lstmlab`` is needed, as for any third-party module's classes). A layer whose gate sharpness is
a Python function still refuses: nothing that calls code named by a file is allow-listed.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import torch
from torch import nn

import lstmlab

# the torch classes of the wrapping model, allow-listed by the user as for nn.LSTM
TORCH_CLASSES = "[nn.ModuleDict, nn.Embedding, nn.Linear, nn.LSTM, nn.GRU, nn.RNN, nn.ModuleList]"


def _model(rnn: nn.Module) -> nn.ModuleDict:
    width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
    return nn.ModuleDict(dict(emb=nn.Embedding(7, 3), rnn=rnn, out=nn.Linear(width, 7)))


def _layers() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "nn.LSTM": nn.LSTM(3, 4, 2),
        "TorchLSTM": lstmlab.TorchLSTM(3, 4, 2),
        "TorchGRU": lstmlab.TorchGRU(3, 4, 2, bidirectional=True),
        "TorchRNN": lstmlab.TorchRNN(3, 4, nonlinearity="relu"),
        "TorchLSTM-schedules": lstmlab.TorchLSTM(
            3,
            4,
            variant="vanilla",
            gate_sharpness={
                "i": {"type": "linear", "start": 1.0, "end": 2.0, "steps": 4},
                "f": {"type": "piecewise", "boundaries": [2], "values": [1.0, 3.0]},
                "o": {"type": "cosine", "start": 1.0, "end": 2.0, "steps": 3},
            },
        ),
        "lstmlab.LSTM": lstmlab.LSTM(
            3, 4, variant="lstm97", gate_sharpness={"type": "exponential", "start": 1, "rate": 2}
        ),
    }


LOADER = """
import sys, torch
from torch import nn
{imports}
torch.serialization.add_safe_globals({classes})
for name in {names!r}:
    try:
        model = torch.load(sys.argv[1] + "/" + name + ".pt", weights_only=True)
    except Exception as err:
        print(name, "REFUSED", str(err).split("WeightsUnpickler error: ")[-1].splitlines()[0])
        continue
    x = torch.arange(10).remainder(7).view(5, 2)
    with torch.no_grad():
        out = model["out"](model["rnn"](model["emb"](x))[0])
    same = torch.equal(out, torch.load(sys.argv[1] + "/" + name + ".out", weights_only=True))
    print(name, "LOADED", "same" if same else "DIFFERENT")
"""


def _run(tmp_path, names, imports: str) -> dict[str, str]:
    code = LOADER.format(imports=imports, classes=TORCH_CLASSES, names=names)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return {line.split()[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines()}


def test_whole_models_load_with_weights_only(tmp_path):
    """Every layer loads and computes the same; a layer whose gate sharpness is a Python
    function refuses (loading it would call code the file names)."""
    layers = _layers()
    x = torch.arange(10).remainder(7).view(5, 2)
    for name, rnn in layers.items():
        model = _model(rnn)
        with torch.no_grad():
            out = model["out"](model["rnn"](model["emb"](x))[0])
        torch.save(model, tmp_path / f"{name}.pt")
        torch.save(out, tmp_path / f"{name}.out")
    torch.save(_model(lstmlab.TorchLSTM(3, 4, gate_sharpness=math.exp)), tmp_path / "fn.pt")
    got = _run(tmp_path, [*layers, "fn"], "import lstmlab")
    refused = got.pop("fn")
    assert got == {name: "LOADED same" for name in layers}, got
    assert refused.startswith("REFUSED Unsupported global"), refused
    assert "_Callable" in refused or "math.exp" in refused
    # without ``import lstmlab`` the names are unknown to torch: refused, naming the class
    got = _run(tmp_path, ["nn.LSTM", "TorchLSTM"], "")
    assert got["nn.LSTM"] == "LOADED same"
    assert got["TorchLSTM"].startswith(
        "REFUSED Unsupported global: GLOBAL lstmlab.nn.dropin.TorchLSTM"
    )


def test_allow_list_holds_only_plain_classes():
    """Every allow-listed lstmlab class is rebuilt by torch's or Python's own __new__ /
    __setstate__ / __reduce__ (none of its own); the function wrapper is not listed."""
    from lstmlab import schedules
    from lstmlab.nn.safe_globals import SAFE_GLOBALS

    listed = set(torch.serialization.get_safe_globals())
    assert set(SAFE_GLOBALS) <= listed
    assert schedules._Callable not in listed
    for cls in SAFE_GLOBALS:
        assert cls.__module__.startswith("lstmlab.")
        for attr in ("__new__", "__setstate__", "__reduce__", "__reduce_ex__", "__getattr__"):
            owner = next((k for k in cls.__mro__ if attr in vars(k)), object)
            assert owner is object or owner.__module__.startswith("torch."), (cls, attr, owner)
