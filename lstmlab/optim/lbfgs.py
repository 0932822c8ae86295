"""L-BFGS (Nocedal 1980; Liu & Nocedal 1989) with a strong-Wolfe line search (SPEC S3).

Direction: the two-loop recursion over the last ``history`` pairs (s, y) with initial matrix
γI, γ = sᵀy / yᵀy (minFunc's default; history 10 as minFunc). Step: strong Wolfe, reused from
torch.optim (see ``line_search.py``). Pairs with yᵀs ≤ 1e-10 are skipped (curvature condition).
The two-loop recursion is written here rather than borrowed because HF reuses it as a
preconditioner (seed 000).

One ``step`` runs ``calls`` minimiser calls on the same objective (default 1), each of at most
``iterations`` iterations and ``max_evals`` function evaluations (minFunc's maxIter and
maxFunEvals; its first evaluation counts). A call ends early when max|g| ≤ ``tolerance_grad``
(minFunc's optTol), |Δf| < ``tolerance_change``, or, with ``tolerance_step`` > 0 (minFunc's
progTol), when max|t d| or the slope −gᵀd falls below it. The first trial step is
t = min(1, 1/‖g‖₁) at the run's first iteration (``first_step="run"``, torch.optim's rule) or at
the first iteration of every call made without history (``"call"``, minFunc's: a fresh call
knows no earlier step); later ones t = 1 (``step_init="one"``) or min(1, 2(f − f₋)/gᵀd)
(``"quadratic"``, minFunc's LS_init = 2).

Seed 000 called minFunc afresh on every minibatch (``keep_history=False``: each call starts with
an empty history). Its released script calls minFunc 20 times per minibatch with maxFunEvals 50
and 10 pairs (``calls=20, max_evals=50, history=10, first_step="call"``; the ``lbfgs-minfunc``
row of ``reproduce lyu2015``); the ``lbfgs`` preset runs one call of 20 iterations with 100
pairs and torch's first-step rule (with minFunc's per call it solved fewer seeds:
docs/results.md). The gradient at the
start of a step is reused from the previous step when the same function comes back at the same
parameters (full batch, same epoch: ``start_cache.py`` says what "same" covers); after a resume
it is computed once more (identical values, one extra gradient counted).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lstmlab.optim.base import StepInfo
from lstmlab.optim.minfunc import LineSearchMethod
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


STEP_INITS = ("one", "quadratic")
FIRST_STEPS = ("run", "call")


class LBFGS(LineSearchMethod):
    """Args: history m, iterations k per call, lr* (scales the trial step), Wolfe c1/c2,
    max_ls, tolerance_grad (max|g| stop), tolerance_change (|Δf| stop), tolerance_step (max|t d|
    and slope stop; 0 = off), keep_history, calls per step, max_evals per call (None: no
    limit), step_init ("one" | "quadratic"), first_step ("run" | "call"), nonfinite_shrink (trial-step factor after a
    non-finite evaluation). * schedule."""

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
        tolerance_step: float = 0.0,
        keep_history: bool = True,
        calls: int = 1,
        max_evals: int | None = None,
        step_init: str = "one",
        first_step: str = "run",
        nonfinite_shrink: float = 0.1,
    ) -> None:
        super().__init__(lr=lr)
        for name, value in (("history", history), ("iterations", iterations), ("calls", calls)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if max_evals is not None and (
            isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < 2
        ):
            raise ValueError(f"max_evals: must be an integer >= 2 or None, got {max_evals!r}")
        if first_step not in FIRST_STEPS:
            raise ValueError(f"first_step: unknown {first_step!r}; valid: {', '.join(FIRST_STEPS)}")
        if step_init not in STEP_INITS:
            raise ValueError(f"step_init: unknown {step_init!r}; valid: {', '.join(STEP_INITS)}")
        for name, value in (
            ("tolerance_grad", tolerance_grad),
            ("tolerance_change", tolerance_change),
            ("tolerance_step", tolerance_step),
        ):
            if not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"{name}: must be a number >= 0, got {value!r}")
        if not (0 < c1 < c2 < 1):
            raise ValueError(f"need 0 < c1 < c2 < 1 for a Wolfe line search, got c1={c1}, c2={c2}")
        if max_ls < 1:
            raise ValueError(f"max_ls must be >= 1, got {max_ls}")
        self.history, self.iterations = history, iterations
        self.c1, self.c2, self.max_ls = c1, c2, max_ls
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.tolerance_step = tolerance_step
        self.keep_history, self.nonfinite_shrink = keep_history, nonfinite_shrink
        self.calls, self.max_evals, self.step_init = calls, max_evals, step_init
        self.first_step = first_step
        self.S: list[Tensor] = []
        self.Y: list[Tensor] = []
        self.scale = 1.0
        self.n_updates = 0
        self._cache = StartCache()

    def _trial_step(self, first: bool, g: Tensor, d: Tensor, f: float, f_prev) -> float:
        """t₀ before ``lr`` and the non-finite scale (class docstring)."""
        if first:
            return min(1.0, 1.0 / float(g.abs().sum()))
        if self.step_init == "quadratic" and f_prev is not None:
            t = 2.0 * (f - f_prev) / float(g.dot(d))
            return min(1.0, t) if t > 0 else 1.0
        return 1.0

    def _step(self, obj) -> StepInfo:
        x, f, g, info = self._start(obj)
        if info.rejected:
            return info
        x0 = x
        for _call in range(self.calls):
            if not self.keep_history:
                self.S, self.Y = [], []  # a minimiser called afresh
            first = not self.S and (self.n_updates == 0 or self.first_step == "call")
            evals, f_prev = 1, None  # the call's first evaluation (reused, not recomputed)
            for _ in range(self.iterations):
                if float(g.abs().max()) <= self.tolerance_grad:
                    info.reason = "gradient below tolerance"
                    return self._cache.finish(obj, info, x0, x, f, g)
                d = -two_loop(g, self.S, self.Y)
                if float(g.dot(d)) >= 0:  # not a descent direction: restart from steepest descent
                    self.S, self.Y = [], []
                    d = -g
                if self.tolerance_step and -float(g.dot(d)) < self.tolerance_step:
                    info.reason = "slope below tolerance"
                    break
                t0 = self._trial_step(first, g, d, f, f_prev) * self.hp("lr") * self.scale
                first = False
                found, end = self._search(obj, info, x0, x, t0, d, f, g)
                if found is None:
                    if end is not None:
                        return end
                    break
                f_new, g_new, t, n = found
                evals += n
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
                df, f_prev, f, g = f_new - f, f, f_new, g_new
                info.step_size, info.inner_iterations = t, info.inner_iterations + 1
                if self._call_done(info, df, float(s.abs().max()), evals):
                    break
        return self._cache.finish(obj, info, x0, x, f, g)

    _forgotten = "history cleared"

    def _forget(self) -> None:
        self.S, self.Y = [], []

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
