"""Curvature products of ``lstmlab.SequenceModel`` (lstm97 and vanilla) against dense Jacobians.

float64, masked batches with unequal lengths; the model keeps its fast ``bptt`` engine: the
Gauss–Newton and structural-damping products run on it (R-forward + hand-written backward), the
exact Hessian switches to ``autograd`` only while its graph is built (more cases, and the
reference twin, in ``test_fast_curvature.py``).
"""

from __future__ import annotations

import pytest
import torch
from optim_toys import dense_gn, make_batch
from torch.func import hessian, jacrev

from lstmlab.nn.sequence_model import SequenceModel
from lstmlab.objective import Objective

CASES = [
    ("lstm97", "linear", "every"),
    ("lstm97", "sigmoid", "last"),
    ("vanilla", "softmax", "every"),
    ("vanilla", "bernoulli", "last"),
]
IDS = ["-".join(c) for c in CASES]


def build(variant, output, read, seed=0):
    model = SequenceModel(
        2,
        4,
        3,
        output=output,
        read=read,
        variant=variant,
        cells_per_block=2 if variant == "lstm97" else 1,
        dtype=torch.float64,
        seed=seed,
    )
    batch = make_batch(3, 5, 2, 3, output=output, read=read, seed=seed)
    return model, batch, Objective(model, batch)


@pytest.mark.parametrize("variant,output,read", CASES, ids=IDS)
def test_gauss_newton_product_equals_dense(variant, output, read):
    model, batch, obj = build(variant, output, read)
    assert model.engine == "bptt"
    v = torch.randn(obj.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = obj.gauss_newton_product(v)
    assert model.engine == "bptt"  # restored
    with obj.engine("autograd"):
        ref = dense_gn(obj) @ v
    assert (got - ref).norm() / ref.norm() <= 1e-10


@pytest.mark.parametrize("variant,output,read", CASES[:3], ids=IDS[:3])
def test_hessian_product_agrees_with_finite_differences(variant, output, read):
    model, batch, obj = build(variant, output, read)
    v = torch.randn(obj.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    hv = obj.hessian_product(v)
    fd = obj.fd_hessian_product(v, central=True)  # differences of bptt gradients
    assert (hv - fd).norm() / hv.norm() <= 1e-6
    if variant == "lstm97":  # and the dense Hessian, once
        with obj.engine("autograd"):
            H = hessian(lambda x: model.loss(obj.forward(x), batch))(obj.get_params())
        assert (hv - H @ v).norm() / (H @ v).norm() <= 1e-10


@pytest.mark.parametrize("variant", ["lstm97", "vanilla"])
def test_structural_damping_equals_definition(variant):
    model, batch, obj = build(variant, "linear", "every")
    x0 = obj.get_params()
    with obj.engine("autograd"):
        Js = jacrev(lambda x: obj.forward(x, return_states=True)[1])(x0)  # (B, T, S, P)
    w = obj.state_weights()
    D = torch.einsum("bt,btsp,btsq->pq", w, Js, Js)
    v = torch.randn(obj.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = obj.structural_damping_product(v)
    assert (got - D @ v).norm() / (D @ v).norm() <= 1e-10


def test_gradient_uses_fast_engine_and_matches_reference():
    model, batch, obj = build("lstm97", "linear", "every")
    f, g = obj.loss_and_grad()
    with obj.engine("autograd"):
        f2, g2 = obj.loss_and_grad()
    assert f == pytest.approx(f2, rel=1e-13)
    assert torch.allclose(g, g2, rtol=1e-10, atol=1e-13)
