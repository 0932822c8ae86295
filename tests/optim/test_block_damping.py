"""Gate-aware damping in Hessian-free (seed 000 Sec. 6's conjecture): parameter blocks, gate
saturation, the per-block Levenberg–Marquardt rule and the saturation rule."""

from __future__ import annotations

import pytest
import torch
from runkit import train_tiny

import lstmlab
from lstmlab import Objective, SequenceModel
from lstmlab.objective import FunctionObjective
from lstmlab.objective.blocks import (
    ParameterBlocks,
    block_saturation,
    gate_saturation,
    lstm_cells,
    parameter_blocks,
)
from lstmlab.optim import HessianFree

DT = torch.float64


def seed000_objective(n: int = 60, T: int = 20, seed: int = 0):
    task = lstmlab.tasks.make("seed000", n_train=n, n_test=10, T=T)
    torch.manual_seed(seed)
    model = SequenceModel(
        hidden_size=4,
        variant="lstm97",
        cells_per_block=2,
        gate_sharpness=3.75,
        dtype=DT,
        **task.model_kwargs(),
    )
    return Objective(model, task.train.batch().to(dtype=DT))


def offsets(model) -> dict[str, int]:
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = i
        i += p.numel()
    return out


# ---------------------------------------------------------------------------- blocks
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(variant="lstm97", cells_per_block=2),
        dict(variant="vanilla", cells_per_block=2, num_layers=2, bidirectional=True),
        dict(variant="CIFG"),
        dict(variant="NIG"),
        dict(variant="FGR"),
        dict(variant="vanilla", proj_size=2),
        dict(variant="mLSTM"),
        dict(variant="F-LSTM", factorization_rank=2),
        dict(variant="G-LSTM", groups=2),
    ],
    ids=lambda k: "-".join(f"{v}" for v in k.values()),
)
@pytest.mark.parametrize("by", ["gate", "memory-block"])
def test_every_parameter_is_in_exactly_one_block(kwargs, by):
    model = SequenceModel(input_size=4, hidden_size=4, output_size=3, dtype=DT, **kwargs)
    blocks = parameter_blocks(model, by)
    n = sum(p.numel() for p in model.parameters())
    assert blocks.index.shape == (n,)
    assert int(blocks.sizes().min()) >= 1 and int(blocks.index.max()) == len(blocks) - 1
    assert "readout" in blocks.names
    assert any(".cell" in name for name in blocks.names)
    if by == "memory-block":
        assert len(blocks) > len(parameter_blocks(model, "gate"))


def test_rows_of_w_r_b_q_and_peepholes_go_to_their_gate_and_memory_block():
    model = SequenceModel(
        input_size=3, hidden_size=4, output_size=1, variant="lstm97", cells_per_block=2, dtype=DT
    )  # gates i, o; peepholes; Q
    cell = lstm_cells(model)[0]
    s, off = cell.spec, offsets(model)
    blocks = parameter_blocks(model, "memory-block")
    name = lambda i: blocks.names[int(blocks.index[i])]  # noqa: E731
    I = s.input_size
    W = off["rnn.cells.0.W"]
    assert name(W + 0 * I) == "L0.cell.b0" and name(W + 3 * I) == "L0.cell.b1"
    assert name(W + s.gate_slice("i").start * I) == "L0.input.b0"
    assert name(W + (s.gate_slice("o").start + 1) * I + 2) == "L0.output.b1"
    assert name(off["rnn.cells.0.b"] + s.gate_slice("o").start) == "L0.output.b0"
    Q = off["rnn.cells.0.Q"]  # rows in q's layout: i (2 blocks), then o
    assert name(Q + 1 * s.n_q) == "L0.input.b1" and name(Q + 2 * s.n_q) == "L0.output.b0"
    assert name(off["rnn.cells.0.peep_o"] + 2) == "L0.peephole_o.b1"
    assert name(off["head.weight"]) == "readout"
    gate_blocks = parameter_blocks(model, "gate")
    assert gate_blocks.names[int(gate_blocks.index[W + s.gate_slice("i").start * I])] == "L0.input"


def test_g_lstm_group_rows_map_to_the_dense_rows_they_feed():
    """Perturb each element of Wg: the dense W it assembles changes only in rows of the kind
    (and memory block) the blocking gives that element."""
    model = SequenceModel(
        input_size=4, hidden_size=4, output_size=1, variant="G-LSTM", groups=2, dtype=DT
    )
    cell = lstm_cells(model)[0]
    s, off = cell.spec, offsets(model)
    blocks = parameter_blocks(model, "memory-block")
    rows = ["L0.cell.b" + str(r // s.cells_per_block) for r in range(s.hidden_size)]
    kinds = {"i": "input", "f": "forget", "o": "output"}
    for g in s.gates:
        rows += [f"L0.{kinds[g]}.b{j}" for j in range(s.blocks)]
    base = cell.weights()["W"].clone()
    start = off["rnn.cells.0.Wg"]
    for e in range(cell.Wg.numel()):
        with torch.no_grad():
            old = float(cell.Wg.view(-1)[e])
            cell.Wg.view(-1)[e] = old + 1.0
            changed = (cell.weights()["W"] != base).any(1).nonzero().flatten().tolist()
            cell.Wg.view(-1)[e] = old
        assert len(changed) == 1
        assert blocks.names[int(blocks.index[start + e])] == rows[changed[0]]


def test_a_model_without_lstm_layers_is_refused_in_one_line():
    model = SequenceModel(input_size=2, hidden_size=3, output_size=1, cell="rnn", dtype=DT)
    with pytest.raises(ValueError, match="needs a network of LSTM layers"):
        parameter_blocks(model)
    with pytest.raises(ValueError, match="unknown blocking 'cells'"):
        parameter_blocks(SequenceModel(input_size=2, hidden_size=2, output_size=1), "cells")


# ---------------------------------------------------------------------------- saturation
def test_saturation_counts_shut_and_open_gates_over_valid_steps_only():
    model = SequenceModel(
        input_size=2, hidden_size=4, output_size=1, variant="vanilla", cells_per_block=2, dtype=DT
    )
    cell = lstm_cells(model)[0]
    s = cell.spec
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        cell.b[s.gate_slice("i")] = torch.tensor([30.0, 0.0])  # block 0 open, block 1 at 0.5
        cell.b[s.gate_slice("f")] = torch.tensor([0.0, -30.0])  # block 1 shut
    x = torch.randn(3, 5, 2, dtype=DT)
    sat = gate_saturation(model, x, torch.tensor([5, 2, 1]))
    assert sat[(0, "i")].tolist() == [1.0, 0.0]
    assert sat[(0, "f")].tolist() == [0.0, 1.0]
    assert sat[(0, "o")].tolist() == [0.0, 0.0]
    assert model.rnn.engine == "bptt"  # restored


def test_saturation_matches_a_hand_count_through_the_plain_step():
    obj = seed000_objective(n=12, T=20)
    model, batch = obj.model, obj.batch
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)  # push some gates into saturation
    cell = lstm_cells(model)[0]
    sat = gate_saturation(model, batch.inputs, batch.lengths, eps=0.1)
    x = batch.inputs.transpose(0, 1)
    B = x.shape[1]
    state = (x.new_zeros(B, 4), x.new_zeros(B, 4), x.new_zeros(B, cell.spec.n_q))
    hits, count = torch.zeros(cell.spec.n_q, dtype=DT), 0.0
    for t in range(x.shape[0]):
        _, state = cell.step(x[t], state, model.rnn.alpha())
        alive = (batch.lengths > t).to(DT)
        hits += ((torch.minimum(state[2], 1 - state[2]) < 0.1).to(DT) * alive[:, None]).sum(0)
        count += float(alive.sum())
    want = hits / count
    got = torch.cat([sat[(0, g)] for g in cell.spec.gates])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    assert 0 < float(want.max())  # the test sees some saturation


def test_block_saturation_reads_each_gate_block_and_zero_elsewhere():
    model = SequenceModel(
        input_size=2, hidden_size=4, output_size=1, variant="vanilla", cells_per_block=2, dtype=DT
    )
    blocks = parameter_blocks(model, "memory-block")
    sat = {
        (0, "i"): torch.tensor([0.2, 0.4], dtype=DT),
        (0, "f"): torch.tensor([0.0, 1.0], dtype=DT),
        (0, "o"): torch.tensor([0.5, 0.5], dtype=DT),
    }
    per = dict(zip(blocks.names, block_saturation(blocks, sat).tolist(), strict=True))
    assert per["L0.input.b1"] == 0.4 and per["L0.forget.b1"] == 1.0
    assert per["L0.peephole_f.b1"] == 1.0 and per["L0.cell.b0"] == 0.0 and per["readout"] == 0.0
    coarse = parameter_blocks(model, "gate")
    per = dict(zip(coarse.names, block_saturation(coarse, sat).tolist(), strict=True))
    assert per["L0.input"] == pytest.approx(0.3)


# ---------------------------------------------------------------------------- HF, "lm"
def hf_after_steps(n_steps: int = 1, **kw):
    obj = seed000_objective()
    hf = HessianFree(curvature="gn", max_cg=20, damping=1.0, **kw)
    infos = [hf.step(obj) for _ in range(n_steps)]
    return obj, hf, infos


def test_per_block_lm_with_equal_lambdas_takes_plain_hfs_step_then_moves_each_block():
    plain_obj, _, _ = hf_after_steps()
    obj, hf, infos = hf_after_steps(block_damping="gate")
    torch.testing.assert_close(obj.get_params(), plain_obj.get_params(), rtol=1e-10, atol=1e-12)
    lam = hf.lam_blocks.tolist()
    assert len(lam) == len(obj.parameter_blocks("gate"))
    rule = hf.lm
    assert lam == [rule.update(1.0, r) for r in infos[0].extra["block_rho"]]
    assert lam != [1.0] * len(lam), "every block kept its λ: the per-block rule did not act"
    assert infos[0].damping == pytest.approx(hf.lam)  # λ̄ after the step, as plain HF reports
    assert hf.lam == pytest.approx(
        float(
            torch.exp(
                (obj.parameter_blocks().sizes() * torch.tensor(lam).log()).sum() / obj.n_params
            )
        )
    )


def test_a_blocks_lambda_is_the_damping_its_parameters_get():
    obj = seed000_objective()
    hf = HessianFree(
        curvature="gn",
        max_cg=30,
        damping=1e-3,
        block_damping="gate",
        line_search=False,
        backtrack=False,
    )
    blocks = obj.parameter_blocks("gate")
    ro = blocks.names.index("readout")
    hf.lam_blocks = torch.full((len(blocks),), 1e-3, dtype=DT)
    hf.lam_blocks[ro] = 1e12
    x0 = obj.get_params()
    hf.step(obj)
    move = (obj.get_params() - x0).abs()
    mask = blocks.index == ro
    assert float(move[mask].max()) < 1e-9
    assert float(move[~mask].max()) > 1e-4


class BlockQuadratic(FunctionObjective):
    """½ xᵀHx − cᵀx with the exact Gauss–Newton product and two blocks of three."""

    def parameter_blocks(self, by="gate"):
        return ParameterBlocks(("a", "b"), torch.tensor([0, 0, 0, 1, 1, 1]), (None, None))


def test_block_reduction_ratios_are_one_where_the_model_is_exact():
    g = torch.Generator().manual_seed(3)
    Q = torch.randn(6, 6, generator=g, dtype=DT)
    H = Q @ Q.T + torch.eye(6, dtype=DT)
    H[:3, 3:] = H[3:, :3] = 0.0  # the blocks do not interact: each one's model is exact alone
    c = torch.randn(6, generator=g, dtype=DT)
    obj = BlockQuadratic(lambda x: 0.5 * x @ H @ x - c @ x, torch.zeros(6, dtype=DT))
    hf = HessianFree(
        curvature="gn", damping=1e-9, block_damping="gate", structural_weight=0.0, max_cg=6
    )
    info = hf.step(obj)
    assert info.extra["block_rho"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert hf.lam_blocks.tolist() == pytest.approx([1e-9 * 2 / 3] * 2)


def test_lam_blocks_survive_the_state_dict():
    _, hf, _ = hf_after_steps(block_damping="memory-block")
    fresh = HessianFree(curvature="gn", block_damping="memory-block")
    fresh.load_state_dict(hf.state_dict())
    assert fresh.lam_blocks.tolist() == hf.lam_blocks.tolist()


# ---------------------------------------------------------------------------- HF, "saturation"
def test_saturation_rule_damps_a_saturated_gates_parameters_harder():
    obj = seed000_objective()
    cell = lstm_cells(obj.model)[0]
    with torch.no_grad():
        cell.b[cell.spec.gate_slice("o")] = 40.0  # output gates always open
        cell.b[cell.spec.gate_slice("i")] = 0.0
        cell.W[cell.spec.gate_slice("i")] = 0.0
        cell.R[cell.spec.gate_slice("i")] = 0.0
        cell.Q.zero_()
        cell.peep_i.zero_()
    hf = HessianFree(
        curvature="gn",
        damping=0.5,
        block_damping="gate",
        block_rule="saturation",
        saturation_weight=4.0,
    )
    blocks = obj.parameter_blocks("gate")
    d = hf._damping_vector(obj, blocks, 0.5, obj.get_params())
    at = lambda name: set(d[blocks.index == blocks.names.index(name)].tolist())  # noqa: E731
    assert at("L0.output") == {0.5 * (1 + 4.0)}
    assert at("L0.peephole_o") == {0.5 * (1 + 4.0)}
    assert at("L0.input") == {0.5} and at("L0.cell") == {0.5} and at("readout") == {0.5}
    info = hf.step(obj)  # and a step runs with it
    assert info.new_loss is None or info.new_loss <= info.loss


def test_hf_refuses_block_damping_without_blocks_and_unknown_names():
    obj = FunctionObjective(lambda x: (x**2).sum(), torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match="block_damping needs an objective"):
        HessianFree(block_damping="gate").step(obj)
    with pytest.raises(ValueError, match="^block_damping: unknown 'gates'"):
        HessianFree(block_damping="gates")
    with pytest.raises(ValueError, match="^block_rule: unknown 'sat'"):
        HessianFree(block_rule="sat")


# ---------------------------------------------------------------------------- from the CLI
@pytest.mark.parametrize(
    "options",
    [
        ["--optimizer.options.block_damping", "gate"],
        ["--optimizer.options.block_damping", "memory-block"],
        [
            "--optimizer.options.block_damping",
            "gate",
            "--optimizer.options.block_rule",
            "saturation",
        ],
    ],
    ids=["gate-lm", "memory-block-lm", "gate-saturation"],
)
def test_train_runs_hf_with_gate_aware_damping(tmp_path, options):
    code = train_tiny(
        tmp_path / "run",
        "--optimizer.name",
        "hf",
        "--optimizer.options.max_cg",
        "5",
        *options,
        **{"stop.max_iterations": "2"},
    )
    assert code == 0
    assert (tmp_path / "run" / "summary.json").exists()
