"""Recurrent layers (the LSTM family and baselines) and the sequence model around them."""

from __future__ import annotations

from lstmlab.nn import safe_globals
from lstmlab.nn.dropin import TorchGRU, TorchLSTM, TorchRNN
from lstmlab.nn.gru import GRU
from lstmlab.nn.lstm import LSTM
from lstmlab.nn.mrnn import MRNN
from lstmlab.nn.rnn import RNN
from lstmlab.nn.variants import VARIANTS

safe_globals.register()  # torch.load(weights_only=True) of whole models holding lstmlab layers

__all__ = ["LSTM", "RNN", "MRNN", "GRU", "VARIANTS", "TorchLSTM", "TorchGRU", "TorchRNN"]
