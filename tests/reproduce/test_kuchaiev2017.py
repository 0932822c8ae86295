"""``lstmlab reproduce kuchaiev2017``: the plan, a tiny end-to-end run through the CLI that
resumes, the report's time accounting and verdicts, and bad flags."""

from __future__ import annotations

import numpy as np
import pytest

from lstmlab.cli import main
from lstmlab.reproduce import kuchaiev2017 as k17


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(1)
    words = "the cat sat on a mat and dog ran far away .".split()
    lines = [" ".join(rng.choice(words, rng.integers(3, 9))) for _ in range(400)]
    path = tmp_path_factory.mktemp("k17") / "tiny.txt"
    path.write_text("\n".join(lines))
    return path


def test_dry_run_lists_the_five_models(tmp_path, capsys):
    assert main(["reproduce", "kuchaiev2017", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    for name in ("LSTM", "F-LSTM-r128", "F-LSTM-r64", "G-LSTM-2", "G-LSTM-4"):
        assert f"runs/lm/{name}:" in out
    assert (
        "--optimizer.name adam" in out
        and "--model.options.proj_size 256" in out
        and "--stop.max_iterations 300" in out
    )
    assert not (tmp_path / "o").exists()
    specs = k17.plan(k17.FULL)
    assert len({s.overrides["optimizer.batch_size"] for s in specs}) == 1  # same optimizer


@pytest.mark.slow
def test_quick_run_end_to_end_resumes(tmp_path, corpus, capsys):
    out = tmp_path / "o"
    cmd = ["reproduce", "kuchaiev2017", "--quick", "--text", str(corpus), "--steps", "4",
           "--out", str(out), "--progress", "none"]  # fmt: skip
    assert main(cmd) == 0
    report = (out / "results.md").read_text()
    for name in ("LSTM", "F-LSTM-r32", "G-LSTM-2", "G-LSTM-4"):
        assert f"| {name} |" in report
    assert (
        "Fewer parameters**: every F-LSTM and G-LSTM has fewer" in report and "reproduces" in report
    )
    assert (out / "figures" / "loss.png").stat().st_size > 5000
    log = out / "runs" / "lm" / "G-LSTM-4" / "metrics.jsonl"
    before = log.read_bytes()
    capsys.readouterr()
    assert main(cmd) == 0  # everything finished: kept, the report written again
    assert log.read_bytes() == before and (out / "results.md").read_text() == report


def test_training_time_leaves_evaluations_out():
    recs = [
        {"iteration": 0, "wall": 0.0, "test_loss": 1.0},
        {"iteration": 1, "wall": 1.0, "loss": 2.0},
        {"iteration": 2, "wall": 2.0, "loss": 2.0},
        {"iteration": 3, "wall": 13.0, "loss": 2.0, "test_loss": 1.0},  # 10 s evaluating
        {"iteration": 4, "wall": 14.0, "loss": 2.0},
    ]
    assert k17._step_time(recs) == 1.0
    assert [r["wall"] for r in k17.training_time(recs)] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_claims_verdicts():
    def row(name, params, step, ppl, wall):
        recs = [{"iteration": 1, "wall": wall, "test_perplexity": ppl}]
        return dict(name=name, lstm_params=params, step=step, perplexity=ppl, records=recs)

    rows = [row("LSTM", 100, 1.0, 100.0, 10.0), row("F", 50, 0.5, 105.0, 5.0),
            row("G", 60, 0.97, 130.0, 9.7)]  # fmt: skip
    text = k17.claims(rows)
    assert (
        "Fewer parameters**: every F-LSTM and G-LSTM has fewer LSTM-layer parameters than the LSTM — reproduces"
        in text
    )
    assert "1 of 2 structured models (F) — does not reproduce for all" in text  # G: 0.97 is noise
    assert "LSTM's 100.0): F — does not reproduce for all" in text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ranks", "0"], "each rank must be in 1..512"),
        (["--ranks", "1,2,3"], "one or two ranks"),
        (["--ranks", "a"], "--ranks must be integers"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--text", "/no/such/file.txt"], "--text: no such file"),
    ],
)
def test_bad_flags(flags, message, tmp_path, capsys):
    assert main(["reproduce", "kuchaiev2017", "--dry-run", "--out", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err


def test_ptb_dry_run_uses_the_ptb_word_task(tmp_path, capsys):
    ptb = tmp_path / "ptb"
    ptb.mkdir()
    for s in ("train", "valid", "test"):
        (ptb / f"ptb.{s}.txt").write_text(" a b c \n")
    args = ["reproduce", "kuchaiev2017", "--dry-run", "--ptb", str(ptb), "--ranks", "100"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert out.count("lstmlab train ptb_words") == 4 and f"'{ptb}'" in out
    assert "F-LSTM-r100:" in out and "F-LSTM-r64" not in out
