"""Line searches: strong Wolfe (reused from torch.optim) and Armijo backtracking (by hand).

* ``strong_wolfe`` wraps ``torch.optim.lbfgs._strong_wolfe`` — PyTorch's port of minFunc's
  bracketing/zoom search with cubic interpolation (Nocedal & Wright Alg. 3.5–3.6). It is a
  private torch function; the torch range in pyproject (>=2.2) all have it with this signature.
  Non-finite evaluations raise ``NonFiniteError`` (the caller rejects the step) instead of
  feeding NaN into the interpolation.
* ``armijo`` is the backtracking search Martens & Sutskever (2012, Sec. 8.8) use after HF's
  CG-backtracking: t = 1, 0.8, 0.8², … until f(x + t p) ≤ f(x) + c t gᵀp, c = 1e-2.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.optim.lbfgs import _strong_wolfe

from lstmlab.optim.base import NonFiniteError, finite

__all__ = ["strong_wolfe", "armijo"]


def strong_wolfe(
    objective,
    x: Tensor,
    t: float,
    d: Tensor,
    f: float,
    g: Tensor,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_ls: int = 25,
    tolerance_change: float = 1e-12,
) -> tuple[float, Tensor, float, int]:
    """Search along ``d`` from ``x``; returns (f_new, g_new, t, evaluations)."""

    def obj_func(x_: Tensor, t_: float, d_: Tensor) -> tuple[float, Tensor]:
        f_, g_ = objective.loss_and_grad(x_ + t_ * d_)
        if not finite(f_, g_):
            raise NonFiniteError(f"non-finite loss or gradient at line-search step t={t_:.3g}")
        return f_, g_

    gtd = g.dot(d)
    f_new, g_new, t_new, n = _strong_wolfe(
        obj_func, x, t, d, f, g, gtd, c1=c1, c2=c2, tolerance_change=tolerance_change, max_ls=max_ls
    )
    return float(f_new), g_new, float(t_new), int(n)


def armijo(
    loss: Callable[[float], float],
    f0: float,
    slope: float,
    *,
    f1: float | None = None,
    c: float = 1e-2,
    shrink: float = 0.8,
    max_evals: int = 60,
) -> tuple[float | None, float, int]:
    """Backtrack t = 1, shrink, shrink², … until ``loss(t) ≤ f0 + c·t·slope``.

    ``f1`` = loss(1) when already known (not re-evaluated). Non-finite values count as failure.
    Returns (t or None when no step satisfied it, the loss there, evaluations made).
    """
    t, evals = 1.0, 0
    f = f1
    for _ in range(max_evals):
        if f is None:
            f = loss(t)
            evals += 1
        if finite(f) and f <= f0 + c * t * slope:
            return t, f, evals
        t *= shrink
        f = None
    return None, f0, evals
