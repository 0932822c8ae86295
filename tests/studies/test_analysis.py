"""The variant comparison: Welch's t (by its formula) and the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstmlab.studies.analysis import variant_tests


def test_welch_t_by_its_formula_and_verdicts():
    rng = np.random.default_rng(0)
    vanilla = list(rng.normal(10.0, 1.0, 12))
    worse = list(rng.normal(15.0, 3.0, 7))  # unequal variances and sizes: Welch, not Student
    same = list(rng.normal(10.0, 1.0, 9))
    rows = {
        r["variant"]: r
        for r in variant_tests({"vanilla": vanilla, "NFG": worse, "NP": same, "X": [1.0]})
    }
    a, b = np.array(worse), np.array(vanilla)
    t = (a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert rows["NFG"]["t"] == pytest.approx(t, rel=1e-12)
    assert rows["NFG"]["verdict"] == "worse" and rows["NFG"]["p"] < 0.05
    assert rows["NP"]["verdict"] == "no significant difference"
    assert rows["vanilla"]["verdict"] == "reference" and rows["X"]["verdict"] == "too few trials"
    # accuracy-like metrics: higher is better
    rows = {r["variant"]: r for r in variant_tests({"vanilla": vanilla, "NFG": worse}, higher=True)}
    assert rows["NFG"]["verdict"] == "better" and rows["NFG"]["best"] == max(worse)
