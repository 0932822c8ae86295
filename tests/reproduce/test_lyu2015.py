"""``lstmlab reproduce lyu2015``: the table's Hessian-free rows for seed 000's conjecture, the
round-off perturbations, and the table that reports both."""

from __future__ import annotations

import pytest
import torch
from runkit import train_tiny

from lstmlab.cli import main
from lstmlab.reproduce import lyu2015
from lstmlab.training.build import build_model, build_task
from lstmlab.training.config import resolve

NEW_ROWS = [m for m in lyu2015.METHODS if m not in lyu2015.TABLE_OPTIMIZERS]


def test_dry_run_lists_every_seed_under_every_perturbation(tmp_path, capsys):
    args = ["reproduce", "lyu2015", "--only", "table", "--seeds", "2", "--out", str(tmp_path)]
    code = main([*args, "--optimizer", "hf-gate", "--perturbations", "3", "--dry-run"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[-1] == "# dry run: 6 runs; nothing started"
    names = [ln.split(":")[0].rsplit("/", 1)[1] for ln in lines[:-1]]
    assert names == [f"hf-gate-seed{s}{p}" for s in (0, 1) for p in ("", "-p1", "-p2")]
    assert all("--optimizer.options.block_damping gate" in ln for ln in lines[:-1])
    perturbed = [ln for ln in lines[:-1] if "-p" in ln.split(":")[0]]
    assert all("--model.perturbation 1e-12" in ln for ln in perturbed)
    assert not any("perturbation" in ln for ln in lines[:-1] if ln not in perturbed)
    assert "--model.perturbation_seed 2" in perturbed[1]
    assert list(tmp_path.iterdir()) == []


def test_bad_perturbation_count_is_one_line(capsys):
    assert main(["reproduce", "lyu2015", "--perturbations", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--perturbations must be >= 1" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("row", NEW_ROWS)
def test_every_new_table_row_trains_from_the_command_line(tmp_path, row):
    flags = [x for k, v in lyu2015.METHODS[row].items() for x in (f"--{k}", v)]
    if row.startswith("hf"):
        flags += ["--optimizer.options.max_cg", "5"]
    code = train_tiny(tmp_path / "run", *flags, **{"stop.max_iterations": "2"})
    assert code == 0 and (tmp_path / "run" / "summary.json").exists()


def test_a_perturbation_moves_the_initial_weights_by_round_off_only():
    def params(**flags):
        cfg = resolve(
            overrides={"task.name": "multiplication", "task.options.n_train": "20", **flags}
        )
        task = build_task(cfg)
        model = build_model(cfg, task, torch.device("cpu"), torch.float64)
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    base = params()
    one = params(**{"model.perturbation": "1e-12"})
    two = params(**{"model.perturbation": "1e-12", "model.perturbation_seed": "2"})
    assert torch.equal(base, params())
    diff = (one - base).abs()
    assert 1e-14 < float(diff.max()) < 1e-11 and bool((diff > 0).all())
    assert not torch.equal(one, two)


def _summary(solved: bool, mae: float, pd: float = 1e6) -> dict:
    return {"solved": solved, "final": {"mae": mae}, "wall_time": 10.0, "P_D": pd, "samples": 1}


def test_table_reports_counts_per_perturbation_seeds_solved_under_all_and_failures():
    s = {
        "hf-gate-seed0": _summary(True, 0.005),
        "hf-gate-seed1": _summary(False, 0.04),
        "hf-gate-seed2": _summary(True, 0.004),
        "hf-gate-seed0-p1": _summary(True, 0.006),
        "hf-gate-seed1-p1": _summary(True, 0.007),
        "hf-gate-seed2-p1": _summary(False, 0.06),
        "lbfgs-seed0": _summary(True, 0.001),
    }
    text = lyu2015.table(s)
    gate = next(ln for ln in text.splitlines() if ln.startswith("| HF-GN, λ per gate (LM)"))
    cells = [c.strip() for c in gate.strip("|").split("|")]
    assert cells[1] == "2/3"  # unperturbed
    assert cells[3] == "2 / 2 (range 2–2)"
    assert cells[4] == "1/3"  # only seed 0 solved both times
    assert cells[9] == "0.0400"  # the failure's final MAE
    assert cells[10] == "1"
    lbfgs = next(ln for ln in text.splitlines() if ln.startswith("| L-BFGS"))
    assert "| 1/1 | 15/15 | – | – |" in lbfgs


def test_environment_names_cpu_blas_and_torch():
    text = lyu2015.environment()
    assert torch.__version__ in text and "BLAS" in text and "thread" in text


# ---------------------------------------------------------------------------- plateau
def test_operands_are_read_back_from_the_inputs():
    from lstmlab.reproduce.plateau import _operands
    from lstmlab.tasks.longlag_1997 import generate_1997
    from lstmlab.tasks.rng import Stream

    inputs, targets, _ = generate_1997(
        "multiplication", 200, 20, Stream(3, "multiplication", "1997", "test"), torch.float64
    )
    x1, x2, p1, p2 = _operands(inputs)
    torch.testing.assert_close(x1 * x2, targets.reshape(-1))
    assert bool((p1 < p2).all()) and bool((inputs[torch.arange(200), p2, 1] == 1).all())


def test_operand_r2_is_one_for_the_operand_a_cell_copies_and_small_for_the_other():
    from lstmlab.reproduce.plateau import operand_r2

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(500, generator=g), torch.rand(500, generator=g)
    states = torch.stack([2 * a - 1, -3 * b, torch.zeros(500)], dim=1)
    r2 = operand_r2(states, torch.stack([a, b, a * b], dim=1))
    assert r2[0, 0] == pytest.approx(1.0) and r2[1, 1] == pytest.approx(1.0)
    assert float(r2[0, 1]) < 0.05 and float(r2[1, 0]) < 0.05
    assert r2[2].tolist() == [0.0, 0.0, 0.0]  # a constant state holds nothing


def test_dense_curvature_is_the_matrix_of_the_products():
    from lstmlab.objective import FunctionObjective
    from lstmlab.reproduce.plateau import dense_curvature

    g = torch.Generator().manual_seed(1)
    Q = torch.randn(5, 5, generator=g, dtype=torch.float64)
    H = Q @ Q.T
    obj = FunctionObjective(lambda x: 0.5 * x @ H @ x, torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(dense_curvature(obj, "hessian"), H)


def test_plateau_picks_each_failing_run_and_the_first_solving_one_of_its_row(tmp_path):
    import json

    table = tmp_path / "runs" / "table"
    outcome = {"lbfgs-seed0": True, "lbfgs-seed1": False, "lbfgs-seed10": True,
               "lbfgs-seed2": False, "cg-seed0": True, "hf-seed3": False}  # fmt: skip
    for name, solved in outcome.items():
        (table / name).mkdir(parents=True)
        (table / name / "summary.json").write_text(json.dumps({"solved": solved}))
    (table / "cg-seed1").mkdir()  # unfinished: not read
    picked = [d.name for d in lyu2015.plateau_runs(tmp_path)]
    assert picked == ["hf-seed3", "lbfgs-seed0", "lbfgs-seed1", "lbfgs-seed2"]


def test_plateau_part_reads_a_finished_run_and_draws_its_figure(tmp_path, capsys):
    run = tmp_path / "runs" / "table" / "lbfgs-seed0"
    assert train_tiny(run, **{"stop.max_iterations": "2"}) == 0  # too short to solve
    args = ["reproduce", "lyu2015", "--only", "plateau", "--out", str(tmp_path)]
    assert main([*args, "--plateau-samples", "3", "--progress", "none"]) == 0
    report = (tmp_path / "results.md").read_text()
    assert "## What the failing runs are doing" in report
    row = next(ln for ln in report.splitlines() if ln.startswith("| lbfgs-seed0 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "no" and cells[8] != "–" and cells[10] != "–"  # spectra were computed
    assert (tmp_path / "figures" / "plateau_lbfgs-seed0.png").stat().st_size > 10_000
    assert "[plateau] 1/1: lbfgs-seed0" in capsys.readouterr().out


def test_plateau_gate_stats_agree_with_the_objectives_saturation():
    from lstmlab import SequenceModel
    from lstmlab.objective.blocks import gate_saturation
    from lstmlab.reproduce.plateau import SATURATION_EPS, _gate_stats

    torch.manual_seed(0)
    model = SequenceModel(input_size=2, hidden_size=4, output_size=1, variant="lstm97",
                          cells_per_block=2, dtype=torch.float64)  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20.0)  # some gates saturate
    x, lengths = torch.randn(7, 9, 2, dtype=torch.float64), torch.tensor([9, 3, 5, 9, 1, 2, 8])
    sat, means = _gate_stats(model, x, lengths)
    want = gate_saturation(model, x, lengths, SATURATION_EPS)
    assert {k: sat[f"L{k[0]}.{k[1]}"] for k in want} == {k: v.tolist() for k, v in want.items()}
    assert 0 < max(max(v) for v in sat.values())
    assert all(0 < m < 1 for v in means.values() for m in v)
