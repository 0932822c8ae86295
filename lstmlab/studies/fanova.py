"""Functional ANOVA on a random forest (Hutter, Hoos & Leyton-Brown 2014; Greff et al. Sec. 6):
importance of each hyperparameter and of each pair, and the marginal predictions behind
Greff's Fig. 4 (single) and Fig. 5 (pairs).

For one regression tree f over the box X = Π_k [l_k, u_k] with the uniform measure, the
marginal of a set U of inputs is

    a_U(x_U) = (1 / |X_¬U|) ∫ f(x_U, x_¬U) dx_¬U = Σ_leaves  v_leaf · [x_U ∈ leaf_U] · |leaf_¬U| / |X_¬U|

(a leaf is a box; its value v). Cutting each axis of U at every split threshold of the tree
gives cells on which a_U is constant, so its variance is exact:

    V_U = Var_{x_U}[a_U] − Σ_{W ⊊ U} V_W,     f_U = V_U / Var_x[f]

(Hutter's fraction of variance; single inputs: V_i = Var[a_i]; pairs: V_ij = Var[a_ij] − V_i −
V_j). Importances are means over the trees of the forest, as in Optuna's evaluator, whose
single importances these equal (tested). Optuna exposes neither pairs nor marginals, so this
module computes them on scikit-learn's ``RandomForestRegressor`` itself; the forest is fitted
with Optuna's settings (64 trees, depth 64, bootstrap) so both see the same trees.

Inputs are in the coordinates the search was uniform in: log10 of log-uniform parameters, and
a categorical parameter (the variant) as its index k, uniform on [k, k + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TreeMarginals", "Forest", "fit_forest"]


@dataclass
class TreeMarginals:
    """One fitted tree as leaf boxes: lo, hi (L, d), values (L,), over ``bounds`` (d, 2)."""

    lo: np.ndarray
    hi: np.ndarray
    values: np.ndarray
    bounds: np.ndarray
    splits: list[np.ndarray]  # per input, the sorted thresholds inside the bounds

    @classmethod
    def from_sklearn(cls, tree, bounds: np.ndarray) -> TreeMarginals:
        t = tree.tree_
        d = bounds.shape[0]
        lo_l, hi_l, val_l = [], [], []
        splits: list[set[float]] = [set() for _ in range(d)]
        stack = [(0, bounds[:, 0].copy(), bounds[:, 1].copy())]
        while stack:
            node, lo, hi = stack.pop()
            f = t.feature[node]
            if f < 0:  # a leaf
                lo_l.append(lo)
                hi_l.append(hi)
                val_l.append(t.value[node].reshape(-1)[0])
                continue
            thr = float(t.threshold[node])  # sklearn: left is x <= thr
            c = min(max(thr, lo[f]), hi[f])
            if lo[f] < c < hi[f]:
                splits[f].add(c)
            left_hi, right_lo = hi.copy(), lo.copy()
            left_hi[f], right_lo[f] = c, c
            stack.append((t.children_left[node], lo, left_hi))
            stack.append((t.children_right[node], right_lo, hi))
        return cls(
            np.array(lo_l),
            np.array(hi_l),
            np.array(val_l),
            bounds,
            [np.array(sorted(s)) for s in splits],
        )

    def _frac(self) -> np.ndarray:
        """(L, d) each leaf's share of every axis."""
        width = self.bounds[:, 1] - self.bounds[:, 0]
        return (self.hi - self.lo) / width

    @property
    def mean(self) -> float:
        return float(self._frac().prod(1) @ self.values)

    @property
    def variance(self) -> float:
        w = self._frac().prod(1)
        m = w @ self.values
        return float(w @ (self.values - m) ** 2)

    def marginal(self, dims: tuple[int, ...], points: np.ndarray) -> np.ndarray:
        """a_U at ``points`` (M, |U|): the tree's prediction averaged over the other inputs."""
        frac = self._frac()
        rest = [k for k in range(self.bounds.shape[0]) if k not in dims]
        weight = self.values * frac[:, rest].prod(1)  # (L,)
        inside = np.ones((len(points), len(self.values)), dtype=bool)
        for j, k in enumerate(dims):
            x = points[:, j : j + 1]
            inside &= (self.lo[None, :, k] <= x) & (x <= self.hi[None, :, k])
            # a point on a threshold belongs to the left leaf only (sklearn's x <= thr)
            inside &= ~((x == self.lo[None, :, k]) & (self.lo[None, :, k] > self.bounds[k, 0]))
        return inside.astype(float) @ weight

    def cell_values(self, dims: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """a_U on every cell of the threshold grid of ``dims`` (one or two inputs), and the
        cells' volume shares; each leaf adds its weight to a block of cells (difference
        array, O(leaves + cells))."""
        rest = [k for k in range(self.bounds.shape[0]) if k not in dims]
        weight = self.values * self._frac()[:, rest].prod(1)
        edges, index, shares = [], [], []
        for k in dims:
            e = np.concatenate([[self.bounds[k, 0]], self.splits[k], [self.bounds[k, 1]]])
            edges.append(e)
            # leaf boxes start and end on thresholds or bounds: exact positions in e
            index.append((np.searchsorted(e, self.lo[:, k]), np.searchsorted(e, self.hi[:, k])))
            shares.append(np.diff(e) / (self.bounds[k, 1] - self.bounds[k, 0]))
        acc = np.zeros([len(e) for e in edges])
        if len(dims) == 1:
            ((s0, e0),) = index
            np.add.at(acc, s0, weight)
            np.add.at(acc, e0, -weight)
            a = np.cumsum(acc)[:-1]
            share = shares[0]
        elif len(dims) == 2:
            (s0, e0), (s1, e1) = index
            np.add.at(acc, (s0, s1), weight)
            np.add.at(acc, (e0, s1), -weight)
            np.add.at(acc, (s0, e1), -weight)
            np.add.at(acc, (e0, e1), weight)
            a = np.cumsum(np.cumsum(acc, 0), 1)[:-1, :-1].ravel()
            share = np.outer(shares[0], shares[1]).ravel()
        else:
            raise ValueError("cell_values takes one or two inputs")
        return a, share

    def marginal_variance(self, dims: tuple[int, ...]) -> float:
        """Var over x_U of a_U (the total, not yet minus lower-order parts)."""
        a, share = self.cell_values(dims)
        m = share @ a
        return float(share @ (a - m) ** 2)


class Forest:
    """fANOVA over the trees of a fitted forest (see module docstring)."""

    def __init__(self, trees: list[TreeMarginals]):
        self.trees = [t for t in trees if t.variance > 0]
        if not self.trees:
            raise ValueError("every tree of the forest is constant: nothing to decompose")
        self._single: dict[int, np.ndarray] = {}

    @property
    def dims(self) -> int:
        return self.trees[0].bounds.shape[0]

    def _single_var(self, i: int) -> np.ndarray:
        if i not in self._single:
            self._single[i] = np.array([max(t.marginal_variance((i,)), 0.0) for t in self.trees])
        return self._single[i]

    def importance(self, i: int) -> tuple[float, float]:
        """(mean, std) over trees of the fraction of variance due to input ``i`` alone."""
        f = self._single_var(i) / np.array([t.variance for t in self.trees])
        return float(f.mean()), float(f.std())

    def pair_importance(self, i: int, j: int) -> tuple[float, float]:
        """(mean, std) over trees of the fraction due to the interaction of ``i`` and ``j``."""
        v = np.array([t.marginal_variance((i, j)) for t in self.trees])
        v = np.clip(v - self._single_var(i) - self._single_var(j), 0.0, None)
        f = v / np.array([t.variance for t in self.trees])
        return float(f.mean()), float(f.std())

    def marginal(self, dims: tuple[int, ...], points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted marginal at ``points`` (M, |U|): mean and std over the trees (Fig. 4)."""
        a = np.stack([t.marginal(dims, points) for t in self.trees])
        return a.mean(0), a.std(0)

    def interaction(self, i: int, j: int, points: np.ndarray) -> np.ndarray:
        """The part of a_ij due to the pair alone: a_ij − a_i − a_j + mean (Fig. 5 right),
        averaged over trees, at ``points`` (M, 2)."""
        out = []
        for t in self.trees:
            out.append(
                t.marginal((i, j), points)
                - t.marginal((i,), points[:, :1])
                - t.marginal((j,), points[:, 1:])
                + t.mean
            )
        return np.mean(out, 0)


def fit_forest(
    X: np.ndarray,
    y: np.ndarray,
    bounds: np.ndarray,
    *,
    n_trees: int = 64,
    max_depth: int = 64,
    seed: int | None = 0,
):
    """A ``RandomForestRegressor`` with Optuna's fANOVA settings, and its ``Forest``."""
    from sklearn.ensemble import RandomForestRegressor

    rf = RandomForestRegressor(
        n_estimators=n_trees,
        max_depth=max_depth,
        min_samples_split=2,
        min_samples_leaf=1,
        random_state=seed,
    )
    rf.fit(X, y)
    return rf, Forest(
        [TreeMarginals.from_sklearn(e, np.asarray(bounds, float)) for e in rf.estimators_]
    )
