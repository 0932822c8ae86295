"""M&S's released structural damping (``structural_form="released"``) against a dense twin.

The released HF-RNN code adds μλ · ¼ (1 − h_t²) · R(a_t) to the backward pass of the total
inputs a_t of its tanh units at every step, summed over time and divided by the batch size:
the Gauss–Newton matrix of ½ Σ_b Σ_t Σ_j ¼ (1 − h²) (Δa)² / B. Here the pre-activations are
recomputed by a loop of this test's own, differentiated densely, and the product compared.
"""

from __future__ import annotations

import pytest
import torch
from optim_toys import make_batch
from torch.func import jacrev

from lstmlab.nn.sequence_model import SequenceModel
from lstmlab.objective import Objective
from lstmlab.optim import HessianFree


def rnn_objective(seed=0, H=4):
    model = SequenceModel(
        2, H, 1, output="linear", read="last", cell="rnn", init="sparse", init_scale=0.5,
        bias=False, learn_h0=True, dtype=torch.float64, seed=seed,
    )  # fmt: skip
    batch = make_batch(3, 6, 2, 1, read="last", seed=seed)
    return Objective(model, batch)


def pre_activations(obj, x):
    """(B, T, H) total inputs a_t = W x_t + R h_{t−1} (h_{−1} = h0), padded steps carry h."""
    p = obj._as_dict(x)
    W, R, h0 = p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["rnn.h0_l0"]
    b = obj.batch
    h = h0.expand(len(b), -1)
    out = []
    for t in range(b.inputs.shape[1]):
        a = b.inputs[:, t] @ W.T + h @ R.T
        valid = (t < b.lengths).unsqueeze(-1)
        h = torch.where(valid, torch.tanh(a), h)
        out.append(a)
    return torch.stack(out, 1)


def dense_released(obj, v):
    x0 = obj.get_params()
    a0 = pre_activations(obj, x0).detach()
    J = jacrev(lambda x: pre_activations(obj, x))(x0).reshape(a0.numel(), -1)
    h = torch.tanh(a0)
    mask = obj.batch.mask().to(h.dtype).unsqueeze(-1)
    w = (0.25 * (1 - h * h) * mask / len(obj.batch)).reshape(-1)
    return J.T @ (w * (J @ v))


def test_released_structural_product_equals_the_dense_pre_activation_penalty():
    obj = rnn_objective()
    v = torch.randn(obj.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = obj.curvature_operator("none", 1.0, structural_form="released")(v)
    ref = dense_released(obj, v)
    assert (got - ref).norm() / ref.norm() <= 1e-10
    mean = obj.curvature_operator("none", 1.0)(v)  # the other form is another matrix
    assert (mean - ref).norm() / ref.norm() > 0.1
    # and it adds to the Gauss–Newton product, scaled by the weight
    gn = obj.curvature_operator("gn", 0.0)(v)
    both = obj.curvature_operator("gn", 0.3, structural_form="released")(v)
    assert (both - gn - 0.3 * ref).norm() / ref.norm() <= 1e-10


def test_released_form_is_refused_for_other_networks_and_unknown_forms():
    model = SequenceModel(2, 3, 1, output="linear", read="last", dtype=torch.float64, seed=0)
    obj = Objective(model, make_batch(2, 4, 2, 1, read="last"))
    with pytest.raises(ValueError, match="one-layer, one-direction cell='rnn'"):
        obj.curvature_operator("gn", 1.0, structural_form="released")
    with pytest.raises(ValueError, match="unknown structural_form 'paper'"):
        rnn_objective().curvature_operator("gn", 1.0, structural_form="paper")


def test_hf_builds_its_curvature_with_the_structural_form_it_was_given(monkeypatch):
    obj = rnn_objective()
    seen = []
    real = obj.curvature_operator

    def spy(kind, structural_weight=0.0, **kw):
        seen.append(kw)
        return real(kind, structural_weight, **kw)

    monkeypatch.setattr(Objective, "curvature_operator", lambda self, *a, **k: spy(*a, **k))
    HessianFree(damping=0.01, structural_weight=0.03, structural_form="released", max_cg=5).step(
        obj
    )
    HessianFree(max_cg=5).step(obj)
    assert seen == [{"structural_form": "released"}, {}]
    with pytest.raises(ValueError, match="structural_form: unknown 'sum'"):
        HessianFree(structural_form="sum")
