"""Curvature–vector products at a fixed point, with the forward graph built once.

Written by hand: curvature products are this project's subject. Step by step, for the
Gauss–Newton product G v = Jᵀ H_L J v (Schraudolph 2002; Martens 2010):

    set-up (once per point):
        z, s = model(x)                          # logits (B,T,O) or (B,O); states (B,T,S),
                                                 # the graph kept
    product (4 units, what seed 001 assumes):
        J v    = the R-op of the forward pass     # fast: R-forward through the bptt engine;
                                                 # reference: double backward (see jacobian.py)
        H_L Jv = Hessian of the loss w.r.t. z, applied to J v (output layer only, cheap)
        G v    = Jᵀ (H_L J v)                     # one backward through the kept graph

The fast set-up is one forward pass (1 unit); the reference one adds a create-graph backward
(3 units). Both J halves live in ``lstmlab.objective.jacobian``; ``products=`` picks one.
Structural damping adds μ·J_sᵀ W_s J_s v in the same product (same J v pass, same backward).
The exact Hessian product is the double backward of the gradient graph (Pearlmutter 1994).
The finite-difference product is (g(x+εv) − g(x−εv))/2ε, or forward with g(x) cached.

H_L per output type (``model.output``):
    linear, bernoulli, softmax   exact Hessian of ``model.loss`` w.r.t. the logits: a matching
                                 pair, so it is positive semi-definite;
    sigmoid                      σ'·W·σ' with W the Hessian of ½Σ w(σ − t)² w.r.t. σ (read from
                                 ∂²L/∂t²): the Gauss–Newton matrix of the squared error on σ;
    ctc                          per-frame softmax Fisher (diag p − p pᵀ)/B on valid frames — the
                                 Gauss–Newton matrix of the per-frame log-softmax, CTC's own
                                 Hessian not being positive semi-definite.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from lstmlab.objective.model import Objective

__all__ = ["CurvatureOperator", "KINDS", "PRODUCTS", "STRUCTURAL_FORMS"]

KINDS = ("gn", "hessian", "fd", "none")
STRUCTURAL_FORMS = ("mean", "released")
PRODUCTS = ("auto", "fast", "reference")


class CurvatureOperator:
    """``A(v) = C v + structural_weight · J_sᵀ W_s J_s v`` at the objective's current point.

    ``kind``: "gn" (C = G), "hessian" (C = H), "fd" (C = finite-difference H), "none" (C = 0).
    ``products``: how J v and Jᵀ u are computed (``lstmlab.objective.jacobian``): "fast" (the
    R-forward pass and hand-written backward of the bptt engine; a ``SequenceModel`` of LSTM
    layers on that engine), "reference" (double backward on ``objective.curvature_engine``),
    "auto" (fast where available). The exact Hessian has only the reference form: "auto"
    takes it there. Each call records one curvature product in the objective's counter;
    building the operator records one set-up. Keep the operator only while the parameters do
    not change.

    ``structural_form``: the structural penalty whose Gauss–Newton matrix is J_sᵀ W_s J_s —
      "mean"      ½ Σ_b Σ_t ‖Δs_bt‖² / (B ℓ_b): the states (every layer's outputs and cell
                  states) averaged over each sequence's steps, then over the batch;
      "released"  ½ Σ_b Σ_t Σ_j ¼ (1 − h_btj²) (Δa_btj)² / B, a = the pre-activations of a
                  one-layer tanh RNN (h = tanh a): summed over time, as M&S's released HF-RNN
                  code has it (its Tanh "H_prod" on the total inputs, ¼ included). Since
                  J_h = (1 − h²) J_a this is W_s = ¼ / (B (1 − h²)) on the states h, so the
                  same J_s serves (1 − h² floored at 1e-30; where it underflows J_h v is 0 too).
    """

    def __init__(
        self,
        objective: Objective,
        kind: str = "gn",
        structural_weight: float = 0.0,
        *,
        fd_eps: float | None = None,
        fd_central: bool = False,
        products: str = "auto",
        structural_form: str = "mean",
    ) -> None:
        if structural_form not in STRUCTURAL_FORMS:
            raise ValueError(
                f"unknown structural_form {structural_form!r}; valid: {list(STRUCTURAL_FORMS)}"
            )
        self.structural_form = structural_form
        if kind not in KINDS:
            raise ValueError(f"unknown curvature kind {kind!r}; valid kinds: {list(KINDS)}")
        if products not in PRODUCTS:
            raise ValueError(f"unknown curvature products {products!r}; valid: {list(PRODUCTS)}")
        mu = float(structural_weight)
        if not (math.isfinite(mu) and mu >= 0.0):
            raise ValueError(
                f"structural_weight must be finite and >= 0, got {structural_weight!r}"
            )
        self.obj = objective
        self.kind = kind
        self.mu = mu
        self.fd_eps = fd_eps
        self.fd_central = fd_central
        self.products = self._choose_products(products)
        self.x0 = objective.get_params()
        self.n_products = 0
        self._setup()

    def _choose_products(self, products: str) -> str:
        from lstmlab.objective.jacobian import fast_products_available

        ok, why = fast_products_available(self.obj.model)
        if products == "fast":
            if self.kind == "hessian":
                raise ValueError(
                    "the exact Hessian has no fast product; use products='reference' or 'auto'"
                )
            if not ok:
                raise ValueError(f"products='fast' is not available: {why}")
            return "fast"
        if products == "auto" and ok and self.kind != "hessian":
            return "fast"
        return "reference"

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        from lstmlab.objective.jacobian import FastJacobian, ReferenceJacobian

        obj = self.obj
        outputs = tuple(k for k, on in (("z", self.kind == "gn"), ("s", self.mu != 0.0)) if on)
        self._g0 = None
        self._jac = None
        if self.kind == "fd" and not self.fd_central:
            self._g0 = self._grad(self.x0)
        if self.kind == "hessian":
            self._jac = ReferenceJacobian(obj, self.x0, outputs)
            loss = obj.model.loss(self._jac.z, obj.batch)
            (self._g,) = torch.autograd.grad(loss, self._jac.x, create_graph=True)
        elif outputs:
            cls = FastJacobian if self.products == "fast" else ReferenceJacobian
            self._jac = cls(obj, self.x0, outputs)
        if self._jac is None:
            if self.kind == "fd" and not self.fd_central:
                obj.counter.record("curv_setup", obj.n_seq)
            return
        if self.kind == "gn":
            self._hl = _OutputHessian(obj, self._jac.z.detach())
        if self.mu != 0.0:
            b = obj.batch
            if self.structural_form == "released":
                self._ws = self._released_weights()  # (B, T, H)
            else:
                self._ws = obj.state_weights().to(b.inputs.dtype).unsqueeze(-1)  # (B, T, 1)
        # the fast set-up is one forward pass; the reference one adds a create-graph backward
        units = 1.0 if isinstance(self._jac, FastJacobian) else None
        obj.counter.record("curv_setup", obj.n_seq, units=units)

    def _released_weights(self) -> Tensor:
        """W_s = ¼ 1[t < ℓ_b] / (B (1 − h_bt²)) per unit (class docstring), from the states
        at x0; only for a one-layer, one-direction tanh RNN (its states are h)."""
        model, b = self.obj.model, self.obj.batch
        rnn = getattr(model, "rnn", None)
        if (
            getattr(model, "cell_type", None) != "rnn"
            or rnn.num_layers != 1
            or rnn.bidirectional
            or not hasattr(self._jac, "_outs")
        ):
            raise ValueError(
                "structural_form='released' is M&S's tanh-RNN penalty: it needs a one-layer, "
                "one-direction cell='rnn' model"
            )
        h = self._jac._outs[self._jac.parts.index("s")].detach()  # (B, T, H)
        mask = b.mask().to(h.dtype).unsqueeze(-1)
        return 0.25 * mask / ((1.0 - h * h).clamp_min(1e-30) * len(b))

    def _grad(self, x: Tensor) -> Tensor:
        xl = x.detach().clone().requires_grad_(True)
        value = self.obj.model.loss(self.obj.forward(xl), self.obj.batch)
        (g,) = torch.autograd.grad(value, xl)
        return g

    # ------------------------------------------------------------------ product
    def __call__(self, v: Tensor) -> Tensor:
        obj = self.obj
        v = self._check_direction(v)
        result = torch.zeros_like(self.x0)
        units = 4.0
        if self.kind == "hessian":
            (hv,) = torch.autograd.grad(self._g, self._jac.x, v, retain_graph=True)
            result += hv
        elif self.kind == "fd":
            result += self._fd(v)
            units = 6.0 if self.fd_central else 3.0
        if self.kind == "gn" or self.mu != 0.0:
            jv = self._jac.jvp(v)  # J v per part: logits "z", states "s" (maybe in pieces)
            cot = [
                self._hl(j) if part == "z" else self._ws * j.mul_(self.mu)  # H_L J v, μ W_s J_s v
                for part, j in zip(self._jac.parts, jv, strict=True)
            ]
            result += self._jac.vjp(cot)  # → Jᵀ (H_L J v + μ W_s J_s v)
        obj.counter.record("curv", obj.n_seq, units=units)
        self.n_products += 1
        return obj._reduce(result)

    def _check_direction(self, v: Tensor) -> Tensor:
        P = self.x0.numel()
        if not isinstance(v, Tensor):
            raise ValueError(f"v must be a tensor of {P} parameters, got {type(v).__name__}")
        if tuple(v.shape) != (P,):
            raise ValueError(
                f"v must be a flat direction of shape ({P},) (one entry per parameter), "
                f"got shape {tuple(v.shape)}"
            )
        v = v.detach().to(dtype=self.x0.dtype, device=self.x0.device)
        if not bool(torch.isfinite(v).all()):
            raise ValueError("v contains NaN or Inf; a curvature product needs a finite direction")
        return v

    def _fd(self, v: Tensor) -> Tensor:
        vn = float(v.norm())
        if vn == 0.0:
            return torch.zeros_like(v)
        eps = self.fd_eps
        if eps is None:  # minFunc's autoHv: 2·sqrt(1e-12)·(1 + ‖x‖)/‖v‖, scaled to the dtype
            root = torch.finfo(self.x0.dtype).eps ** 0.5
            eps = 2 * root * (1 + float(self.x0.norm())) / vn
        gp = self._grad(self.x0 + eps * v)
        if self.fd_central:
            return (gp - self._grad(self.x0 - eps * v)) / (2 * eps)
        return (gp - self._g0) / eps


class _OutputHessian:
    """u ↦ H_L u for the loss as a function of the logits z (detached), by output type."""

    def __init__(self, obj: Objective, z: Tensor) -> None:
        self.output = getattr(obj.model, "output", "linear")
        self.z = z
        b = obj.batch
        if self.output == "sigmoid":
            s = torch.sigmoid(z)
            self.ds = s * (1 - s)
            t = b.targets.detach().clone().requires_grad_(True)
            loss = obj.model.loss(z, obj.with_targets(t))
            (self._gt,) = torch.autograd.grad(loss, t, create_graph=True)
            self._t = t
        elif self.output == "ctc":
            self.p = torch.softmax(z, dim=-1)  # (B, T, C)
            w = b.mask().to(z.dtype) / len(b)
            self.w = w.unsqueeze(-1)
        else:
            zl = z.clone().requires_grad_(True)
            loss = obj.model.loss(zl, b)
            (self._gz,) = torch.autograd.grad(loss, zl, create_graph=True)
            self._zl = zl

    def __call__(self, u: Tensor) -> Tensor:
        if self.output == "sigmoid":
            (wu,) = torch.autograd.grad(self._gt, self._t, self.ds * u, retain_graph=True)
            return self.ds * wu
        if self.output == "ctc":
            pu = self.p * u
            return self.w * (pu - self.p * pu.sum(-1, keepdim=True))
        (hu,) = torch.autograd.grad(self._gz, self._zl, u, retain_graph=True)
        return hu
