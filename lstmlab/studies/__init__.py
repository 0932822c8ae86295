"""Hyperparameter studies (SPEC S7): Greff et al.'s random search over LSTM variants and
hyperparameters on Optuna, fANOVA and variant comparisons.

    space.py     the search space (Greff's ranges by default, any other from TOML)
    storage.py   the embedded journal file or a PostgreSQL URL
    study.py     create / open / run workers / resume / status
    fanova.py    functional ANOVA on a random forest: single and pairwise importance, marginals
    analysis.py  the report: importances, Fig. 4 marginals, Fig. 5 interactions, Fig. 3 variants
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> its module; imported on first use (PEP 562), so that ``lstmlab study --help``
# and the sub-command's usage errors need neither Optuna nor torch
_EXPORTS = {
    "GREFF": "lstmlab.studies.space",
    "SearchSpace": "lstmlab.studies.space",
    "SpaceError": "lstmlab.studies.space",
    "load_space": "lstmlab.studies.space",
    "StudyError": "lstmlab.studies.study",
    "create": "lstmlab.studies.study",
    "open_study": "lstmlab.studies.study",
    "run_worker": "lstmlab.studies.study",
    "resume": "lstmlab.studies.study",
    "status": "lstmlab.studies.study",
}

if TYPE_CHECKING:
    from lstmlab.studies.space import GREFF, SearchSpace, SpaceError, load_space
    from lstmlab.studies.study import StudyError, create, open_study, resume, run_worker, status


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lstmlab.studies' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "GREFF",
    "SearchSpace",
    "SpaceError",
    "load_space",
    "StudyError",
    "create",
    "open_study",
    "run_worker",
    "resume",
    "status",
]
