"""fANOVA on trees: exact on a tree that is the function, the known decomposition of
f = a + 2b + ab on uniform inputs, and Optuna's evaluator for the single importances."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.tree import DecisionTreeRegressor

from lstmlab.studies.fanova import Forest, TreeMarginals, fit_forest

# f = a + 2b + ab on [0, 1]²: with a' = a − ½, b' = b − ½, f = 1.5a' + 2.5b' + a'b' + const,
# so V_a = 2.25/12, V_b = 6.25/12, V_ab = 1/144 and the total is 103/144.
F_A, F_B, F_AB = 27 / 103, 75 / 103, 1 / 103


def f(a, b):
    return a + 2 * b + a * b


def test_exact_on_a_tree_that_equals_a_grid_function():
    # an unpruned tree on every cell centre of an 8 × 8 grid is that piecewise-constant table
    n = 8
    c = (np.arange(n) + 0.5) / n
    A, B = np.meshgrid(c, c, indexing="ij")
    table = f(A, B) + 0.3 * np.sin(7 * A * B)  # any table
    X, y = np.c_[A.ravel(), B.ravel()], table.ravel()
    tree = DecisionTreeRegressor(random_state=0).fit(X, y)
    t = TreeMarginals.from_sklearn(tree, np.array([[0.0, 1.0], [0.0, 1.0]]))
    mean = table.mean()
    var = ((table - mean) ** 2).mean()
    va = ((table.mean(1) - mean) ** 2).mean()
    vb = ((table.mean(0) - mean) ** 2).mean()
    vab = var - va - vb  # two inputs: the rest is the pair
    forest = Forest([t])
    assert t.variance == pytest.approx(var, rel=1e-12)
    assert forest.importance(0)[0] == pytest.approx(va / var, rel=1e-10)
    assert forest.importance(1)[0] == pytest.approx(vb / var, rel=1e-10)
    assert forest.pair_importance(0, 1)[0] == pytest.approx(vab / var, rel=1e-9)
    m, s = forest.marginal((0,), c[:, None])
    np.testing.assert_allclose(m, table.mean(1), rtol=1e-12)
    inter = forest.interaction(0, 1, X)
    expect = table - table.mean(1, keepdims=True) - table.mean(0, keepdims=True) + mean
    np.testing.assert_allclose(inter, expect.ravel(), atol=1e-12)


def test_known_decomposition_of_a_plus_2b_plus_ab():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(3000, 3))  # a third input that does nothing
    y = f(X[:, 0], X[:, 1])
    _, forest = fit_forest(X, y, np.array([[0, 1.0]] * 3), n_trees=16, seed=0)
    a, b, c = (forest.importance(i)[0] for i in range(3))
    ab = forest.pair_importance(0, 1)[0]
    # a forest on 3,000 noise-free samples: within 0.01 for the singles; the pair's 1 % is
    # slightly overstated by the bootstrap trees' jagged fits (0.012 here)
    assert a == pytest.approx(F_A, abs=0.01)
    assert b == pytest.approx(F_B, abs=0.01)
    assert ab == pytest.approx(F_AB, abs=0.004)
    assert c < 0.003 and forest.pair_importance(0, 2)[0] < 0.003


def test_single_importances_equal_optunas_evaluator():
    optuna = pytest.importorskip("optuna")
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(120, 3)) * [1.0, 2.0, 1.0]
    y = f(X[:, 0], X[:, 1]) + 0.5 * X[:, 2] ** 2
    dists = {
        "a": FloatDistribution(0, 1),
        "b": FloatDistribution(0, 2),
        "c": FloatDistribution(0, 1),
    }
    study = optuna.create_study()
    for row, v in zip(X, y, strict=True):
        study.add_trial(
            optuna.trial.create_trial(
                params=dict(zip("abc", row, strict=True)), distributions=dists, value=v
            )
        )
    theirs = optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=3).evaluate(study)
    _, forest = fit_forest(X, y, np.array([[0, 1.0], [0, 2.0], [0, 1.0]]), n_trees=16, seed=3)
    for i, name in enumerate("abc"):
        assert forest.importance(i)[0] == pytest.approx(theirs[name], rel=1e-9, abs=1e-12)
