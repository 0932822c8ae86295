"""The objective contract: loss, gradient, curvature products and cost accounting (SPEC S3).

``Objective(model, batch)`` for networks, ``FunctionObjective(fn, x0)`` for plain functions;
both count what they compute in a ``CostCounter`` (seed 001's P_D and P_I).
"""

from __future__ import annotations

from lstmlab.objective.cost import UNITS, CostCounter
from lstmlab.objective.curvature import CurvatureOperator
from lstmlab.objective.function import FunctionObjective
from lstmlab.objective.model import Objective

__all__ = ["Objective", "FunctionObjective", "CostCounter", "CurvatureOperator", "UNITS"]
