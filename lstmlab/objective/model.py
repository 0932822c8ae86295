"""``Objective(model, batch)``: the one view an optimizer has of a problem (SPEC S3).

Written by hand (it is this project's subject); ``torch.func.functional_call`` evaluates the
model at a flat parameter vector without touching the model's own parameters, so trial points
of a line search never write into the model and a non-finite trial cannot leak into it.

Contract (shared with ``FunctionObjective`` and, later, the distributed objective of S6):

    n_samples, n_params, counter (CostCounter)
    get_params() -> x (P,)           set_params(x)   (refuses non-finite x)
    loss(x=None) -> float            loss_and_grad(x=None) -> (float, g (P,))
    curvature_operator(kind="gn"|"hessian"|"fd", structural_weight=0.0,
                       structural_form="mean"|"released") -> A, A(v) -> (P,)
    gauss_newton_product(v)          hessian_product(v)        fd_hessian_product(v, eps)
    structural_damping_product(v)    per_sample_grads_squared() -> (P,)
    subset(idx) -> Objective         (same model and counter, rows idx of the batch)
    parameter_blocks(by) -> ParameterBlocks      gate_saturation(eps) -> {(k, gate): (blocks,)}
                                     (optional: what gate-aware damping in HF needs)

Everything is at the objective's *current* parameters (the model's) unless ``x`` is given.
Averages: every returned quantity is a mean over the batch's samples, each sample's loss
normalised by the model (``model.loss``: continual prediction divides by the sample's length).
All reductions over samples pass through ``_reduce`` — the single place a data-parallel
subclass averages across workers (weighted by sample counts). Nothing else sums over workers.

Engines: the gradient uses whatever engine the model has (the fast ``bptt`` one composes with
reverse mode). Curvature products (``curvature_products``): "auto" (the default) runs the
Gauss–Newton, structural-damping and finite-difference products on the bptt engine (its
R-forward pass and hand-written backward) wherever the model allows it (a ``SequenceModel`` of
LSTM layers with ``engine="bptt"``); the exact Hessian and every other model use the reference
products (double backward), which switch the model to ``curvature_engine`` (default
``"autograd"``) while their graph is built and switch it back. "reference" always uses those;
"fast" demands the fast ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import Tensor
from torch.func import functional_call

from lstmlab.data import Batch
from lstmlab.objective.blocks import (
    ParameterBlocks,
    gate_saturation_counts,
    parameter_blocks,
    saturation_from_means,
)
from lstmlab.objective.cost import CostCounter
from lstmlab.objective.curvature import PRODUCTS, CurvatureOperator

__all__ = ["Objective"]


class Objective:
    """Mean loss of ``model`` on ``batch`` as a function of the flat parameter vector.

    Args:
        model: a ``SequenceModel`` (or anything with its contract: ``model(inputs, lengths,
            return_states=...)``, ``loss``, ``per_sample_loss``, ``output``).
        batch: the samples; ``Batch`` layout (batch-first, zero-padded, ``lengths``).
        t_ref: count each sequence as ``length / t_ref`` in the cost measures (None: as 1).
        counter: share a cost counter (subsets share their parent's).
        curvature_engine: engine set on the model while reference curvature graphs are built.
        curvature_products: "auto", "fast" or "reference" (see the module docstring).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batch: Batch,
        *,
        t_ref: float | None = None,
        counter: CostCounter | None = None,
        curvature_engine: str | None = "autograd",
        curvature_products: str = "auto",
    ) -> None:
        if len(batch) < 1:
            raise ValueError("Objective needs a batch with at least one sample")
        if t_ref is not None and not t_ref > 0:
            raise ValueError(f"t_ref must be > 0 or None, got {t_ref!r}")
        self.model = model
        self.batch = batch
        self.t_ref = t_ref
        self.counter = counter if counter is not None else CostCounter()
        self.curvature_engine = curvature_engine
        if curvature_products not in PRODUCTS:
            raise ValueError(
                f"curvature_products must be one of {list(PRODUCTS)}, got {curvature_products!r}"
            )
        self.curvature_products = curvature_products
        self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self._named:
            raise ValueError("the model has no trainable parameters")

    # ---------------------------------------------------------------- sizes and parameters
    @property
    def n_samples(self) -> int:
        return len(self.batch)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for _, p in self._named)

    @property
    def n_seq(self) -> float:
        """This batch in cost units: samples, or total length / t_ref."""
        if self.t_ref is None:
            return float(self.n_samples)
        return float(self.batch.lengths.sum()) / self.t_ref

    def get_params(self) -> Tensor:
        """A copy of the current parameters as one flat vector (P,)."""
        return torch.cat([p.detach().reshape(-1) for _, p in self._named]).clone()

    def set_params(self, x: Tensor) -> None:
        """Write ``x`` into the model. Refuses a non-finite vector (nothing is written)."""
        x = x.detach()
        if x.shape != (self.n_params,):
            raise ValueError(f"expected a flat vector of {self.n_params} parameters, got {x.shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("refusing to write non-finite parameters into the model")
        with torch.no_grad():
            for (_, p), xi in zip(self._named, self._split(x), strict=True):
                p.copy_(xi)

    def _split(self, x: Tensor) -> list[Tensor]:
        out, i = [], 0
        for _, p in self._named:
            out.append(x[i : i + p.numel()].view_as(p))
            i += p.numel()
        return out

    def _as_dict(self, x: Tensor) -> dict[str, Tensor]:
        return {n: xi for (n, _), xi in zip(self._named, self._split(x), strict=True)}

    def subset(self, idx: Tensor | slice) -> Objective:
        """The same model and cost counter on rows ``idx`` of the batch (B_c ⊂ B_g)."""
        return Objective(
            self.model,
            self.batch.index(idx),
            t_ref=self.t_ref,
            counter=self.counter,
            curvature_engine=self.curvature_engine,
            curvature_products=self.curvature_products,
        )

    # ---------------------------------------------------------------- the one reduction place
    def _reduce(self, value: Tensor) -> Tensor:
        """Average a per-batch mean over all workers (weighted by sample counts).

        One process: the identity. A data-parallel objective overrides this and only this.
        """
        return value

    # ---------------------------------------------------------------- evaluations
    @contextmanager
    def engine(self, name: str | None) -> Iterator[None]:
        """Temporarily set ``model.engine`` (no-op for models without engines)."""
        old = getattr(self.model, "engine", None)
        if name is None or old is None or old == name:
            yield
            return
        self.model.engine = name
        try:
            yield
        finally:
            self.model.engine = old

    def forward(self, x: Tensor | None, batch: Batch | None = None, return_states: bool = False):
        """Model output at parameters ``x`` (the model's own when None)."""
        b = self.batch if batch is None else batch
        kwargs = {"return_states": True} if return_states else {}
        if getattr(b, "initial_state", None) is not None:  # a state carried from the last chunk
            kwargs["initial_state"] = b.initial_state
        if x is None:
            return self.model(b.inputs, b.lengths, **kwargs)
        return functional_call(self.model, self._as_dict(x), (b.inputs, b.lengths), kwargs)

    def loss(self, x: Tensor | None = None) -> float:
        """Mean loss (one forward pass per sample)."""
        with torch.no_grad():
            value = self.model.loss(self.forward(x), self.batch)
        self.counter.record("fun", self.n_seq)
        return float(self._reduce(value.detach()))

    def loss_and_grad(self, x: Tensor | None = None) -> tuple[float, Tensor]:
        """Mean loss and its gradient (P,) at ``x`` (3 forward passes per sample)."""
        xl = (self.get_params() if x is None else x.detach().clone()).requires_grad_(True)
        value = self.model.loss(self.forward(xl), self.batch)
        (g,) = torch.autograd.grad(value, xl)
        self.counter.record("grad", self.n_seq)
        return float(self._reduce(value.detach())), self._reduce(g)

    def per_sample_loss(self, x: Tensor | None = None) -> Tensor:
        """(B,) per-sample losses (not reduced across workers: they are per sample)."""
        with torch.no_grad():
            value = self.model.per_sample_loss(self.forward(x), self.batch)
        self.counter.record("fun", self.n_seq)
        return value

    def per_sample_grads_squared(self) -> Tensor:
        """(1/B) Σ_b (∇ℓ_b)² (P,): the empirical-Fisher diagonal of Martens' preconditioner.

        ℓ_b is sample b's own (length-normalised) loss, so the scale matches the curvature of
        the mean loss. Computed one sample at a time with the model's engine (exact, O(B)).
        """
        x = self.get_params()
        acc = torch.zeros_like(x)
        for b in range(self.n_samples):
            sub = self.batch.index(slice(b, b + 1))
            xl = x.clone().requires_grad_(True)
            value = self.model.loss(self.forward(xl, sub), sub)
            (g,) = torch.autograd.grad(value, xl)
            acc += g * g
        self.counter.record("per_sample", self.n_seq)
        return self._reduce(acc / self.n_samples)

    # ---------------------------------------------------------------- curvature
    def curvature_operator(
        self, kind: str = "gn", structural_weight: float = 0.0, structural_form: str = "mean"
    ):
        """A cached ``v ↦ A v`` at the current parameters; see ``CurvatureOperator``."""
        return CurvatureOperator(
            self,
            kind,
            structural_weight,
            products=self.curvature_products,
            structural_form=structural_form,
        )

    def gauss_newton_product(self, v: Tensor) -> Tensor:
        """G v = Jᵀ H_L J v with H_L the loss Hessian w.r.t. the pre-nonlinearity outputs."""
        return self.curvature_operator("gn")(v)

    def hessian_product(self, v: Tensor) -> Tensor:
        """Exact H v (forward graph kept, double backward)."""
        return self.curvature_operator("hessian")(v)

    def fd_hessian_product(
        self, v: Tensor, eps: float | None = None, central: bool = True
    ) -> Tensor:
        """Finite-difference H v: (g(x+εv) − g(x−εv)) / 2ε, or forward (g(x+εv) − g(x)) / ε."""
        op = CurvatureOperator(
            self, "fd", 0.0, fd_eps=eps, fd_central=central, products=self.curvature_products
        )
        return op(v)

    def structural_damping_product(self, v: Tensor) -> Tensor:
        """J_sᵀ W_s J_s v: Gauss–Newton matrix of the state penalty (Martens & Sutskever 2011).

        S(θ) = Σ_b Σ_t w_bt ½‖s_bt(θ) − s_bt(θ₀)‖², w_bt = 1[t < ℓ_b] / (B ℓ_b), s = the
        states ``model(..., return_states=True)`` returns (every layer's y and c).
        """
        return self.curvature_operator("none", 1.0)(v)

    def state_weights(self, batch: Batch | None = None) -> Tensor:
        """(B, T) weights w_bt = 1[t < ℓ_b] / (B ℓ_b) of the structural penalty."""
        b = self.batch if batch is None else batch
        mask = b.mask().to(b.inputs.dtype)
        return mask / (b.lengths.to(b.inputs.dtype).unsqueeze(1) * len(b))

    def with_targets(self, targets: Tensor) -> Batch:
        return replace(self.batch, targets=targets)

    # ---------------------------------------------------------------- gate-aware damping
    def parameter_blocks(self, by: str = "gate") -> ParameterBlocks:
        """The flat parameters grouped by gate (and memory block): ``objective/blocks.py``."""
        return parameter_blocks(self.model, by)

    def gate_saturation_means(self, eps: float = 0.05) -> tuple[list[tuple[int, str]], Tensor]:
        """Keys (layer-direction, gate) and the per-sample means of the saturation counts
        (``blocks.gate_saturation_counts``): every gate's counts, then the valid steps, all / B.
        One forward pass, counted. Not reduced: ``gate_saturation`` reduces them."""
        hits, valid = gate_saturation_counts(self.model, self.batch.inputs, self.batch.lengths, eps)
        self.counter.record("fun", self.n_seq)
        keys = list(hits)
        flat = (
            torch.cat([*(hits[k] for k in keys), hits[keys[0]].new_tensor([valid])])
            if keys
            else None
        )
        return keys, (flat / self.n_samples if flat is not None else torch.zeros(1))

    def gate_saturation(self, eps: float = 0.05) -> dict[tuple[int, str], Tensor]:
        """(layer-direction, gate) -> (blocks,) fraction of saturated activations on this batch
        (min(v, 1 − v) < ``eps`` over the valid steps; ``objective/blocks.py``)."""
        keys, means = self.gate_saturation_means(eps)
        return saturation_from_means(keys, self._reduce(means), self.model)
