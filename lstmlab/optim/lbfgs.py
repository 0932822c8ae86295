"""L-BFGS (Nocedal 1980; Liu & Nocedal 1989) with a strong-Wolfe line search (SPEC S3).

Direction: the two-loop recursion over the last ``history`` pairs (s, y) with initial matrix
γI, γ = sᵀy / yᵀy (minFunc's default; history 10 as minFunc). Step: strong Wolfe, reused from
torch.optim (see ``line_search.py``); the very first step starts at t = min(1, 1/‖g‖₁).
Pairs with yᵀs ≤ 1e-10 are skipped (curvature condition). The two-loop recursion is written
here rather than borrowed because HF reuses it as a preconditioner (seed 000).

``iterations`` = k iterations per ``step`` call: 1 for full-batch L-BFGS driven by the loop,
20 per minibatch for the Lyu & Zhu setting (their minFunc calls restart the history on each
minibatch: ``keep_history=False``). The gradient at the start of a step is reused from the
previous step when the same function comes back at the same parameters (full batch, same
epoch: ``start_cache.py`` says what "same" covers); after a resume it is computed once more
(identical values, one extra gradient counted).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lstmlab.optim.base import NonFiniteError, Optimizer, StepInfo, finite
from lstmlab.optim.line_search import strong_wolfe
from lstmlab.optim.start_cache import StartCache

__all__ = ["LBFGS", "two_loop", "StartCache"]


def two_loop(q: Tensor, S: list[Tensor], Y: list[Tensor]) -> Tensor:
    """H q for the L-BFGS inverse-Hessian approximation H built from pairs (S, Y)."""
    if not S:
        return q.clone()
    q = q.clone()
    rhos = [1.0 / float(y.dot(s)) for s, y in zip(S, Y, strict=True)]
    alphas = []
    for s, y, rho in zip(reversed(S), reversed(Y), reversed(rhos), strict=True):
        a = rho * float(s.dot(q))
        q.add_(y, alpha=-a)
        alphas.append(a)
    gamma = float(S[-1].dot(Y[-1])) / float(Y[-1].dot(Y[-1]))
    r = q.mul_(gamma)
    for s, y, rho, a in zip(S, Y, rhos, reversed(alphas), strict=True):
        b = rho * float(y.dot(r))
        r.add_(s, alpha=a - b)
    return r


class LBFGS(Optimizer):
    """Args: history m, iterations k per step, lr* (initial trial step), Wolfe c1/c2, max_ls,
    tolerance_grad (‖g‖∞ stop), tolerance_change (|Δf| stop), keep_history,
    nonfinite_shrink (initial-step factor after a non-finite evaluation). * schedule."""

    def __init__(
        self,
        history: int = 10,
        iterations: int = 1,
        lr: Any = 1.0,
        *,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_ls: int = 25,
        tolerance_grad: float = 1e-10,
        tolerance_change: float = 1e-12,
        keep_history: bool = True,
        nonfinite_shrink: float = 0.1,
    ) -> None:
        super().__init__(lr=lr)
        if history < 1 or iterations < 1:
            raise ValueError(f"history and iterations must be >= 1, got {history}, {iterations}")
        if not (0 < c1 < c2 < 1):
            raise ValueError(f"need 0 < c1 < c2 < 1 for a Wolfe line search, got c1={c1}, c2={c2}")
        if max_ls < 1:
            raise ValueError(f"max_ls must be >= 1, got {max_ls}")
        self.history, self.iterations = history, iterations
        self.c1, self.c2, self.max_ls = c1, c2, max_ls
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.keep_history, self.nonfinite_shrink = keep_history, nonfinite_shrink
        self.S: list[Tensor] = []
        self.Y: list[Tensor] = []
        self.scale = 1.0
        self.n_updates = 0
        self._cache = StartCache()

    def _step(self, obj) -> StepInfo:
        if not self.keep_history:
            self.S, self.Y = [], []
        x, f, g = self._cache.start(obj)
        info = StepInfo(iteration=self.iteration, loss=f, grad_norm=float(g.norm()))
        info.inner_iterations = 0
        if not finite(f, g):
            self.scale *= self.nonfinite_shrink
            return self._reject(
                info,
                f"non-finite loss or gradient at the current point; step scale {self.scale:.3g}",
            )
        x0 = x
        for _ in range(self.iterations):
            if float(g.abs().max()) <= self.tolerance_grad:
                info.reason = "gradient below tolerance"
                break
            d = -two_loop(g, self.S, self.Y)
            if float(g.dot(d)) >= 0:  # not a descent direction: restart from steepest descent
                self.S, self.Y = [], []
                d = -g
            t0 = self.hp("lr") * self.scale
            if self.n_updates == 0 and not self.S:
                t0 *= min(1.0, 1.0 / float(g.abs().sum()))
            try:
                f_new, g_new, t, n = strong_wolfe(
                    obj, x, t0, d, f, g, c1=self.c1, c2=self.c2, max_ls=self.max_ls
                )
            except NonFiniteError as err:
                self.scale *= self.nonfinite_shrink
                if x is x0:
                    return self._reject(info, f"{err}; initial step scale now {self.scale:.3g}")
                info.reason = f"{err}; stopped early"
                break
            info.line_search_evals += n
            if not f_new <= f:
                self.S, self.Y = [], []
                if x is x0:
                    return self._reject(info, "line search found no decrease; history cleared")
                info.reason = "line search found no decrease"
                break
            s, y = t * d, g_new - g
            if float(y.dot(s)) > 1e-10:
                self.S.append(s)
                self.Y.append(y)
                if len(self.S) > self.history:
                    self.S.pop(0)
                    self.Y.pop(0)
            self.n_updates += 1
            self.scale = 1.0
            x = x + s
            df, f, g = f_new - f, f_new, g_new
            info.step_size, info.inner_iterations = t, info.inner_iterations + 1
            if abs(df) < self.tolerance_change:
                info.reason = "loss change below tolerance"
                break
        return self._cache.finish(obj, info, x0, x, f, g)

    def _reject(self, info: StepInfo, reason: str) -> StepInfo:
        return self._cache.reject(info, reason)

    def _state(self) -> dict[str, Any]:
        return {
            "S": list(self.S),
            "Y": list(self.Y),
            "scale": self.scale,
            "n_updates": self.n_updates,
        }

    def _load_state(self, s: dict[str, Any]) -> None:
        self.S, self.Y = list(s["S"]), list(s["Y"])
        self.scale, self.n_updates = float(s["scale"]), int(s["n_updates"])
        self._cache = StartCache()
