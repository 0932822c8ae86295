"""`lstmlab reproduce krause2015`: sizes, the plan, bad corpora, a tiny resumable run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lstmlab.cli import main
from lstmlab.reproduce import krause2015 as k


def corpus(root: Path, n_lines: int = 900) -> Path:
    """~36 K characters of varied text (enough for --quick's 28 K + 2 K + 2 K)."""
    words = ["now", "is", "the", "winter", "of", "our", "discontent", "made", "glorious", "sun"]
    lines = [
        " ".join(words[(i * j + j) % 10] for j in range(1, 7)) + f" {i}." for i in range(n_lines)
    ]
    path = root / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("model", list(k.MODELS))
def test_sizes_are_solved_from_seed_001s_parameter_counts(model):
    variant, target = k.MODELS[model]
    h = k.hidden_for(variant, target, vocab=50)  # PTB's character vocabulary
    n = k.count_parameters(variant, h, 50)
    assert abs(n - target) / target < 0.01
    for other in (h - 1, h + 1):  # the closest count
        assert abs(k.count_parameters(variant, other, 50) - target) >= abs(n - target)


def test_the_plan_has_seed_001s_batches_and_scales_them_together():
    configs = k.plan(k.PAPER, {"chunk": 200}, vocab=50)
    assert set(configs) == {f"{m}-{o}" for m in k.MODELS for o in k.OPTIMIZERS}
    got = {
        o: (
            configs[f"lstm-{o}"].optimizer.batch_size,
            configs[f"lstm-{o}"].optimizer.options.get("curvature_batch"),
        )
        for o in k.OPTIMIZERS
    }
    assert got == {
        "sgd-clip": (32, None),
        "bgd": (3500, None),
        "shf": (320, 32),
        "bhf": (14000, 3500),
    }
    assert (
        configs["mlstm-shf"].model.variant == "mLSTM"
        and configs["lstm-shf"].model.variant == "vanilla"
    )
    lm = configs["lstm-shf"].optimizer.options["lm"]
    assert (lm["decrease"], lm["increase"]) == (0.99, 1.01)  # the presets fill in the rest
    half = k.Setting(scale=0.5, chunk=100)  # chunks of 100: twice as many, half the data
    assert half.batch("bhf") == (14000, 3500) and half.batch("sgd-clip") == (32, None)
    assert half.chars() == [1_400_000, 100_000, 100_000]


def test_seed_001s_runs_keep_one_hot_inputs(tmp_path):
    """The text preset reads characters through an embedding (issue 22); seed 001's runs keep
    the one-hot inputs their parameter counts assume, and a run directory written before the
    option was named is still the same setting."""
    import dataclasses

    options = k.corpus_options(str(corpus(tmp_path)), None, k.QUICK)
    task = k.load_corpus(options, "--text")
    assert task.embedding is None and task.train.one_hot == task.input_size
    cfg = k.plan(k.QUICK, options, vocab=task.input_size)["lstm-bgd"]
    assert cfg.task.options["embedding"] is False
    older = dataclasses.replace(
        cfg,
        task=dataclasses.replace(
            cfg.task, options={x: v for x, v in cfg.task.options.items() if x != "embedding"}
        ),
    )
    assert k._identity(older) == k._identity(cfg)


def test_dry_run_lists_the_runs_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", "krause2015", "--text", str(corpus(tmp_path)), "--quick"]
    assert main([*argv, "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "SMOKE RUN" in text and text.count("parameters") == 8 and "B_c" in text
    assert not out.exists()


def _one_line_exit_2(argv, capsys, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("case", ["missing", "empty", "latin1", "short", "chunk"])
def test_a_bad_corpus_is_one_line_exit_2_and_nothing_is_written(case, tmp_path, capsys):
    f = tmp_path / "c.txt"
    extra = ["--quick"]
    if case == "empty":
        f.write_text("")
    elif case == "latin1":
        f.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 5000)
    elif case == "short":  # shorter than the characters asked for
        f.write_text("abc def\n" * 100)
    elif case == "chunk":  # a training text shorter than one chunk
        f.write_text("abcdefgh\n" * 4000)
        extra = ["--scale", "0.00001", "--chunk", "200"]
    out = tmp_path / "out"
    argv = ["reproduce", "krause2015", "--text", str(f), "--out", str(out), *extra]
    _one_line_exit_2(argv, capsys, "--text")
    assert not out.exists()


def test_a_ptb_directory_missing_a_split_is_refused(tmp_path, capsys):
    d = tmp_path / "ptb"
    d.mkdir()
    for s in ("train", "valid"):
        (d / f"ptb.char.{s}.txt").write_text("a _ b\n" * 100)
    out = tmp_path / "out"
    argv = ["reproduce", "krause2015", "--ptb", str(d), "--out", str(out), "--quick"]
    _one_line_exit_2(argv, capsys, "ptb.char.test.txt")
    _one_line_exit_2([*argv[:3], str(tmp_path / "nope"), *argv[4:]], capsys, "--ptb")
    assert not out.exists()


@pytest.mark.slow  # ~15 s alone, a minute on a loaded machine
def test_a_tiny_reproduction_runs_keeps_and_resumes(tmp_path, capsys):
    text, out = corpus(tmp_path), tmp_path / "out"
    argv = ["reproduce", "krause2015", "--text", str(text), "--out", str(out), "--quick"]
    argv += ["--progress", "none", "--run", "lstm-sgd-clip", "--run", "mlstm-bhf"]
    assert main([*argv, "--max-seconds", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "SMOKE RUN" in printed
    results = (out / "results.md").read_text()
    assert "SMOKE RUN" in results and "| LSTM (" in results and "| mLSTM (" in results
    assert (out / "fig1.png").stat().st_size > 20_000
    assert not list(out.glob("*.tmp*"))
    first = json.loads((out / "runs" / "lstm-sgd-clip" / "summary.json").read_text())
    # run again, same budget: finished runs are kept as they are
    argv = argv[:-2]  # from here on the LSTM's SGD run only
    mtime = (out / "runs" / "lstm-sgd-clip" / "summary.json").stat().st_mtime_ns
    assert main([*argv, "--max-seconds", "0.5"]) == 0
    assert (out / "runs" / "lstm-sgd-clip" / "summary.json").stat().st_mtime_ns == mtime
    # a larger budget continues them from their checkpoints
    assert main([*argv, "--max-seconds", "1.5"]) == 0
    again = json.loads((out / "runs" / "lstm-sgd-clip" / "summary.json").read_text())
    assert again["iterations"] > first["iterations"] and again["wall_time"] > 1.0
    # another setting in the same folder is refused, not mixed in
    capsys.readouterr()
    assert main([*argv, "--max-seconds", "0.5", "--chunk", "40"]) == 1
    assert "another setting" in capsys.readouterr().err


def test_a_p_i_budget_stops_every_run_at_the_same_parallel_cost(tmp_path, capsys):
    text, out = corpus(tmp_path), tmp_path / "out"
    argv = ["reproduce", "krause2015", "--text", str(text), "--out", str(out), "--quick"]
    argv += ["--progress", "none", "--run", "lstm-sgd-clip", "--max-seconds", "60"]
    assert main([*argv, "--max-pi", "3", "--dry-run"]) == 0
    assert "budget 60 s or P_I 3 " in capsys.readouterr().out
    assert main([*argv, "--max-pi", "3"]) == 0
    first = json.loads((out / "runs" / "lstm-sgd-clip" / "summary.json").read_text())
    assert first["stop_reason"] == "max_pi" and 3 <= first["P_I"] < 4
    assert "or P_I 3, whichever comes first" in (out / "results.md").read_text()
    # a larger P_I budget continues the run from where it stopped
    assert main([*argv, "--max-pi", "6"]) == 0
    again = json.loads((out / "runs" / "lstm-sgd-clip" / "summary.json").read_text())
    assert again["stop_reason"] == "max_pi" and 6 <= again["P_I"] < 7
    assert again["iterations"] > first["iterations"]
    capsys.readouterr()
    assert main([*argv, "--max-pi", "0"]) == 2
    assert "--max-pi must be > 0" in capsys.readouterr().err


def test_training_curve_is_bits_per_char_smoothed():
    import math

    records = [{"P_I": 0.0}]  # the untrained network, then 200 steps of one unit each
    records += [
        {"P_I": float(i), "loss": math.log(2) * (2.0 if i % 2 else 4.0)} for i in range(1, 201)
    ]
    xs, ys = k.training_curve(records, "P_I")
    # step i's loss was measured before it, after i - 1 units; the one at cost 0 is left out
    assert xs[:2] == [1.0, 2.0] and ys[0] == 4.0 and len(xs) == 199
    assert ys[-1] == pytest.approx(10 / 3)  # mean over the last 199 // 50 = 3 steps: 4, 2, 4


def _curve(levels: list[float], unit: float) -> list[dict]:
    """Records whose unsmoothed training curve has ``levels[i]`` bits at P_I = unit × i (and
    P_D ten times that); ``levels[0]``, at cost 0, is left out of the log-axis curve."""
    import math

    records = [{"P_I": 0.0, "P_D": 0.0}]
    for i, y in enumerate(levels):
        records.append({"P_I": unit * (i + 1), "P_D": 10 * unit * (i + 1), "loss": math.log(2) * y})
    return records


def test_efficiency_is_sgds_cost_to_the_optimizers_best_level_over_its_own():
    sgd = _curve([6 - 0.1 * i for i in range(40)], 1.0)  # 6.0 … 2.1, one unit a step
    curves = {"lstm-sgd-clip": sgd, "lstm-bhf": _curve([6, 5, 3, 9], 2.0)}  # blows up last
    # BHF's best (3 bits at cost 4), not its last; SGD first gets to 3.0 at cost 30
    level, cost, sgd_cost, reached = k.efficiency(curves, "lstm", "bhf", "P_I")
    assert (level, cost, reached) == (3.0, 4.0, True) and sgd_cost == pytest.approx(30.0)
    level, cost, sgd_cost, reached = k.efficiency(curves, "lstm", "bhf", "P_D")
    assert (cost, reached) == (40.0, True) and sgd_cost == pytest.approx(300.0)
    assert "| LSTM | BHF | 3.000 | 4 | 30 | 7.5× | 40 | 300 | 7.5× |" in k.efficiency_table(curves)
    # SGD never reaching the level: its whole run, and the ratio a lower bound
    curves["lstm-bhf"] = _curve([6, 2.0], 2.0)
    assert k.efficiency(curves, "lstm", "bhf", "P_I") == (2.0, 2.0, 39.0, False)
    assert "| 2 | 39 | > 19.5× |" in k.efficiency_table(curves)
    assert k.efficiency({}, "lstm", "bhf", "P_I") is None and k.efficiency_table({}) == ""


def test_ctrl_c_stops_the_set_at_the_run_in_progress(tmp_path, monkeypatch, capsys):
    import os
    import signal

    from lstmlab.training import run as runs

    real = runs.start

    def start(*a, **k):  # Ctrl-C at the run's first checkpoint
        sent = []

        def writer(fh, data):
            fh.write(data)
            if not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)

        return real(*a, checkpoint_writer=writer, **k)

    monkeypatch.setattr(runs, "start", start)
    text, out = corpus(tmp_path), tmp_path / "out"
    argv = ["reproduce", "krause2015", "--text", str(text), "--out", str(out), "--quick"]
    argv += ["--progress", "none", "--run", "lstm-sgd-clip", "--run", "lstm-bgd"]
    assert main([*argv, "--max-seconds", "0.5"]) == 130
    err = capsys.readouterr().err.strip()
    assert "SIGINT during" in err and "lstm-sgd-clip" in err and len(err.splitlines()) == 1
    assert not (out / "runs" / "lstm-bgd").exists() and not (out / "results.md").exists()
