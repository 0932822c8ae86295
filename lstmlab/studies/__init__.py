"""Hyperparameter studies (SPEC S7): Greff et al.'s random search over LSTM variants and
hyperparameters on Optuna, fANOVA and variant comparisons.

    space.py     the search space (Greff's ranges by default, any other from TOML)
    storage.py   the embedded journal file or a PostgreSQL URL
    study.py     create / open / run workers / resume / status
    fanova.py    functional ANOVA on a random forest: single and pairwise importance, marginals
    analysis.py  the report: importances, Fig. 4 marginals, Fig. 5 interactions, Fig. 3 variants
"""

from lstmlab.studies.space import GREFF, SearchSpace, SpaceError, load_space
from lstmlab.studies.study import StudyError, create, open_study, resume, run_worker, status

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
