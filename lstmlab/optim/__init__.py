"""Optimizers (SPEC S3). Each sees the problem only through the objective contract
(``lstmlab.objective``), returns a ``StepInfo`` per step and resumes exactly from ``state_dict``.

    SGD (classical / Nesterov momentum, clipping), Adam, LBFGS, NonlinearCG (PR+ / HS),
    HessianFree (+ presets ``large_batch_hf`` and ``stochastic_hf``).
Building blocks: ``conjugate_gradient`` (Martens' stop), ``cg_backtrack``, ``LevenbergMarquardt``
damping, ``strong_wolfe`` / ``armijo`` line searches, diagonal and L-BFGS preconditioners, the
HF warm start, and the start-of-step cache of L-BFGS and nonlinear CG (``StartCache``).
"""

from __future__ import annotations

from lstmlab.optim.adam import Adam
from lstmlab.optim.base import NonFiniteError, Optimizer, StepInfo
from lstmlab.optim.cg import CGResult, conjugate_gradient, martens_should_stop
from lstmlab.optim.cg_backtracking import BacktrackResult, cg_backtrack
from lstmlab.optim.damping import LevenbergMarquardt, as_levenberg_marquardt, reduction_ratio
from lstmlab.optim.hf import HessianFree, large_batch_hf, stochastic_hf, warm_start_point
from lstmlab.optim.lbfgs import LBFGS, two_loop
from lstmlab.optim.line_search import armijo, strong_wolfe
from lstmlab.optim.ncg import NonlinearCG
from lstmlab.optim.preconditioners import diagonal_preconditioner, lbfgs_preconditioner
from lstmlab.optim.sgd import SGD
from lstmlab.optim.start_cache import StartCache

__all__ = [
    "Optimizer",
    "StepInfo",
    "NonFiniteError",
    "SGD",
    "Adam",
    "LBFGS",
    "NonlinearCG",
    "HessianFree",
    "large_batch_hf",
    "stochastic_hf",
    "conjugate_gradient",
    "CGResult",
    "martens_should_stop",
    "LevenbergMarquardt",
    "as_levenberg_marquardt",
    "reduction_ratio",
    "cg_backtrack",
    "BacktrackResult",
    "warm_start_point",
    "diagonal_preconditioner",
    "lbfgs_preconditioner",
    "StartCache",
    "strong_wolfe",
    "armijo",
    "two_loop",
]
