"""Fast curvature products (R-forward + hand-written backward of the bptt engine) against their
reference twin (double backward on the autograd engine) and dense Jᵀ H_L J, in float64.

Every variant of SPEC S1 and every structure (blocks of cells, gate sharpness, projection,
stacking, bidirectional, padding masks, each output type and read mode), in both memory layouts
of the engine; the structural-damping term J_sᵀ W_s J_s likewise; float32 within round-off; the
objective's choice of products; and bad input."""

from __future__ import annotations

import pytest
import torch
from optim_toys import TinyRNN, dense_gn, make_batch
from torch.func import jacrev

from lstmlab.engines.bptt import LAYOUTS, forced_layout
from lstmlab.nn.sequence_model import SequenceModel
from lstmlab.nn.variants import VARIANTS
from lstmlab.objective import Objective
from lstmlab.optim import HessianFree

F64 = torch.float64


@pytest.fixture(params=LAYOUTS)
def layout(request):
    with forced_layout(request.param):
        yield request.param


def build(output="linear", read="every", I=2, H=4, O=3, B=4, T=5, dtype=F64, seed=0, **kw):
    model = SequenceModel(I, H, O, output=output, read=read, dtype=dtype, seed=seed, **kw)
    batch = make_batch(B, T, I, O, output=output, read=read, dtype=dtype, seed=seed)
    return model, batch


def direction(obj, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(obj.n_params, generator=g, dtype=F64).to(obj.get_params().dtype)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def dense_structural(obj):
    """J_sᵀ W_s J_s from the dense Jacobian of the states (autograd engine)."""
    with obj.engine("autograd"):
        Js = jacrev(lambda x: obj.forward(x, return_states=True)[1])(obj.get_params())
    return torch.einsum("bt,btsp,btsq->pq", obj.state_weights(), Js, Js)


def fast_and_reference(model, batch):
    fast = Objective(model, batch, curvature_products="fast")
    ref = Objective(model, batch, curvature_products="reference")
    return fast, ref


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_equals_reference_and_dense(variant, layout):
    """GN and GN + structural damping: fast = reference = dense, ≤ 1e-10."""
    model, batch = build(
        variant=variant, I=4, gate_sharpness=2.0, cells_per_block=2 if variant == "lstm97" else 1
    )
    fast, ref = fast_and_reference(model, batch)
    v = direction(fast)
    op = fast.curvature_operator("gn", structural_weight=0.4)
    assert op.products == "fast" and model.engine == "bptt"
    op(direction(fast, seed=7))  # a product before: what it keeps (factors) must not leak
    got = op(v)
    want = ref.curvature_operator("gn", structural_weight=0.4)(v)
    assert rel(got, want) <= 1e-10
    with fast.engine("autograd"):
        dense = dense_gn(fast) @ v
    dense += 0.4 * (dense_structural(fast) @ v)
    assert rel(got, dense) <= 1e-10


STRUCTURES = {
    "blocks-alpha-sigmoid-last": dict(
        variant="lstm97", cells_per_block=2, gate_sharpness=3.75, output="sigmoid", read="last"
    ),
    "alpha-per-gate-softmax": dict(
        variant="FGR", cells_per_block=2, gate_sharpness={"i": 2.0, "o": 0.5}, output="softmax"
    ),
    "projection-bernoulli-last": dict(proj_size=3, output="bernoulli", read="last"),
    "stacked-bidirectional-last": dict(
        num_layers=2, bidirectional=True, output="softmax", read="last"
    ),
    "stacked-bidirectional-every": dict(num_layers=2, bidirectional=True, variant="NP"),
    "stacked-mLSTM-projection": dict(num_layers=2, variant="mLSTM", proj_size=3),
    "G-LSTM-stacked": dict(num_layers=2, variant="G-LSTM", I=4),
    "F-LSTM-bidirectional": dict(bidirectional=True, variant="F-LSTM"),
    "ctc": dict(output="ctc"),
}


@pytest.mark.parametrize("kwargs", list(STRUCTURES.values()), ids=list(STRUCTURES))
def test_structures_equal_reference_and_dense(kwargs, layout):
    """GN, structural damping alone, and their sum: fast = reference (= dense), ≤ 1e-10."""
    kwargs = dict(kwargs)
    output = kwargs.get("output", "linear")
    model, batch = build(**kwargs)
    if output == "ctc":  # labels of length 1-2 and the target lengths CTC needs
        from dataclasses import replace

        g = torch.Generator().manual_seed(3)
        batch = replace(
            batch,
            targets=torch.randint(1, 3, (len(batch), 2), generator=g),
            target_lengths=torch.tensor([2, 1, 2, 1]),
        )
    fast, ref = fast_and_reference(model, batch)
    v = direction(fast)
    for kind, mu in (("gn", 0.0), ("none", 1.0), ("gn", 0.25)):
        got = fast.curvature_operator(kind, mu)(v)
        assert rel(got, ref.curvature_operator(kind, mu)(v)) <= 1e-10, (kind, mu)
    if output != "ctc":  # dense H_L of the CTC loss is not the GN product's H_L
        with fast.engine("autograd"):
            dense = dense_gn(fast) @ v
        assert rel(fast.gauss_newton_product(v), dense) <= 1e-10
    assert rel(fast.structural_damping_product(v), dense_structural(fast) @ v) <= 1e-10


@pytest.mark.parametrize("read", ["every", "last"])
def test_jacobian_halves_equal_reference(read, layout):
    """J v of the logits and states, and Jᵀ u, one by one (padded steps included: J v is zero
    there, as the logits are)."""
    from lstmlab.objective.jacobian import FastJacobian, ReferenceJacobian

    model, batch = build(variant="vanilla", read=read, num_layers=2, bidirectional=True)
    obj = Objective(model, batch)
    x0, v = obj.get_params(), direction(obj)
    fast = FastJacobian(obj, x0, ("z", "s"))
    ref = ReferenceJacobian(obj, x0, ("z", "s"))
    assert fast.parts == ["z", "s", "s", "s"] and ref.parts == ["z", "s"]  # out, 2 layers' c
    jf, jr = fast.jvp(v), ref.jvp(v)
    assert rel(jf[0], jr[0]) <= 1e-12
    assert rel(torch.cat(jf[1:], dim=2), jr[1]) <= 1e-12  # the states, from their pieces
    if read == "every":
        assert float(jf[0][~batch.mask()].abs().max()) == 0.0
    g = torch.Generator().manual_seed(5)
    u = [torch.randn(t.shape, generator=g, dtype=F64) for t in jr]
    widths = [t.shape[2] for t in jf[1:]]
    assert rel(fast.vjp([u[0], *u[1].split(widths, dim=2)]), ref.vjp(u)) <= 1e-12


def test_no_padding_and_unequal_lengths_agree_with_each_sequence_alone(layout):
    """Padding is exact: the product over a padded batch is the mean of the products of each
    sequence alone at its own length (the loss is a mean over samples)."""
    model, batch = build(variant="vanilla", B=3, T=6)
    obj = Objective(model, batch, curvature_products="fast")
    v = direction(obj)
    got = obj.curvature_operator("gn", 0.5)(v)
    parts = []
    for b in range(len(batch)):
        L = int(batch.lengths[b])
        sub = batch.index(slice(b, b + 1))
        from dataclasses import replace

        sub = replace(
            sub, inputs=sub.inputs[:, :L], targets=sub.targets[:, :L], lengths=sub.lengths
        )
        parts.append(
            Objective(model, sub, curvature_products="fast").curvature_operator("gn", 0.5)(v)
        )
    assert rel(got, torch.stack(parts).mean(0)) <= 1e-10


def test_every_sequence_shorter_than_the_padding(layout):
    """No sequence reaches the padded length T: the last steps have no sample alive."""
    from dataclasses import replace

    model, batch = build(variant="lstm97", cells_per_block=2, num_layers=2, bidirectional=True)
    batch = replace(batch, lengths=torch.tensor([4, 2, 3, 1]))
    fast, ref = fast_and_reference(model, batch)
    v = direction(fast)
    got = fast.curvature_operator("gn", 0.5)(v)
    assert rel(got, ref.curvature_operator("gn", 0.5)(v)) <= 1e-10


@pytest.mark.parametrize("variant", ["vanilla", "lstm97"])
def test_float32_within_round_off(variant, layout):
    kw = dict(variant=variant, cells_per_block=2 if variant == "lstm97" else 1)
    m64, b64 = build(**kw)
    m32, _ = build(dtype=torch.float32, **kw)
    b32 = b64.to(torch.device("cpu"), torch.float32)
    m32.load_state_dict(
        {k: t.float() if t.is_floating_point() else t for k, t in m64.state_dict().items()}
    )
    o64 = Objective(m64, b64, curvature_products="reference")
    o32 = Objective(m32, b32, curvature_products="fast")
    v = direction(o64)
    got = o32.curvature_operator("gn", 0.3)(v.float())
    assert got.dtype == torch.float32
    assert rel(got.double(), o64.curvature_operator("gn", 0.3)(v)) <= 1e-5


def test_finite_difference_kind_on_the_fast_gradient(layout):
    """fd (+ structural damping) with fast products: the reference's value within the
    difference's own error; and the FD Hessian agrees with the exact one."""
    model, batch = build(variant="lstm97", cells_per_block=2)
    fast, ref = fast_and_reference(model, batch)
    v = direction(fast)
    for mu in (0.0, 0.3):
        op = fast.curvature_operator("fd", mu)
        assert op.products == "fast"
        assert rel(op(v), ref.curvature_operator("fd", mu)(v)) <= 1e-6
    assert rel(fast.fd_hessian_product(v), ref.hessian_product(v)) <= 1e-6


def test_objective_picks_fast_products_where_it_can():
    model, batch = build(variant="vanilla")
    obj = Objective(model, batch)  # default "auto"
    assert obj.curvature_operator("gn").products == "fast"
    assert obj.curvature_operator("none", 1.0).products == "fast"
    assert obj.curvature_operator("hessian").products == "reference"  # no fast exact Hessian
    with obj.engine("autograd"):
        assert obj.curvature_operator("gn").products == "reference"
    assert obj.subset(slice(0, 2)).curvature_operator("gn").products == "fast"
    toy = Objective(TinyRNN(2, 3, 3).double(), batch)
    assert toy.curvature_operator("gn").products == "reference"
    with pytest.raises(
        ValueError, match="products='fast' is not available: the model is a TinyRNN"
    ):
        Objective(TinyRNN(2, 3, 3).double(), batch, curvature_products="fast").curvature_operator()
    gru = SequenceModel(2, 4, 3, cell="gru", dtype=F64, seed=0)
    with pytest.raises(ValueError, match="cell='gru'"):
        Objective(gru, batch, curvature_products="fast").curvature_operator()
    with pytest.raises(ValueError, match="exact Hessian has no fast product"):
        Objective(model, batch, curvature_products="fast").hessian_product(direction(obj))


def test_costs_recorded():
    model, batch = build(variant="vanilla")
    obj = Objective(model, batch)
    op = obj.curvature_operator("gn")
    v = direction(obj)
    op(v)
    op(v)
    c = obj.counter
    B = len(batch)
    assert (c.n_curv_setup, c.n_curv) == (1, 2)
    assert c.p_d == pytest.approx(1.0 * B + 2 * 4.0 * B)  # set-up: one forward pass


def test_hf_step_same_with_fast_and_reference_products():
    """One HF iteration (CG on the GN products, structural damping) lands on the same point."""
    results = []
    for products in ("fast", "reference"):
        model, batch = build(variant="lstm97", cells_per_block=2, B=6)
        obj = Objective(model, batch, curvature_products=products)
        hf = HessianFree(damping=1.0, structural_weight=0.3, max_cg=8, seed=0)
        hf.step(obj)
        results.append(obj.get_params())
    assert rel(results[0], results[1]) <= 1e-9


@pytest.mark.parametrize(
    "v,match",
    [
        (torch.zeros(7, dtype=F64), r"v must be a flat direction of shape \(\d+,\)"),
        ("zeros2d", r"v must be a flat direction of shape"),
        ("nan", "v contains NaN or Inf"),
        ("inf", "v contains NaN or Inf"),
        ([0.0], "v must be a tensor"),
    ],
    ids=["short", "2d", "nan", "inf", "list"],
)
@pytest.mark.parametrize("products", ["fast", "reference"])
def test_bad_direction_names_the_argument(v, match, products):
    model, batch = build(variant="vanilla")
    obj = Objective(model, batch, curvature_products=products)
    P = obj.n_params
    if v == "zeros2d":
        v = torch.zeros(1, P, dtype=F64)
    elif v in ("nan", "inf"):
        bad = float(v)
        v = torch.zeros(P, dtype=F64)
        v[3] = bad
    op = obj.curvature_operator("gn", 0.1)
    with pytest.raises(ValueError, match=match):
        op(v)
    assert op.n_products == 0 and obj.counter.n_curv == 0  # nothing counted, nothing done


def test_bad_operator_arguments_name_themselves():
    model, batch = build(variant="vanilla")
    obj = Objective(model, batch)
    with pytest.raises(ValueError, match=r"unknown curvature kind 'gauss'; valid kinds: \['gn'"):
        obj.curvature_operator("gauss")
    with pytest.raises(ValueError, match="structural_weight must be finite and >= 0"):
        obj.curvature_operator("gn", -1.0)
    with pytest.raises(ValueError, match="structural_weight must be finite and >= 0"):
        obj.curvature_operator("gn", float("nan"))
    with pytest.raises(ValueError, match="curvature_products must be one of"):
        Objective(model, batch, curvature_products="quick")
