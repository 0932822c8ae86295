"""``DistributedObjective``: the objective contract over a batch split across workers (SPEC S6).

Written by hand (data-parallel reduction of the objective is this project's subject). Each
worker wraps an ordinary ``Objective`` on its shard — n_r of the N = Σ_r n_r samples of the
batch, rows ``[o_r, o_r + n_r)`` with o_r = Σ_{q<r} n_q — and every quantity the contract
returns is the sample-weighted mean over workers:

    f   = Σ_r n_r f_r / N          g = Σ_r n_r g_r / N          A v = Σ_r n_r (A_r v) / N
    per_sample_grads_squared = Σ_r n_r d_r / N                   (d_r: the shard's mean)

one ``all_reduce(SUM)`` per call, so L-BFGS, nonlinear CG, the SGD family, Adam and
Hessian-free run unchanged: they see one objective with ``n_samples = N``. All-reduce hands
every rank the same bits, so line searches, CG and HF's damping take the same decisions on
every rank and the parameters never diverge (``check_params_agree`` verifies it).

The inner objective is wrapped, never edited: whatever curvature products it provides are
reduced the same way (keyword arguments of ``curvature_operator`` pass through).

HF's curvature subset B_c ⊂ B_g: ``subset(idx)`` takes indices into the *global* batch (HF
draws them with a generator that is the same on every rank); each rank keeps the indices that
fall in its rows. A rank may hold none of them (or none of a short last minibatch): it then
contributes zero with weight zero to every reduction.

Cost counter: each rank counts its own evaluations in the inner objective's private counter;
the change since the last reduction rides along with each all-reduce, and the shared
``counter`` receives the global change: P_D and the sample counts summed over ranks (sequential
cost of the whole batch, as one process would count it), evaluation counts and P_I as one
rank's (every rank holding samples makes the same calls).
"""

from __future__ import annotations

import math
import time
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from lstmlab.distributed import comm
from lstmlab.objective.cost import CostCounter

__all__ = ["DistributedObjective", "SpeedMeter", "check_params_agree"]

_FIELDS = [f.name for f in fields(CostCounter)]
_SUMMED = {"samples_grad", "samples_curv", "p_d"}  # the rest: one rank's value


class SpeedMeter:
    """Seconds this worker spent computing and the cost units (P_D) it computed in them.

    ``slowdown`` > 1 simulates a slower worker: after each piece of work the worker sleeps
    (slowdown − 1) times as long as it computed, inside the measured time.
    """

    def __init__(self, slowdown: float = 1.0) -> None:
        if not slowdown >= 1.0:
            raise ValueError(f"slowdown must be >= 1, got {slowdown!r}")
        self.slowdown = float(slowdown)
        self.seconds = 0.0
        self.work = 0.0

    def run(self, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        spent = time.perf_counter() - t0
        if self.slowdown > 1.0:
            time.sleep((self.slowdown - 1.0) * spent)
        self.seconds += time.perf_counter() - t0
        return out

    def reset(self) -> None:
        self.seconds, self.work = 0.0, 0.0


class _Params:
    """Flat get/set of a model's trainable parameters (for a rank holding no samples)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.named = [p for p in model.parameters() if p.requires_grad]

    def get(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.named]).clone()

    def set(self, x: Tensor) -> None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError("refusing to write non-finite parameters into the model")
        i = 0
        with torch.no_grad():
            for p in self.named:
                p.copy_(x[i : i + p.numel()].view_as(p))
                i += p.numel()


class DistributedObjective:
    """Sample-weighted mean over workers of a per-worker objective (the objective contract).

    Args:
        local: this worker's ``Objective`` on its rows, or None when it holds none.
        model: the model (needed when ``local`` is None).
        counter: the shared (global) cost counter; a new one when None.
        meter: where this worker's compute time and work are added (speed balancing).

    Construction is a collective (one all-gather of the shard sizes): every rank must build
    its wrapper at the same point, as the training loop and HF's ``subset`` do.
    """

    def __init__(
        self,
        local: Any | None,
        model: torch.nn.Module,
        *,
        counter: CostCounter | None = None,
        meter: SpeedMeter | None = None,
    ) -> None:
        self.local = local
        self.model = model
        self.counter = counter if counter is not None else CostCounter()
        self.meter = meter
        self._params = _Params(model)
        if local is not None:
            self._inner_counter = CostCounter()
            local.counter = self._inner_counter  # private: the global one is ours
            self._synced = self._inner_counter.snapshot()
        n_local = 0 if local is None else int(local.n_samples)
        seq_local = 0.0 if local is None else float(local.n_seq)
        table = comm.all_gather_floats([float(n_local), seq_local])  # (world, 2)
        self.counts = [int(c) for c in table[:, 0].tolist()]  # samples per rank, rank order
        self.n_local = n_local
        self._n_total = sum(self.counts)
        self._n_seq = float(table[:, 1].sum())
        self._holders = sum(1 for c in self.counts if c > 0)
        self.offset = sum(self.counts[: comm.get_rank()])
        if self._n_total < 1:
            raise ValueError("DistributedObjective needs at least one sample over all workers")

    # ---------------------------------------------------------------- sizes and parameters
    @property
    def n_samples(self) -> int:
        """Samples over all workers (N)."""
        return self._n_total

    @property
    def n_seq(self) -> float:
        return self._n_seq

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self._params.named)

    @property
    def batch(self):
        """This worker's rows (None when it holds none)."""
        return None if self.local is None else self.local.batch

    def get_params(self) -> Tensor:
        return self._params.get() if self.local is None else self.local.get_params()

    def set_params(self, x: Tensor) -> None:
        if self.local is None:
            self._params.set(x.detach())
        else:
            self.local.set_params(x)

    def subset(self, idx: Tensor | slice) -> DistributedObjective:
        """Rows ``idx`` of the global batch (same ``idx`` on every rank); shares the counter."""
        if isinstance(idx, slice):
            idx = torch.arange(self._n_total)[idx]
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        mine = idx[(idx >= self.offset) & (idx < self.offset + self.n_local)] - self.offset
        local = None
        if self.local is not None and mine.numel() > 0:
            local = self._call(self.local.subset, mine.to(self.local.batch.lengths.device))
        return DistributedObjective(local, self.model, counter=self.counter, meter=self.meter)

    # ---------------------------------------------------------------- the reduction
    def _call(self, fn, *args, **kwargs):
        return fn(*args, **kwargs) if self.meter is None else self.meter.run(fn, *args, **kwargs)

    def _reduce(self, parts: list[Tensor | float], like: Tensor | None = None) -> list[Tensor]:
        """Σ_r n_r · part / N for each part (local means), with the counter change alongside."""
        dtype = like.dtype if like is not None else torch.float64
        device = like.device if like is not None else torch.device("cpu")
        flat = []
        for p in parts:
            t = torch.as_tensor(p, dtype=dtype, device=device).reshape(-1)
            flat.append(t * self.n_local if self.n_local else torch.zeros_like(t))
        sizes = [t.numel() for t in flat]
        delta = self._counter_delta()
        cost = torch.tensor([delta[k] for k in _FIELDS], dtype=torch.float64, device=device)
        if dtype == torch.float64:
            payload = comm.all_reduce_sum(torch.cat(flat + [cost]))
            values, cost = payload[: sum(sizes)], payload[sum(sizes) :]
        else:
            values = comm.all_reduce_sum(torch.cat(flat))
            cost = comm.all_reduce_sum(cost)
        self._add_global(cost.cpu())
        return [v / self._n_total for v in values.split(sizes)]

    def _counter_delta(self) -> dict[str, float]:
        if self.local is None:
            return dict.fromkeys(_FIELDS, 0.0)
        now = self._inner_counter.snapshot()
        delta = (now - self._synced).as_dict()
        self._synced = now
        if self.meter is not None:
            self.meter.work += float(delta["p_d"])
        return delta

    def _add_global(self, cost: Tensor) -> None:
        change = {}
        for k, v in zip(_FIELDS, cost.tolist(), strict=True):
            value = v if k in _SUMMED else v / self._holders
            change[k] = int(round(value)) if k.startswith("n_") else value
        self.counter.__dict__.update({k: getattr(self.counter, k) + change[k] for k in _FIELDS})

    def sync_counter(self) -> None:
        """Bring the shared counter up to date (a collective: every rank calls it together)."""
        self._reduce([])

    # ---------------------------------------------------------------- evaluations
    def loss(self, x: Tensor | None = None) -> float:
        f = math.nan if self.local is None else self._call(self.local.loss, x)
        (value,) = self._reduce([0.0 if self.local is None else f])
        return float(value)

    def loss_and_grad(self, x: Tensor | None = None) -> tuple[float, Tensor]:
        like = self.get_params() if x is None else x
        if self.local is None:
            f, g = 0.0, torch.zeros_like(like)
        else:
            f, g = self._call(self.local.loss_and_grad, x)
        value, grad = self._reduce([f, g], like=like)
        return float(value), grad

    def per_sample_grads_squared(self) -> Tensor:
        like = self.get_params()
        d = (
            torch.zeros_like(like)
            if self.local is None
            else self._call(self.local.per_sample_grads_squared)
        )
        (out,) = self._reduce([d], like=like)
        return out

    def parameter_blocks(self, by: str = "gate"):
        """The flat parameters grouped by gate (the same on every rank: one model)."""
        from lstmlab.objective.blocks import parameter_blocks

        return parameter_blocks(self.model, by)

    def gate_saturation(self, eps: float = 0.05) -> dict[tuple[int, str], Tensor]:
        """Gate saturation over all workers: saturated and valid steps summed over ranks."""
        from lstmlab.objective.blocks import lstm_cells, saturation_from_means

        cells = lstm_cells(self.model)
        keys = [(k, g) for k, c in enumerate(cells) for g in c.spec.gates]
        like = self.get_params()
        if self.local is None:
            means = torch.zeros(sum(cells[k].spec.blocks for k, _ in keys) + 1, dtype=like.dtype)
        else:
            _, means = self._call(self.local.gate_saturation_means, eps)
        (out,) = self._reduce([means.to(like)], like=like)
        return saturation_from_means(keys, out, self.model)

    def per_sample_loss(self, x: Tensor | None = None) -> Tensor:
        """(N,) every sample's loss, in global order (gathered from all workers)."""
        like = self.get_params() if x is None else x
        mine = (
            torch.zeros(0, dtype=like.dtype, device=like.device)
            if self.local is None
            else self._call(self.local.per_sample_loss, x).to(like.dtype)
        )
        self.sync_counter()
        width = max(self.counts)
        padded = torch.zeros(comm.get_world_size(), width, dtype=like.dtype, device=like.device)
        padded[comm.get_rank(), : mine.numel()] = mine
        comm.all_reduce_sum(padded)
        return torch.cat([padded[r, :c] for r, c in enumerate(self.counts)])

    # ---------------------------------------------------------------- curvature
    def curvature_operator(self, kind: str = "gn", structural_weight: float = 0.0, **kwargs):
        """``v ↦ Σ_r n_r A_r v / N`` with A_r the worker's own operator (built once here)."""
        op = None
        if self.local is not None:
            op = self._call(self.local.curvature_operator, kind, structural_weight, **kwargs)
        self.sync_counter()
        return _ReducedOperator(self, op)

    def gauss_newton_product(self, v: Tensor) -> Tensor:
        return self.curvature_operator("gn")(v)

    def hessian_product(self, v: Tensor) -> Tensor:
        return self.curvature_operator("hessian")(v)

    def fd_hessian_product(
        self, v: Tensor, eps: float | None = None, central: bool = True
    ) -> Tensor:
        out = (
            torch.zeros_like(v)
            if self.local is None
            else self._call(self.local.fd_hessian_product, v, eps, central)
        )
        return self._reduce([out], like=v)[0]

    def structural_damping_product(self, v: Tensor) -> Tensor:
        out = (
            torch.zeros_like(v)
            if self.local is None
            else self._call(self.local.structural_damping_product, v)
        )
        return self._reduce([out], like=v)[0]


class _ReducedOperator:
    """The reduced curvature operator: one all-reduce per product."""

    def __init__(self, owner: DistributedObjective, op) -> None:
        self.owner, self.op = owner, op
        self.n_products = 0

    def __call__(self, v: Tensor) -> Tensor:
        out = torch.zeros_like(v) if self.op is None else self.owner._call(self.op, v)
        self.n_products += 1
        return self.owner._reduce([out], like=v)[0]


def check_params_agree(model: torch.nn.Module) -> None:
    """Raise ``DistributedError`` on every rank unless all ranks hold bit-identical parameters."""
    if not comm.is_distributed():
        return
    flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])
    mine = [float(flat.sum()), float((flat * torch.arange(1, flat.numel() + 1)).sum())]
    table = comm.all_gather_floats(mine)
    if not bool((table == table[0]).all()):
        bad = int((table != table[0]).any(dim=1).nonzero()[0])
        raise comm.DistributedError(
            f"rank {bad}'s parameters differ from rank 0's: the workers diverged"
        )
