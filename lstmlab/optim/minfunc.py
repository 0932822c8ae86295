"""What L-BFGS and nonlinear CG share: minFunc-style calls of strong-Wolfe line searches.

Both take a step as ``calls`` calls of a minimiser (seed 000's released script calls minFunc
afresh on every minibatch), each call at most ``iterations`` line searches along the method's
own direction. The search, its failure handling and the end-of-call tests are the same for
both and live here; the direction and its memory (L-BFGS pairs, CG's previous direction) stay
in each method:

- a non-finite value during the search shrinks the next step's scale; at the step's first
  search the step is rejected (nothing moved), later the call ends at the last good point;
- a search without decrease makes the method forget its direction's memory (``_forget``);
  at the first search the step is rejected, later the call ends;
- after a step the call ends when the loss change, the step or the call's evaluation budget
  falls below its tolerance (minFunc's ``optTol`` / ``progTol`` / ``maxFunEvals``).

Hand-written (the optimizers are this project's subject); the search itself is torch's
``_strong_wolfe`` (``line_search.strong_wolfe``).
"""

from __future__ import annotations

from torch import Tensor

from lstmlab.optim.base import NonFiniteError, Optimizer, StepInfo, finite
from lstmlab.optim.line_search import strong_wolfe

__all__ = ["LineSearchMethod"]


class LineSearchMethod(Optimizer):
    """Base of ``LBFGS`` and ``NonlinearCG``: the subclass sets ``c1``, ``c2``, ``max_ls``,
    ``scale``, ``nonfinite_shrink``, ``tolerance_change``, ``tolerance_step``, ``max_evals`` and
    ``_cache`` (a ``StartCache``), and defines ``_forget`` and ``_forgotten`` (its words)."""

    _forgotten = "memory cleared"  # what ``_forget`` did, in a rejection's reason

    def _forget(self) -> None:
        """Drop the direction's memory after a search without decrease."""
        raise NotImplementedError

    def _reject(self, info: StepInfo, reason: str) -> StepInfo:
        return self._cache.reject(info, reason)

    def _start(self, obj) -> tuple[Tensor, float, Tensor, StepInfo]:
        """The step's start (x, f, g) and its ``info``; ``info`` comes back rejected (to be
        returned as it is) when f or g is not finite there."""
        x, f, g = self._cache.start(obj)
        info = StepInfo(iteration=self.iteration, loss=f, grad_norm=float(g.norm()))
        info.inner_iterations = 0
        if not finite(f, g):
            self.scale *= self.nonfinite_shrink
            reason = (
                f"non-finite loss or gradient at the current point; step scale {self.scale:.3g}"
            )
            return x, f, g, self._reject(info, reason)
        return x, f, g, info

    def _search(
        self, obj, info: StepInfo, x0: Tensor, x: Tensor, t0: float, d: Tensor, f: float, g: Tensor
    ) -> tuple[tuple[float, Tensor, float, int] | None, StepInfo | None]:
        """A strong-Wolfe search along ``d`` from ``x`` (first trial ``t0``; ``x0``: the step's
        start). ``((f_new, g_new, t, evaluations), None)`` when it decreased the loss; else
        ``(None, info)`` when the step ends now (return ``info``) or ``(None, None)`` when only
        this call ends."""
        try:
            f_new, g_new, t, n = strong_wolfe(
                obj, x, t0, d, f, g, c1=self.c1, c2=self.c2, max_ls=self.max_ls
            )
        except NonFiniteError as err:
            self.scale *= self.nonfinite_shrink
            if x is x0:
                return None, self._reject(info, f"{err}; initial step scale now {self.scale:.3g}")
            info.reason = f"{err}; stopped early"
            return None, self._cache.finish(obj, info, x0, x, f, g)
        info.line_search_evals += n
        if not f_new <= f:
            self._forget()
            if x is x0:
                return None, self._reject(info, f"line search found no decrease; {self._forgotten}")
            info.reason = "line search found no decrease"
            return None, None
        return (f_new, g_new, t, n), None

    def _call_done(self, info: StepInfo, df: float, step_max: float, evals: int) -> bool:
        """Whether the call ends after a step that changed the loss by ``df`` and moved no
        coordinate more than ``step_max``, with ``evals`` evaluations spent in the call."""
        if abs(df) < self.tolerance_change:
            info.reason = "loss change below tolerance"
        elif self.tolerance_step and step_max <= self.tolerance_step:
            info.reason = "step below tolerance"
        elif self.max_evals is not None and evals >= self.max_evals:
            info.reason = "evaluation budget of the call spent"
        else:
            return False
        return True
