"""HF options that follow Martens & Sutskever's released HF-RNN code (issue 24): weight decay
and CG-backtracking / line search on subsets of the gradient batch (``search_batch``)."""

from __future__ import annotations

import pytest
import torch

import lstmlab
from lstmlab import Objective, SequenceModel
from lstmlab.objective import FunctionObjective
from lstmlab.optim import HessianFree

DT = torch.float64


def quartic(n: int = 6, omega: float = 0.0):
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(n, n, generator=g, dtype=DT)
    A = Q @ Q.T + torch.eye(n, dtype=DT)
    b = torch.randn(n, generator=g, dtype=DT)
    x0 = torch.randn(n, generator=g, dtype=DT)
    return FunctionObjective(
        lambda x: 0.5 * x @ A @ x - b @ x + 0.05 * (x**4).sum() + 0.5 * omega * x @ x, x0
    )


@pytest.mark.parametrize("curvature", ["hessian", "gn"])
def test_weight_decay_is_hf_on_the_penalised_objective(curvature):
    """HF(ω) on f takes the steps HF(0) takes on f + ½ω‖θ‖²: the same gradient, curvature
    (+ωI outside the LM damping: its λ path is the same too), losses and line search."""
    omega = 0.3
    kw = dict(curvature=curvature, damping=0.5, structural_weight=0.0, max_cg=20)
    a, b = HessianFree(weight_decay=omega, **kw), HessianFree(**kw)
    fa, fb = quartic(), quartic(omega=omega)
    for _ in range(5):
        xa = fa.get_params()
        ia, ib = a.step(fa), b.step(fb)
        assert ia.extra["objective"] == pytest.approx(ib.loss, rel=1e-12)
        assert ia.loss == pytest.approx(ib.loss - 0.5 * omega * float(xa @ xa), rel=1e-12)
        assert ia.damping == pytest.approx(ib.damping, rel=1e-12)
        torch.testing.assert_close(fa.get_params(), fb.get_params(), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(fa.get_params(), quartic().get_params())


def test_weight_decay_shrinks_the_weights_of_a_network():
    task = lstmlab.tasks.make("seed000", n_train=40, n_test=10, T=20)
    ends = []
    for omega in (0.0, 0.5):
        torch.manual_seed(0)
        model = SequenceModel(hidden_size=4, variant="lstm97", dtype=DT, **task.model_kwargs())
        obj = Objective(model, task.train.batch().to(dtype=DT))
        hf = HessianFree(weight_decay=omega, max_cg=30)
        for _ in range(4):
            hf.step(obj)
        ends.append(float(obj.get_params().norm()))
    assert ends[1] < ends[0] - 1e-3


class Recording(Objective):
    """An objective that notes the rows of every subset HF draws and the rows each loss runs on."""

    def __init__(self, *args, root=None, rows=None, **kw):
        super().__init__(*args, **kw)
        self.root = root or self
        self.rows = rows  # this subset's rows of the root batch (None: all)
        if root is None:
            self.subsets: list[torch.Tensor] = []
            self.loss_rows: list[int] = []

    def subset(self, idx):
        rows = torch.arange(self.n_samples)[idx] if self.rows is None else self.rows[idx]
        self.root.subsets.append(rows)
        return Recording(
            self.model, self.batch.index(idx), counter=self.counter, root=self.root, rows=rows
        )

    def loss(self, x=None):
        self.root.loss_rows.append(self.n_samples)
        return super().loss(x)


def recording_objective(n: int = 30, hidden: int = 4):
    task = lstmlab.tasks.make("seed000", n_train=n, n_test=10, T=20)
    torch.manual_seed(0)
    model = SequenceModel(hidden_size=hidden, variant="lstm97", dtype=DT, **task.model_kwargs())
    return Recording(model, task.train.batch().to(dtype=DT))


def test_search_batch_scores_backtracking_and_line_search_on_held_apart_subsets():
    obj = recording_objective(30)
    hf = HessianFree(curvature_batch=8, search_batch=10, max_cg=20)
    info = hf.step(obj)
    assert not info.rejected
    curv, back, line = obj.subsets  # B_c, then the two search subsets
    assert [len(r) for r in (curv, back, line)] == [8, 10, 10]
    every = torch.cat([curv, back, line])
    assert len(torch.unique(every)) == 28  # apart from B_c and from each other
    # every loss HF evaluated ran on a search subset (10 rows), none on B_c or all of B_g
    assert obj.loss_rows and set(obj.loss_rows) == {10}
    assert info.new_loss is None and "search_loss" in info.extra


def test_search_batch_fractions_and_too_few_rows():
    obj = recording_objective(20)
    HessianFree(curvature_batch=0.5, search_batch=0.4, max_cg=10).step(obj)
    curv, back, line = obj.subsets
    assert (len(curv), len(back), len(line)) == (10, 8, 8)
    assert not set(curv.tolist()) & set(back.tolist())  # the first stays apart from B_c
    assert not set(back.tolist()) & set(line.tolist())
    assert len(set(line.tolist()) - set(curv.tolist())) == 2  # the rest of the rows outside B_c
    # fewer rows than two subsets: the line search scores the backtracking subset, once
    obj = recording_objective(20)
    HessianFree(search_batch=12, max_cg=10).step(obj)
    assert len(obj.subsets) == 1 and set(obj.loss_rows) == {12}


def test_without_search_batch_every_loss_is_on_the_gradient_batch():
    obj = recording_objective(30)
    HessianFree(curvature_batch=10, max_cg=20).step(obj)
    assert len(obj.subsets) == 1 and set(obj.loss_rows) == {30}


def test_search_batch_rho_is_measured_on_the_search_subset():
    """ρ compares the backtracking subset's loss before and after the step with the model's
    predicted decrease; recomputed here from the subset the step drew."""
    obj = recording_objective(30)
    x0 = obj.get_params()
    hf = HessianFree(curvature_batch=10, search_batch=10, max_cg=20, line_search=False)
    info = hf.step(obj)
    back = obj.subsets[1]
    sub = Objective(obj.model, obj.batch.index(back))
    before, after = sub.loss(x0), sub.loss(obj.get_params())
    assert info.rho == pytest.approx((after - before) / info.extra["backtrack_phi"], rel=1e-9)


def test_search_batch_costs_less_than_the_whole_batch():
    costs = []
    for sb in (None, 5):
        obj = recording_objective(30)
        HessianFree(curvature_batch=10, search_batch=sb, max_cg=20).step(obj)
        costs.append(obj.counter.p_d)
    assert costs[1] < costs[0]


def test_options_are_checked():
    with pytest.raises(ValueError, match="^weight_decay: must be >= 0"):
        HessianFree(weight_decay=-1.0)
    with pytest.raises(ValueError, match="^search_batch: must be > 0"):
        HessianFree(search_batch=0)


def test_rho_batch_curvature_measures_rho_on_the_curvature_batch():
    obj = recording_objective(30)
    x0 = obj.get_params()
    hf = HessianFree(
        curvature_batch=10, search_batch=10, rho_batch="curvature", max_cg=20, line_search=False
    )
    info = hf.step(obj)
    curv = obj.subsets[0]
    sub = Objective(obj.model, obj.batch.index(curv))
    before, after = sub.loss(x0), sub.loss(obj.get_params())
    assert info.rho == pytest.approx((after - before) / info.extra["backtrack_phi"], rel=1e-9)
    with pytest.raises(ValueError, match="^rho_batch: unknown 'gradient'"):
        HessianFree(rho_batch="gradient")


class Scoring(Recording):
    """Also notes the value of every loss on the backtracking subset's row count."""

    def subset(self, idx):
        sub = super().subset(idx)
        sub.__class__ = Scoring
        return sub

    def loss(self, x=None):
        v = super().loss(x)
        self.root.values = getattr(self.root, "values", []) + [(self.n_samples, v)]
        return v


def test_backtrack_rule_best_scores_every_tenth_iterate_and_takes_the_lowest():
    """As M&S's released code: the iterates at CG iterations 1, 11, 21, … and the last, each
    scored on the backtracking subset, the lowest taken (the step is that iterate). Martens'
    walk-back, on the same step, stops elsewhere."""
    chosen = {}
    for rule in ("walk-back", "best"):
        obj = recording_objective(30, hidden=12)
        obj.__class__ = Scoring
        x0 = obj.get_params()
        hf = HessianFree(
            damping=0.01, curvature_batch=10, search_batch=9, max_cg=45, cg_tol=0.0,
            line_search=False, backtrack_rule=rule,
        )  # fmt: skip
        info = hf.step(obj)
        assert not info.rejected and info.cg_iterations > 11
        chosen[rule] = info.extra["backtrack_iterate"]
    scores = [v for n, v in obj.values if n == 9][2:]  # after f(θ) on both search subsets
    kept = sorted({1, 11, 21, 31, 41} & set(range(1, info.cg_iterations + 1)))
    kept += [info.cg_iterations] if info.cg_iterations not in kept else []
    assert len(scores) == len(kept)  # every kept iterate scored, once
    best = min(range(len(scores)), key=lambda k: scores[k])
    assert chosen["best"] == kept[best] != chosen["walk-back"]
    back = obj.subsets[1]
    after = Objective(obj.model, obj.batch.index(back)).loss(obj.get_params())
    assert after == pytest.approx(scores[best], rel=1e-12)  # the step is the chosen iterate
    assert not torch.equal(obj.get_params(), x0)
