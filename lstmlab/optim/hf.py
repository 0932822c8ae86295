"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2011; seeds 000 and 001).

Hand-written, as SPEC S3 lists it. One ``step`` on a gradient batch B_g:

    1. f₀, g  = loss and gradient on B_g                                 (3·B_g)
    2. B_c    = a random subset of B_g (``curvature_batch``), A = C + λI + λμ·J_sᵀW_sJ_s with
                C the Gauss–Newton matrix (default), the exact Hessian or a finite-difference
                Hessian on B_c (products built once per step, 4·B_c each)
    3. p      = CG on A p = −g from 0.95·p_prev (warm start), Martens' stop, ≤ max_cg
                iterations, preconditioned by Martens' diagonal or the L-BFGS matrix; negative
                curvature (exact / FD) ends CG and the offending direction is discarded
    4. CG-backtracking: from the last kept iterate (kept at ⌈5·1.3^k⌉) go back while f on B_g
                decreases                                                   (1·B_g each)
    5. ρ      = (f(θ+p) − f₀) / φ(p), φ the damped quadratic CG minimised; λ by LM (3/2, 2/3)
    6. Armijo backtracking t = 1, 0.8, … (c = 1e-2) along p; θ ← θ + t p  (1·B_g each)

A non-finite loss or gradient (step 1), a non-finite curvature product (CG), or a failed line
search leaves θ unchanged, raises λ (×``nonfinite_increase`` for non-finite values, LM
otherwise) and is reported (``rejected=True``). Non-finite losses in steps 4 and 6 count as
"no decrease".

Presets: ``large_batch_hf`` (B_g = 14000, B_c = 3500) and ``stochastic_hf`` (Kiros 2013:
B_g = 320, B_c = 32, gentle damping changes), seed 001's batch sizes. The optimizer records
``gradient_batch`` for the training loop; it does not draw data itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lstmlab.optim.base import Optimizer, StepInfo, finite
from lstmlab.optim.cg import backtrack_indices, conjugate_gradient
from lstmlab.optim.damping import LevenbergMarquardt
from lstmlab.optim.line_search import armijo
from lstmlab.optim.preconditioners import diagonal_preconditioner, lbfgs_preconditioner

__all__ = ["HessianFree", "large_batch_hf", "stochastic_hf", "CURVATURES", "PRECONDITIONERS"]

CURVATURES = ("gn", "hessian", "fd")
PRECONDITIONERS = (None, "diagonal", "lbfgs")


class HessianFree(Optimizer):
    """Args (``*``: constant or schedule over iterations):
    curvature: "gn" | "hessian" | "fd".   damping: initial λ.
    lm: LevenbergMarquardt rule (None: λ fixed).
    structural_weight*: μ (M&S 2011 default 1/30; 0 turns structural damping off).
    max_cg*: CG iteration cap.   cg_tol*: Martens' tolerance.   warm_start*: ζ (0.95).
    backtrack: CG-backtracking on/off.   backtrack_base, backtrack_ratio: 5, 1.3.
    line_search: Armijo on/off; armijo_c, armijo_shrink, armijo_max_evals.
    preconditioner: None | "diagonal" | "lbfgs"; diag_exponent ξ; lbfgs_history.
    curvature_batch: B_c as a count or a fraction of B_g (None: all of B_g).
    gradient_batch: B_g the training loop should feed (informative).
    nonfinite_increase: λ factor after a non-finite value.   seed: curvature-subset RNG.
    """

    def __init__(
        self,
        curvature: str = "gn",
        damping: float = 1.0,
        *,
        lm: LevenbergMarquardt | None = LevenbergMarquardt(),  # noqa: B008 - frozen
        structural_weight: Any = 1.0 / 30.0,
        max_cg: Any = 250,
        cg_tol: Any = 5e-4,
        warm_start: Any = 0.95,
        backtrack: bool = True,
        backtrack_base: float = 5.0,
        backtrack_ratio: float = 1.3,
        line_search: bool = True,
        armijo_c: float = 1e-2,
        armijo_shrink: float = 0.8,
        armijo_max_evals: int = 60,
        preconditioner: str | None = None,
        diag_exponent: float = 0.75,
        lbfgs_history: int = 10,
        curvature_batch: int | float | None = None,
        gradient_batch: int | None = None,
        nonfinite_increase: float = 10.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            structural_weight=structural_weight,
            max_cg=max_cg,
            cg_tol=cg_tol,
            warm_start=warm_start,
        )
        if curvature not in CURVATURES:
            raise ValueError(f"unknown curvature {curvature!r}; valid: {list(CURVATURES)}")
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"unknown preconditioner {preconditioner!r}; valid: {list(PRECONDITIONERS)}"
            )
        if not damping >= 0:
            raise ValueError(f"damping λ must be >= 0, got {damping!r}")
        if curvature_batch is not None and not curvature_batch > 0:
            raise ValueError(f"curvature_batch must be > 0 or None, got {curvature_batch!r}")
        self.curvature, self.lam, self.lm = curvature, float(damping), lm
        self.backtrack, self.backtrack_base, self.backtrack_ratio = (
            backtrack,
            backtrack_base,
            backtrack_ratio,
        )
        self.line_search = line_search
        self.armijo_c, self.armijo_shrink = armijo_c, armijo_shrink
        self.armijo_max_evals = armijo_max_evals
        self.preconditioner, self.diag_exponent = preconditioner, diag_exponent
        self.lbfgs_history = lbfgs_history
        self.curvature_batch, self.gradient_batch = curvature_batch, gradient_batch
        self.nonfinite_increase = nonfinite_increase
        self.generator = torch.Generator().manual_seed(seed)
        self.p_prev: Tensor | None = None
        self.pc_S: list[Tensor] = []
        self.pc_Y: list[Tensor] = []

    # ------------------------------------------------------------------ pieces
    def _curvature_objective(self, obj):
        n, bc = obj.n_samples, self.curvature_batch
        if bc is None:
            return obj
        size = int(round(bc * n)) if isinstance(bc, float) and bc < 1 else int(bc)
        if size >= n:
            return obj
        idx = torch.randperm(n, generator=self.generator)[: max(1, size)].sort().values
        return obj.subset(idx)

    def _reject(self, info: StepInfo, reason: str, factor: float) -> StepInfo:
        self.lam = self._clamp(self.lam * factor)
        info.damping = self.lam
        return info.reject(f"{reason}; λ now {self.lam:.4g}")

    def _clamp(self, lam: float) -> float:
        if self.lm is None:
            return lam
        return min(max(lam, self.lm.min_value), self.lm.max_value)

    # ------------------------------------------------------------------ step
    def _step(self, obj) -> StepInfo:
        lam = self.lam
        x = obj.get_params()
        f0, g = obj.loss_and_grad()
        info = StepInfo(iteration=self.iteration, loss=f0, grad_norm=float(g.norm()), damping=lam)
        if not finite(f0, g):
            return self._reject(info, "non-finite loss or gradient", self.nonfinite_increase)
        if not bool(g.any()):
            info.reason = "zero gradient"
            return info

        cobj = self._curvature_objective(obj)
        mu = self.hp("structural_weight")
        op = cobj.curvature_operator(self.curvature, structural_weight=lam * mu)

        def A(v: Tensor) -> Tensor:
            return op(v) + lam * v

        M_inv = None
        if self.preconditioner == "diagonal":
            M_inv = diagonal_preconditioner(
                cobj.per_sample_grads_squared(), lam, self.diag_exponent
            )
        elif self.preconditioner == "lbfgs":
            M_inv = lbfgs_preconditioner(self.pc_S, self.pc_Y)
        max_cg = int(self.hp("max_cg"))
        x0 = None if self.p_prev is None else self.hp("warm_start") * self.p_prev
        keep = backtrack_indices(max_cg, self.backtrack_base, self.backtrack_ratio)
        if not self.backtrack:
            keep = set()
        res = conjugate_gradient(
            A,
            -g,
            x0,
            M_inv=M_inv,
            max_iter=max_cg,
            tol=self.hp("cg_tol"),
            keep=keep,
            keep_pairs=self.lbfgs_history if self.preconditioner == "lbfgs" else 0,
        )
        info.cg_iterations, info.cg_stop = res.iterations, res.stop
        info.extra["phi"] = res.phi
        if res.stop == "nonfinite" and res.iterations <= 1:
            return self._reject(info, "non-finite curvature product", self.nonfinite_increase)
        self.p_prev = res.x.clone()
        if res.pairs:
            self.pc_S = [s.clone() for s, _ in res.pairs]
            self.pc_Y = [y.clone() for _, y in res.pairs]
        if res.stop == "negative_curvature" and (res.iterations <= 1 or not bool(res.x.any())):
            # negative curvature along CG's first direction: discard it (seed 000 Sec. 5.3), and
            # the warm start it began from; take a damped gradient step, scaled by the line search
            self.p_prev = None
            p, phi = -g / max(lam, 1e-12), float("nan")
            candidates = [(0, p, phi)]
        else:
            candidates = res.iterates if self.backtrack else [res.iterates[-1]]

        # CG-backtracking on B_g: from the last kept iterate, go back while f decreases
        def f_at(p: Tensor) -> float:
            v = obj.loss(x + p)
            return v if math.isfinite(v) else math.inf

        evals = 0
        j = len(candidates) - 1
        f1 = f_at(candidates[j][1])
        evals += 1
        while j > 0:
            fj = f_at(candidates[j - 1][1])
            evals += 1
            if fj < f1:
                j, f1 = j - 1, fj
            else:
                break
        i_chosen, p, phi = candidates[j]
        info.extra.update(backtrack_iterate=i_chosen, backtrack_evals=evals)

        rho = (f1 - f0) / phi if (math.isfinite(f1) and phi < 0) else float("nan")
        if self.lm is not None:
            self.lam = self.lm.update(lam, rho)
        info.rho, info.damping = rho, self.lam

        slope = float(g.dot(p))
        if not slope < 0:
            info.line_search_evals = evals
            self.p_prev = None  # do not warm-start the next solve from a non-descent direction
            return self._reject(info, "CG returned no descent direction", 1.0)
        if self.line_search:
            t, f_new, n = armijo(
                lambda t: obj.loss(x + t * p),
                f0,
                slope,
                f1=f1 if math.isfinite(f1) else math.nan,
                c=self.armijo_c,
                shrink=self.armijo_shrink,
                max_evals=self.armijo_max_evals,
            )
            evals += n
        else:
            t, f_new = (1.0, f1) if math.isfinite(f1) else (None, f0)
        info.line_search_evals = evals
        if t is None:
            self.p_prev = None
            return self._reject(info, "no decrease along the CG direction", 1.0)
        x_new = x + t * p
        if not bool(torch.isfinite(x_new).all()):
            return self._reject(info, "non-finite update", self.nonfinite_increase)
        obj.set_params(x_new)
        info.step_size, info.new_loss = t, f_new
        return info

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {
            "lam": self.lam,
            "p_prev": self.p_prev,
            "pc_S": list(self.pc_S),
            "pc_Y": list(self.pc_Y),
            "generator": self.generator.get_state(),
        }

    def _load_state(self, s: dict[str, Any]) -> None:
        self.lam, self.p_prev = float(s["lam"]), s["p_prev"]
        self.pc_S, self.pc_Y = list(s["pc_S"]), list(s["pc_Y"])
        self.generator.set_state(s["generator"])


def large_batch_hf(**overrides: Any) -> HessianFree:
    """Seed 001's large-batch HF: B_g = 14000, B_c = 3500, Martens' damping rule."""
    kw: dict[str, Any] = {"gradient_batch": 14000, "curvature_batch": 3500}
    kw.update(overrides)
    return HessianFree(**kw)


def stochastic_hf(**overrides: Any) -> HessianFree:
    """Seed 001's stochastic HF (Kiros 2013): B_g = 320, B_c = 32, gentle λ changes
    (×1.01 up / ×0.99 down instead of 3/2 and 2/3) so one noisy batch cannot swing λ."""
    kw: dict[str, Any] = {
        "gradient_batch": 320,
        "curvature_batch": 32,
        "lm": LevenbergMarquardt(decrease=0.99, increase=1.01),
    }
    kw.update(overrides)
    return HessianFree(**kw)
