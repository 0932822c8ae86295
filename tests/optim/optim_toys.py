"""A tiny tanh RNN with the ``SequenceModel`` contract, for tests that must not wait for nn/."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import hessian, jacrev

from lstmlab.data import Batch


class TinyRNN(torch.nn.Module):
    """h_t = tanh(W x_t + R h_{t-1} + b); logits = V h (every step or the last valid one)."""

    def __init__(self, I: int, H: int, O: int, output: str = "linear", read: str = "every"):
        super().__init__()
        self.W = torch.nn.Parameter(0.5 * torch.randn(H, I))
        self.R = torch.nn.Parameter(0.5 * torch.randn(H, H))
        self.b = torch.nn.Parameter(0.1 * torch.randn(H))
        self.V = torch.nn.Parameter(0.5 * torch.randn(O, H))
        self.c = torch.nn.Parameter(0.1 * torch.randn(O))
        self.output, self.read, self.engine = output, read, "autograd"

    def forward(self, inputs: Tensor, lengths: Tensor, return_states: bool = False):
        B, T, _ = inputs.shape
        h = inputs.new_zeros(B, self.R.shape[0])
        hs = []
        for t in range(T):
            h = torch.tanh(inputs[:, t] @ self.W.T + h @ self.R.T + self.b)
            hs.append(h)
        states = torch.stack(hs, 1)  # (B, T, H)
        if self.read == "last":
            last = states[torch.arange(B), lengths - 1]
            logits = last @ self.V.T + self.c
        else:
            logits = states @ self.V.T + self.c
        return (logits, states) if return_states else logits

    def output_nonlinearity(self, logits: Tensor) -> Tensor:
        if self.output in ("sigmoid", "bernoulli"):
            return torch.sigmoid(logits)
        if self.output == "softmax":
            return torch.softmax(logits, -1)
        return logits

    def per_sample_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        t = batch.targets
        if self.output == "softmax":
            flat = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), t.reshape(-1), reduction="none"
            )
            per = flat.view(t.shape)
        elif self.output == "bernoulli":
            per = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, t, reduction="none"
            ).sum(-1)
        else:
            y = torch.sigmoid(logits) if self.output == "sigmoid" else logits
            per = 0.5 * ((y - t) ** 2).sum(-1)
        if self.read == "every":
            mask = batch.mask().to(logits.dtype)
            per = (per * mask).sum(1) / batch.lengths.to(logits.dtype)
        return per

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        return self.per_sample_loss(logits, batch).mean()


def make_batch(B, T, I, O, output="linear", read="every", dtype=torch.float64, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(B, T, I, generator=g, dtype=dtype)
    lengths = torch.randint(max(1, T // 2), T + 1, (B,), generator=g)
    lengths[0] = T
    inputs = inputs * Batch(inputs, torch.zeros(B), lengths).mask().unsqueeze(-1)
    shape = (B, T) if read == "every" else (B,)
    if output == "softmax":
        targets = torch.randint(0, O, shape, generator=g)
    elif output in ("sigmoid", "bernoulli"):
        targets = torch.randint(0, 2, (*shape, O), generator=g).to(dtype)
    else:
        targets = torch.randn(*shape, O, generator=g, dtype=dtype)
    return Batch(inputs, targets, lengths)


def dense_gn(obj) -> torch.Tensor:
    """Jᵀ H_L J from dense Jacobians, with the matching (or σ-squared-error) H_L."""
    x0 = obj.get_params()
    z0 = obj.forward(x0).detach()
    J = jacrev(lambda x: obj.forward(x))(x0).reshape(z0.numel(), -1)
    if obj.model.output == "sigmoid":  # GN of ½Σw(σ(z) − t)²: diag(σ') W diag(σ')
        s = torch.sigmoid(z0)
        W = hessian(lambda t: obj.model.loss(z0, obj.with_targets(t)))(obj.batch.targets)
        ds = (s * (1 - s)).reshape(-1)
        HL = ds[:, None] * W.reshape(z0.numel(), -1) * ds[None, :]
    else:
        HL = hessian(lambda z: obj.model.loss(z, obj.batch))(z0).reshape(z0.numel(), -1)
    return J.T @ HL @ J
