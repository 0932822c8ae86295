"""``lstmlab reproduce ms2011``: the plan, a tiny real run set that resumes, the report, bad flags."""

from __future__ import annotations

import json

import pytest

from lstmlab.cli import main
from lstmlab.reproduce import ms2011
from lstmlab.training.config import resolve


def test_plan_covers_every_problem_T_cell_and_seed_with_one_hf_setting():
    specs = ms2011.plan(ms2011.FULL, list(ms2011.PROBLEMS), list(ms2011.CELLS))
    assert len(specs) == len(ms2011.PROBLEMS) * 3 * 2 * ms2011.FULL.seeds

    def hf(spec):  # λ₀ of the RNN follows the released code's output count, not a tuning
        return {
            k: v
            for k, v in spec.overrides.items()
            if k.startswith("optimizer.options")
            and k not in ("optimizer.options.max_cg", "optimizer.options.damping")
        }

    first = {c: hf(next(s for s in specs if s.overrides["model.cell"] == c)) for c in ms2011.CELLS}
    for s in specs[::7]:  # never tuned per problem or seed (a sample: resolve takes time)
        cell = s.overrides["model.cell"]
        assert hf(s) == first[cell]
        want = ms2011.RNN_LAMBDA0.get(s.part, 1.0) if cell == "rnn" else 1.0
        assert float(s.overrides["optimizer.options.damping"]) == want
        cfg = resolve(overrides=dict(s.overrides))  # every planned config is valid
        assert cfg.optimizer.name == "hf" and cfg.task.options["T"] in (50, 100, 200)
    assert {s.overrides["task.name"] for s in specs} == {t for t, _ in ms2011.PROBLEMS.values()}
    mem = [s for s in specs if s.part == "memorization5"]
    assert all(s.overrides["optimizer.batch_size"] == "32" for s in mem)


def test_tiny_run_set_writes_table_and_figure_and_resumes(tmp_path):
    kw = dict(
        quick=True,
        problems=["adding", "temporal2"],
        cells=["rnn"],
        Ts=[20],
        seeds=1,
        max_pd=3e3,
        progress="none",
        log=lambda line: None,
    )
    report = ms2011.reproduce(tmp_path, **kw)
    text = report.read_text()
    assert "| adding | 20 | rnn | 0/1 |" in text and "| temporal2 | 20 | rnn |" in text
    assert (tmp_path / "figures" / "error_vs_pd.png").stat().st_size > 5000
    summary = tmp_path / "runs" / "adding" / "rnn20-T20-seed0" / "summary.json"
    first = json.loads(summary.read_text())
    assert first["P_D"] >= 1e3 and first["stop_reason"] == "max_pd"
    mtime = summary.stat().st_mtime_ns
    ms2011.reproduce(tmp_path, **kw)  # finished runs are kept, not redone
    assert summary.stat().st_mtime_ns == mtime


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["reproduce", "ms2011", "--problem", "xor", "--cell", "lstm", "--T", "50", "--T", "100"]
    assert main([*args, "--seeds", "2", "--max-pd", "1e6", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "# dry run: 4 runs" in text and "--stop.max_pd 1e+06" in text
    assert "runs/xor/lstm-T100-seed1" in text and not out.exists()


def test_small_mode_keeps_the_suite_and_shrinks_the_networks(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["reproduce", "ms2011", "--small", "--problem", "xor", "--cell", "lstm"]
    assert main([*args, "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "# dry run: 9 runs" in text and "--stop.max_pd 3e+06" in text  # T 50/100/200 x 3
    assert "runs/xor/lstm-T200-seed2" in text and "--model.blocks 8" in text
    assert "--optimizer.batch_size 250" in text and "max_seconds" not in text
    assert not out.exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--quick", "--small"], "--quick or --small, not both"),
        (["--problem", "parity"], "--problem: unknown 'parity'; valid: adding"),
        (["--cell", "gru"], "--cell: unknown 'gru'; valid: lstm, rnn"),
        (["--T", "10"], "--T must be >= 20"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--max-pd", "0"], "--max-pd must be > 0"),
    ],
    ids=["modes", "problem", "cell", "T", "seeds", "budget"],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, args, words):
    assert main(["reproduce", "ms2011", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_no_preset_of_train_leaks_into_a_run():
    # `train multiplication` means seed 000's 1997 task with an LSTM gate bias; M&S's
    # multiplication on a tanh RNN must get none of it
    [spec] = ms2011.plan(ms2011.QUICK, ["multiplication"], ["rnn"])
    cfg = resolve(overrides=dict(spec.overrides), presets=spec.presets)
    assert cfg.task.options["convention"] == "ms2011" and "output" not in cfg.task.options
    assert "rule" not in cfg.task.options and "gate_bias" not in cfg.model.options
    assert cfg.model.options == {  # only the released code's set-up of the RNN
        "init": "sparse",
        "init_scale": ms2011.RNN_INIT_SCALE,
        "input_scale": 0.25,
        "bias": False,
        "learn_h0": True,
        "head_init": "sparse",
        "head_scale": ms2011.RNN_INIT_SCALE,
    }
    from lstmlab.training.build import build_all

    built = build_all(cfg)
    assert built.model.output == "linear" and built.task.scorer.rule == "ms2011"


def test_report_only_tables_the_finished_runs_and_starts_nothing(tmp_path, capsys):
    args = ["reproduce", "ms2011", "--quick", "--problem", "adding", "--cell", "rnn"]
    args += ["--T", "20", "--max-pd", "3e3", "--progress", "none", "--out", str(tmp_path)]
    assert main([*args, "--report-only"]) == 2  # nothing finished yet: a one-line error
    err = capsys.readouterr().err.strip()
    assert "--report-only: no finished run" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results.md").exists()
    assert main(args) == 0  # seed 0 only
    report = tmp_path / "results.md"
    report.unlink()
    assert main([*args, "--seeds", "2", "--report-only"]) == 0
    assert "# report only: 1 finished runs, 1 left out" in capsys.readouterr().out
    text = report.read_text()
    assert "| adding | 20 | rnn | 0/1 |" in text and "Left out" in text and "1 of 2" in text
    assert not (tmp_path / "runs" / "adding" / "rnn20-T20-seed1").exists()


def test_the_rnn_starts_as_the_released_code_starts_it():
    """Sparse, 15 incoming weights ~ N(0, 1/15) per unit (spectral radius near 1), input weights
    × 0.25, no biases; the uniform start it had (radius ≈ 0.3 at 20 units) lost the operands."""
    import torch

    from lstmlab.training.build import build_model, build_task

    spec = next(
        s for s in ms2011.plan(ms2011.SMALL, ["adding"], ["rnn"]) if s.name.endswith("seed0")
    )
    cfg = resolve(overrides={**spec.overrides, "model.blocks": "100"}, presets=False)
    model = build_model(cfg, build_task(cfg), torch.device("cpu"), torch.float64)
    rnn = model.rnn
    assert not rnn.bias and not [n for n, _ in rnn.named_parameters() if n.startswith("bias")]
    W = rnn.weight_hh_l0.detach()
    assert ((W != 0).sum(1) == 15).all()
    radius = float(torch.linalg.eigvals(W).abs().max())
    assert 0.8 < radius < 1.4
    nonzero = rnn.weight_ih_l0.detach()
    assert abs(float(nonzero[nonzero != 0].std()) - 0.25 / 15**0.5) < 0.03


def test_the_rnn_is_set_up_as_the_released_code_unless_asked_for_the_init_only(tmp_path, capsys):
    """Learned h₀, sparse readout, structural damping on the pre-activations summed over time
    with μ = 0.03, λ₀ = 0.01, any-decrease line search; ``--rnn-setup init`` keeps the first
    issue-24 set-up under its own run names; ``--rnn-units`` sets the width."""
    import torch

    from lstmlab.training.build import build_all

    [spec] = ms2011.plan(ms2011.QUICK, ["adding"], ["rnn"])
    for key, value in ms2011.RELEASED_RNN.items():
        assert spec.overrides[key] == value
    assert spec.overrides["optimizer.options.damping"] == "0.01"
    built = build_all(resolve(overrides=dict(spec.overrides), presets=False))
    opt, model = built.optimizer, built.model
    assert opt.structural_form == "released" and opt.lam == 0.01
    assert opt.value("structural_weight") == 0.03
    assert model.rnn.learn_h0 and model.rnn.h0_l0.shape == (20,)
    assert ((model.head.weight.detach() != 0).sum(1) == 15).all()
    [old] = ms2011.plan(ms2011.QUICK, ["adding"], ["rnn"], rnn_setup="init")
    assert old.name == "rnn20-T30-seed0-init" and spec.name == "rnn20-T30-seed0"
    assert set(ms2011.RELEASED_RNN) & set(old.overrides) == {"optimizer.options.structural_weight"}
    assert old.overrides["optimizer.options.structural_weight"] == str(1 / 30)
    assert old.overrides["optimizer.options.damping"] == "1.0"
    [lstm] = ms2011.plan(ms2011.QUICK, ["adding"], ["lstm"])  # the LSTM keeps its settings
    assert "optimizer.options.structural_form" not in lstm.overrides
    assert lstm.overrides["optimizer.options.damping"] == "1.0" and lstm.name == "lstm-T30-seed0"
    with pytest.raises(ValueError, match="rnn_setup"):
        ms2011.plan(ms2011.QUICK, ["adding"], ["rnn"], rnn_setup="paper")

    out = tmp_path / "o"
    args = ["reproduce", "ms2011", "--small", "--problem", "adding", "--cell", "rnn", "--T", "50"]
    assert main([*args, "--rnn-units", "100", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "--model.blocks 100" in text and "--optimizer.options.structural_form released" in text
    assert "rnn100-T50-seed0" in text  # the width is in the run's name: no other width's run kept
    assert main([*args, "--rnn-setup", "init", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "-T50-seed0-init" in text and "structural_form" not in text
    assert main([*args, "--rnn-units", "0", "--out", str(out)]) == 2
    assert "--rnn-units must be >= 1" in capsys.readouterr().err
    del torch


def test_released_data_adds_the_released_data_regime_to_the_rnn(tmp_path, capsys):
    """``--rnn-setup released-data``: the released set-up, fresh sequences every step, B_c and
    the two search batches a tenth of B_g each, weight decay 2e-5; its own run names."""
    from lstmlab.training.build import build_all

    [spec] = ms2011.plan(ms2011.QUICK, ["adding"], ["rnn"], rnn_setup="released-data")
    assert spec.name == "rnn20-T30-seed0-data"
    for key, value in {**ms2011.RELEASED_RNN, **ms2011.RELEASED_DATA}.items():
        assert spec.overrides[key] == value
    built = build_all(resolve(overrides=dict(spec.overrides), presets=False))
    opt = built.optimizer
    assert built.train_data.fresh and opt.structural_form == "released"
    assert opt.curvature_batch == 0.1 and opt.search_batch == 0.1
    assert opt.value("weight_decay") == 2e-5 and opt.rho_batch == "curvature"
    assert opt.backtrack_rule == "best" and opt.value("backtrack_every") == 10
    assert spec.overrides["optimizer.batch_size"] == spec.overrides["task.options.n_train"]
    [lstm] = ms2011.plan(ms2011.QUICK, ["adding"], ["lstm"], rnn_setup="released-data")
    for key in (
        "task.options.fresh",
        "optimizer.options.search_batch",
        "optimizer.options.weight_decay",
        "optimizer.options.backtrack_rule",
    ):
        assert key not in lstm.overrides  # the LSTM keeps its settings
    out = tmp_path / "o"
    args = ["reproduce", "ms2011", "--quick", "--problem", "adding", "--cell", "rnn"]
    assert main([*args, "--rnn-setup", "released-data", "--max-pd", "3e4", "--out", str(out)]) == 0
    summary = json.loads(
        (out / "runs" / "adding" / "rnn20-T30-seed0-data" / "summary.json").read_text()
    )
    assert summary["P_D"] >= 3e4
    assert "data regime" in (out / "results.md").read_text()


def test_released_data_keeps_memorization_5_of_2_on_its_32_patterns():
    """Every batch of the released code's 5-of-2 memorization is all 32 patterns: no fresh
    draws, no tenths; only the weight decay and the backtracking rule join."""
    from lstmlab.training.build import build_all

    [spec] = ms2011.plan(ms2011.QUICK, ["memorization5"], ["rnn"], rnn_setup="released-data")
    assert spec.overrides["optimizer.batch_size"] == "32"
    assert "task.options.fresh" not in spec.overrides
    assert "optimizer.options.search_batch" not in spec.overrides
    built = build_all(resolve(overrides=dict(spec.overrides), presets=False))
    assert built.optimizer._curvature_rows(32) is None  # B_c = all 32
    assert built.optimizer.value("weight_decay") == 2e-5
    assert built.optimizer.backtrack_rule == "best"


def test_released_net_is_the_released_start_with_this_projects_hf(tmp_path, capsys):
    [spec] = ms2011.plan(ms2011.QUICK, ["adding"], ["rnn"], rnn_setup="released-net")
    [init] = ms2011.plan(ms2011.QUICK, ["adding"], ["rnn"], rnn_setup="init")
    assert spec.name == "rnn20-T30-seed0-net"
    assert {k: v for k, v in spec.overrides.items() if init.overrides.get(k) != v} == (
        ms2011.RELEASED_NET
    )
    out = tmp_path / "o"
    args = ["reproduce", "ms2011", "--quick", "--problem", "adding", "--cell", "rnn"]
    assert main([*args, "--rnn-setup", "released-net", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "--model.options.learn_h0 true" in text and "structural_form" not in text
