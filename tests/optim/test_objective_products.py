"""Objective curvature products against dense references, in float64, on masked batches."""

from __future__ import annotations

import pytest
import torch
from optim_toys import TinyRNN, dense_gn, make_batch
from torch.func import functional_call, hessian, jacrev

from lstmlab.objective import Objective

OUTPUTS = [("linear", "every"), ("softmax", "every"), ("sigmoid", "last"), ("bernoulli", "every")]


def _setup(output, read, seed=0):
    torch.manual_seed(seed)
    model = TinyRNN(2, 3, 3, output=output, read=read).double()
    batch = make_batch(4, 5, 2, 3, output=output, read=read, seed=seed)
    return model, batch, Objective(model, batch)


@pytest.mark.parametrize("output,read", OUTPUTS, ids=[f"{o}-{r}" for o, r in OUTPUTS])
def test_gauss_newton_matches_dense(output, read):
    model, batch, obj = _setup(output, read)
    G = dense_gn(obj)
    v = torch.randn(obj.n_params, dtype=torch.float64)
    got = obj.gauss_newton_product(v)
    ref = G @ v
    assert torch.linalg.eigvalsh(G).min() > -1e-12  # positive semi-definite
    assert (got - ref).norm() / ref.norm() <= 1e-10


@pytest.mark.parametrize("output,read", OUTPUTS, ids=[f"{o}-{r}" for o, r in OUTPUTS])
def test_hessian_product_matches_dense_and_fd(output, read):
    model, batch, obj = _setup(output, read)
    x0 = obj.get_params()
    H = hessian(
        lambda x: model.loss(
            functional_call(model, obj._as_dict(x), (batch.inputs, batch.lengths)), batch
        )
    )(x0)
    v = torch.randn(obj.n_params, dtype=torch.float64)
    hv = obj.hessian_product(v)
    assert (hv - H @ v).norm() / (H @ v).norm() <= 1e-10
    fd = obj.fd_hessian_product(v, central=True)
    assert (fd - hv).norm() / hv.norm() <= 1e-6
    fwd = obj.fd_hessian_product(v, central=False)
    assert (fwd - hv).norm() / hv.norm() <= 1e-5


def test_structural_damping_matches_definition():
    model, batch, obj = _setup("linear", "every")
    x0 = obj.get_params()
    _, s0 = obj.forward(x0, return_states=True)
    Js = jacrev(lambda x: obj.forward(x, return_states=True)[1])(x0)  # (B, T, S, P)
    w = obj.state_weights()  # (B, T)
    B, T = w.shape
    assert torch.allclose(w.sum(1), torch.full((B,), 1.0 / B, dtype=w.dtype))
    Js = Js.reshape(B, T, -1, obj.n_params)
    D = torch.einsum("bt,btsp,btsq->pq", w, Js, Js)
    v = torch.randn(obj.n_params, dtype=torch.float64)
    got = obj.structural_damping_product(v)
    assert (got - D @ v).norm() / (D @ v).norm() <= 1e-10
    # and it adds linearly to the GN product in one operator
    both = obj.curvature_operator("gn", structural_weight=0.3)(v)
    ref = dense_gn(obj) @ v + 0.3 * (D @ v)
    assert (both - ref).norm() / ref.norm() <= 1e-10
    # padding does not matter: the padded steps carry no weight
    assert float(w[batch.mask().logical_not()].abs().sum()) == 0.0


def test_loss_and_grad_and_counting():
    model, batch, obj = _setup("linear", "every")
    f, g = obj.loss_and_grad()
    assert f == pytest.approx(obj.loss())
    op = obj.curvature_operator("gn")
    op(g)
    op(g)
    c = obj.counter
    B = batch.inputs.shape[0]
    assert (c.n_fun, c.n_grad, c.n_curv, c.n_curv_setup) == (1, 1, 2, 1)
    assert c.p_i == 1 + 3 + 2 * 4 + 3
    assert c.p_d == (1 + 3 + 2 * 4 + 3) * B
    sub = obj.subset(slice(0, 2))
    sub.loss()
    assert c.n_fun == 2 and c.p_d == (1 + 3 + 2 * 4 + 3) * B + 2


def test_set_params_refuses_nonfinite():
    model, batch, obj = _setup("linear", "every")
    x = obj.get_params()
    bad = x.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        obj.set_params(bad)
    assert torch.equal(obj.get_params(), x)


def test_per_sample_grads_squared():
    model, batch, obj = _setup("softmax", "every")
    ref = torch.zeros(obj.n_params, dtype=torch.float64)
    for b in range(len(batch)):
        sub = obj.subset(slice(b, b + 1))
        ref += sub.loss_and_grad()[1] ** 2
    assert torch.allclose(obj.per_sample_grads_squared(), ref / len(batch), rtol=1e-12)
