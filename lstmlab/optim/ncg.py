"""Nonlinear conjugate gradient (SPEC S3): Polak–Ribière+ and Hestenes–Stiefel, restarts,
strong-Wolfe line search (torch.optim's, see ``line_search.py``).

    β_PR+ = max(0, gᵀ(g − g₋) / g₋ᵀg₋)          β_HS = gᵀ(g − g₋) / d₋ᵀ(g − g₋)
    d = −g + β d₋; restart (d = −g) every ``restart_every`` iterations (default: n params),
    when d is not a descent direction, and (optionally, ``powell=ν``, e.g. 0.2) when
    |gᵀg₋| ≥ ν‖g‖² (Powell 1977).
Initial trial step (``step_init``): "scaled", t₀ = t₋·(g₋ᵀd₋)/(gᵀd) (Nocedal & Wright eq.
3.60), or "quadratic", t₀ = min(1, 2(f − f₋)/(gᵀd)) (the minimiser of the quadratic through f₋,
f and the slope; minFunc's choice for CG), 1 when either is not positive; the first one
min(1, 1/‖g‖₁) (minFunc's rule at the start of every call). Wolfe c2 = 0.1 by default (a CG method needs a tighter curvature condition than
L-BFGS; minFunc uses 0.2). ``keep_history=False`` restarts from steepest descent at every
``step`` call, as a minimiser called afresh on each minibatch does (seed 000 ran minFunc so).
As for ``LBFGS``, one ``step`` may run ``calls`` such calls of at most ``iterations`` iterations
and ``max_evals`` function evaluations each, and ``tolerance_step`` > 0 ends a call when
max|t d| or the slope −gᵀd falls below it (minFunc's progTol; seed 000's script: 20 calls of
≤ 50 evaluations per minibatch).
Hand-written: the direction update is the method.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lstmlab.optim.base import StepInfo
from lstmlab.optim.minfunc import LineSearchMethod
from lstmlab.optim.start_cache import StartCache

__all__ = ["NonlinearCG", "BETAS"]

BETAS = ("pr+", "hs")
STEP_INITS = ("scaled", "quadratic")


class NonlinearCG(LineSearchMethod):
    """Args: beta in {"pr+", "hs"}, iterations per step, lr* (scales t₀), c1, c2, max_ls,
    restart_every, powell (ν or None), tolerance_grad, tolerance_change, step_init
    ("scaled" | "quadratic"), keep_history, nonfinite_shrink."""

    def __init__(
        self,
        beta: str = "pr+",
        iterations: int = 1,
        lr: Any = 1.0,
        *,
        c1: float = 1e-4,
        c2: float = 0.1,
        max_ls: int = 25,
        restart_every: int | None = None,
        powell: float | None = None,
        tolerance_grad: float = 1e-10,
        tolerance_change: float = 1e-12,
        tolerance_step: float = 0.0,
        step_init: str = "scaled",
        keep_history: bool = True,
        calls: int = 1,
        max_evals: int | None = None,
        nonfinite_shrink: float = 0.1,
    ) -> None:
        super().__init__(lr=lr)
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise ValueError(f"calls: must be an integer >= 1, got {calls!r}")
        if max_evals is not None and (
            isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < 2
        ):
            raise ValueError(f"max_evals: must be an integer >= 2 or None, got {max_evals!r}")
        if not (isinstance(tolerance_step, int | float) and tolerance_step >= 0):
            raise ValueError(f"tolerance_step: must be a number >= 0, got {tolerance_step!r}")
        self.calls, self.max_evals, self.tolerance_step = calls, max_evals, tolerance_step
        if beta not in BETAS:
            raise ValueError(f"unknown beta {beta!r}; valid: {list(BETAS)}")
        if step_init not in STEP_INITS:
            raise ValueError(f"unknown step_init {step_init!r}; valid: {list(STEP_INITS)}")
        if not (0 < c1 < c2 < 1):
            raise ValueError(f"need 0 < c1 < c2 < 1 for a Wolfe line search, got c1={c1}, c2={c2}")
        if not (isinstance(iterations, int) and iterations >= 1):
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        self.step_init, self.keep_history = step_init, keep_history
        self.beta, self.iterations = beta, iterations
        self.c1, self.c2, self.max_ls = c1, c2, max_ls
        self.restart_every, self.powell = restart_every, powell
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.nonfinite_shrink = nonfinite_shrink
        self.d_prev: Tensor | None = None
        self.g_prev: Tensor | None = None
        self.t_prev = 0.0
        self.gtd_prev = 0.0
        self.f_prev = 0.0
        self.since_restart = 0
        self.scale = 1.0
        self._cache = StartCache()

    def _direction(self, g: Tensor) -> tuple[Tensor, bool]:
        every = self.restart_every or g.numel()
        gp, dp = self.g_prev, self.d_prev
        if gp is None or dp is None or self.since_restart >= every:
            return -g, True
        if self.powell is not None and abs(float(g.dot(gp))) >= self.powell * float(g.dot(g)):
            return -g, True
        y = g - gp
        if self.beta == "pr+":
            den = float(gp.dot(gp))
            b = max(0.0, float(g.dot(y)) / den) if den > 0 else 0.0
        else:
            den = float(dp.dot(y))
            b = float(g.dot(y)) / den if den != 0 else 0.0
        d = -g + b * dp
        if float(g.dot(d)) >= 0:
            return -g, True
        return d, False

    def _step(self, obj) -> StepInfo:
        x, f, g, info = self._start(obj)
        if info.rejected:
            return info
        x0 = x
        for _call in range(self.calls):
            if not self.keep_history:
                self.d_prev = self.g_prev = None  # a minimiser called afresh
            evals = 1  # the call's first evaluation (reused, not recomputed)
            for _ in range(self.iterations):
                if float(g.abs().max()) <= self.tolerance_grad:
                    info.reason = "gradient below tolerance"
                    return self._cache.finish(obj, info, x0, x, f, g)
                d, restarted = self._direction(g)
                gtd = float(g.dot(d))
                if restarted:
                    self.since_restart = 0
                if self.tolerance_step and -gtd < self.tolerance_step:
                    info.reason = "slope below tolerance"
                    break
                if self.g_prev is None:
                    t0 = min(1.0, 1.0 / float(g.abs().sum()))
                elif gtd == 0:  # not reached: a zero slope means a zero gradient, stopped above
                    t0 = 1.0
                elif self.step_init == "quadratic":
                    t0 = min(1.0, 2.0 * (f - self.f_prev) / gtd)
                else:
                    t0 = self.t_prev * self.gtd_prev / gtd
                if not t0 > 0:
                    t0 = 1.0
                t0 *= self.hp("lr") * self.scale
                found, end = self._search(obj, info, x0, x, t0, d, f, g)
                if found is None:
                    if end is not None:
                        return end
                    break
                f_new, g_new, t, n = found
                evals += n
                self.d_prev, self.g_prev, self.t_prev, self.gtd_prev = d, g, t, gtd
                self.f_prev = f
                self.since_restart += 1
                self.scale = 1.0
                x = x + t * d
                df, f, g = f_new - f, f_new, g_new
                info.step_size, info.inner_iterations = t, info.inner_iterations + 1
                if self._call_done(info, df, t * float(d.abs().max()), evals):
                    break
        return self._cache.finish(obj, info, x0, x, f, g)

    _forgotten = "restarted"

    def _forget(self) -> None:
        self.g_prev = self.d_prev = None

    def _state(self) -> dict[str, Any]:
        return {
            "d_prev": self.d_prev,
            "g_prev": self.g_prev,
            "t_prev": self.t_prev,
            "gtd_prev": self.gtd_prev,
            "f_prev": self.f_prev,
            "since_restart": self.since_restart,
            "scale": self.scale,
        }

    def _load_state(self, s: dict[str, Any]) -> None:
        self.d_prev, self.g_prev = s["d_prev"], s["g_prev"]
        self.t_prev, self.gtd_prev = float(s["t_prev"]), float(s["gtd_prev"])
        self.f_prev = float(s.get("f_prev", 0.0))
        self.since_restart, self.scale = int(s["since_restart"]), float(s["scale"])
        self._cache = StartCache()
