"""Curvature–vector products at a fixed point, with the forward graph built once.

Written by hand: curvature products are this project's subject. Step by step, for the
Gauss–Newton product G v = Jᵀ H_L J v (Schraudolph 2002; Martens 2010):

    set-up (once per point, 3 forward-pass units):
        z, s = model(x)                          # logits (B,T,O) or (B,O); states (B,T,S)
        u = 0 (requires grad)                     # a dummy cotangent for z (and s)
        r(u) = Jᵀ u                               # backward with create_graph: linear in u
    product (4 units, what seed 001 assumes):
        J v    = ∂(r(u)·v)/∂u                     # "double backward": the R-op without forward mode
        H_L Jv = Hessian of the loss w.r.t. z, applied to J v (output layer only, cheap)
        G v    = Jᵀ (H_L J v)                     # one more backward through the kept graph

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

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from lstmlab.objective.model import Objective

__all__ = ["CurvatureOperator", "KINDS"]

KINDS = ("gn", "hessian", "fd", "none")


class CurvatureOperator:
    """``A(v) = C v + structural_weight · J_sᵀ W_s J_s v`` at the objective's current point.

    ``kind``: "gn" (C = G), "hessian" (C = H), "fd" (C = finite-difference H), "none" (C = 0).
    Each call records one curvature product in the objective's counter; building the operator
    records one set-up. Keep the operator only while the parameters do not change.
    """

    def __init__(
        self,
        objective: Objective,
        kind: str = "gn",
        structural_weight: float = 0.0,
        *,
        fd_eps: float | None = None,
        fd_central: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown curvature kind {kind!r}; valid kinds: {list(KINDS)}")
        self.obj = objective
        self.kind = kind
        self.mu = float(structural_weight)
        self.fd_eps = fd_eps
        self.fd_central = fd_central
        self.x0 = objective.get_params()
        self.n_products = 0
        self._setup()

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        obj, b = self.obj, self.obj.batch
        need_states = self.mu != 0.0
        need_graph = self.kind in ("gn", "hessian") or need_states
        self._g0 = None
        self._outs: list[Tensor] = []
        if self.kind == "fd" and not self.fd_central:
            self._g0 = self._grad(self.x0)
        if not need_graph:
            if self.kind == "fd" and not self.fd_central:
                obj.counter.record("curv_setup", obj.n_seq)
            return
        x = self.x0.clone().requires_grad_(True)
        with obj.engine(obj.curvature_engine):
            out = obj.forward(x, return_states=need_states)
        z, s = out if need_states else (out, None)
        self._x = x
        outs, us = [], []
        if self.kind == "gn":
            outs.append(z)
            self._hl = _OutputHessian(obj, z.detach())
        if need_states:
            outs.append(s)
            self._ws = obj.state_weights().to(s.dtype).unsqueeze(-1)  # (B, T, 1)
        if outs:
            us = [torch.zeros_like(o, requires_grad=True) for o in outs]
            (self._jt_u,) = torch.autograd.grad(outs, x, us, create_graph=True)
        self._outs, self._us = outs, us
        if self.kind == "hessian":
            loss = obj.model.loss(z, b)
            (self._g,) = torch.autograd.grad(loss, x, create_graph=True)
        obj.counter.record("curv_setup", obj.n_seq)

    def _grad(self, x: Tensor) -> Tensor:
        xl = x.detach().clone().requires_grad_(True)
        value = self.obj.model.loss(self.obj.forward(xl), self.obj.batch)
        (g,) = torch.autograd.grad(value, xl)
        return g

    # ------------------------------------------------------------------ product
    def __call__(self, v: Tensor) -> Tensor:
        obj = self.obj
        v = v.detach().to(self.x0.dtype)
        result = torch.zeros_like(self.x0)
        units = 4.0
        if self.kind == "hessian":
            (hv,) = torch.autograd.grad(self._g, self._x, v, retain_graph=True)
            result += hv
        elif self.kind == "fd":
            result += self._fd(v)
            units = 6.0 if self.fd_central else 3.0
        if self._outs:
            jv = torch.autograd.grad(self._jt_u, self._us, v, retain_graph=True)  # J v per output
            cot = []
            k = 0
            if self.kind == "gn":
                cot.append(self._hl(jv[k]))
                k += 1
            if self.mu != 0.0:
                cot.append(self.mu * self._ws * jv[k])
            (back,) = torch.autograd.grad(self._outs, self._x, cot, retain_graph=True)
            result += back
        obj.counter.record("curv", obj.n_seq, units=units)
        self.n_products += 1
        return obj._reduce(result)

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
