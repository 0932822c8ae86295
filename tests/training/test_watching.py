"""Watching a run (issue 22): the progress line's smoothed training loss and throughput,
intervals that take "off" and "epoch", patience in epochs, `train TASK --help` with that task's
defaults, the dry run naming the optimizer, no `run.lock` left behind, a notice for slow loads."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pytest

from lstmlab.cli import main
from lstmlab.training import run
from lstmlab.training.config import resolve
from lstmlab.training.metrics import read_metrics
from lstmlab.training.progress import StepMeter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_cli_tasks import RUN, ptb_words_dir, tiny_args  # noqa: E402


def text_argv(run_dir: Path, root: Path, *extra: str) -> list[str]:
    return ["train", "text", "--run-dir", str(run_dir), *RUN, *tiny_args("text", root), *extra]


def evaluated_at(run_dir: Path) -> list[int]:
    recs = read_metrics(run_dir / "metrics.jsonl")
    return [r["iteration"] for r in recs if "valid_bits_per_char" in r]


def test_step_meter_smooths_the_loss_and_measures_throughput():
    m = StepMeter(beta=0.9)
    assert m.loss is None and m.rate is None
    m.add(2.0, tokens=100, samples=4, seconds=0.5)
    assert m.loss == pytest.approx(2.0)  # bias-corrected: the first step is its own mean
    m.add(1.0, tokens=300, samples=4, seconds=1.5)
    assert m.loss == pytest.approx((0.9 * 0.1 * 2.0 + 0.1 * 1.0) / (1 - 0.81))
    m.add(float("nan"), tokens=0, samples=0, seconds=0.0)  # a rejected step moves nothing
    assert m.loss == pytest.approx((0.9 * 0.1 * 2.0 + 0.1 * 1.0) / (1 - 0.81))
    m.measure()
    assert m.rate == pytest.approx((200.0, 4.0))  # 400 tokens, 8 sequences in 2 s of steps
    m.add(1.0, tokens=50, samples=1, seconds=1.0)
    m.measure()
    assert m.rate == pytest.approx((50.0, 1.0))  # a new window


def test_the_progress_line_shows_the_training_loss_and_throughput(tmp_path, capsys):
    argv = text_argv(tmp_path / "r", tmp_path, "--eval_every", "2", "--stop.max_iterations", "4")
    argv[argv.index("none")] = "plain"
    assert main(argv) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("iter ")]
    assert lines[0].startswith("iter 0") and "train loss" not in lines[0]
    later = [ln for ln in lines if "train loss" in ln]
    assert later and all("tok/s" in ln and "seq/s" in ln for ln in later)
    # the metric says which iteration it was measured at
    assert any("bits_per_char" in ln and " @2" in ln for ln in later)
    # the loss shown is the bias-corrected moving average of the steps' minibatch losses
    losses = [r["loss"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if "loss" in r]
    for line in later:
        k = int(line.split()[1])
        ema = 0.0
        for f in losses[:k]:
            ema = 0.9 * ema + 0.1 * f
        shown = float(line.split("train loss ")[1].split()[0])
        assert shown == pytest.approx(ema / (1 - 0.9**k), rel=1e-3)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--eval_every", "off"], [0, 6]),  # the initial and the final network only
        (["--eval_every", "epoch", "--optimizer.batch_size", "100"], "epochs"),
        (["--eval_every", "4", "--eval_seconds", "off"], [0, 4, 6]),
    ],
    ids=["off", "epoch", "seconds-off"],
)
def test_interval_words(tmp_path, flags, expected):
    argv = text_argv(tmp_path / "r", tmp_path, "--stop.max_iterations", "6", *flags)
    argv += ["--checkpoint_every", "off", "--checkpoint_seconds", "off"]
    assert main(argv) == 0
    cfg = run.load_config(tmp_path / "r")
    assert cfg.checkpoint_seconds is None and cfg.checkpoint_every == "off"
    if expected == "epochs":
        built = run.build_noticed(cfg)
        per_epoch = math.ceil(len(built.train_data) / cfg.optimizer.batch_size)
        assert per_epoch < 6
        expected = sorted({*range(0, 7, per_epoch), 6})
    assert evaluated_at(tmp_path / "r") == expected


@pytest.mark.parametrize("bad", ["never", "0", "true"])
def test_interval_words_are_checked(tmp_path, capsys, bad):
    assert main(text_argv(tmp_path / "r", tmp_path, "--eval_every", bad)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "eval_every" in err
    assert "'off'" in err or ">= 1" in err


def test_patience_counts_epochs_on_real_data_tasks(tmp_path):
    """The text preset evaluates once per epoch, so `--stop.patience 1` is one epoch without
    improvement: a learning rate that only makes things worse stops after the first epoch."""
    argv = text_argv(tmp_path / "r", tmp_path, "--stop.max_iterations", "100")
    assert main([*argv, "--stop.patience", "1", "--optimizer.lr", "30"]) == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["stop_reason"] == "patience" and s["epochs"] == 1 and s["best_iteration"] == 0
    cfg = run.load_config(tmp_path / "r")
    per_epoch = math.ceil(len(run.build_noticed(cfg).train_data) / cfg.optimizer.batch_size)
    assert s["iterations"] == per_epoch > 1
    assert resolve([], {"task.name": "music"}).stop.patience == 20


@pytest.mark.parametrize(
    "task, shown",
    [
        ("ptb", ['"adam"', '"float32"', '"vanilla"', "[default: 200]", '"epoch"']),
        ("multiplication", ['"lbfgs"', '"float64"', '"lstm97"', "[default: 2]"]),
        ("music", ['"adam"', "[default: 100]", "[default: 20]"]),
    ],
)
def test_train_task_help_shows_that_tasks_defaults(task, shown, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", task, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps help text
    assert f"defaults shown are task {task}'s" in text
    for s in shown:
        assert s in text, s


def test_train_help_with_another_optimizer_shows_its_preset(capsys):
    with pytest.raises(SystemExit):
        main(["train", "ptb", "--optimizer.name", "bgd", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "optimizer's (bgd)" in text and "[default: 3500]" in text


def test_dry_run_names_clipped_adam(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = text_argv(tmp_path / "r", tmp_path, "--optimizer.options.clip_norm", "5", "--dry-run")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "# Adam: lr 0.001, gradient norm clipped to 5" in out and "SGD" not in out


def test_no_lock_file_is_left_behind(tmp_path):
    assert main(text_argv(tmp_path / "r", tmp_path)) == 0
    assert not (tmp_path / "r" / "run.lock").exists()
    assert (
        main(["resume", str(tmp_path / "r"), "--progress", "none", "--stop.max_iterations", "3"])
        == 0
    )
    assert not (tmp_path / "r" / "run.lock").exists()


def test_a_slow_load_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run, "SLOW_BUILD_SECONDS", 0.0)
    d = ptb_words_dir(tmp_path)
    argv = ["train", "ptb_words", "--run-dir", str(tmp_path / "r"), *RUN]
    argv += ["--task.options.path", str(d), "--task.options.chunk", "10"]
    argv += ["--task.options.streams", "4", "--optimizer.batch_size", "4"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"loading task 'ptb_words' from {d}" in err and "loaded in" in err


def test_a_quick_load_is_silent():
    stream = io.StringIO()
    cfg = resolve([], {"task.name": "adding", "task.options.T": "20"})
    run.build_noticed(cfg, stream=stream, after=60.0)
    assert stream.getvalue() == ""


def test_a_slow_generated_task_does_not_claim_a_corpus():
    stream = io.StringIO()
    cfg = resolve([], {"task.name": "adding", "task.options.T": "20"})
    run.build_noticed(cfg, stream=stream, after=0.0)
    text = stream.getvalue()
    assert "loading task 'adding' (its sequences are generated)" in text and "corpus" not in text


def test_the_generated_tasks_are_the_long_time_lag_ones():
    """``run.generated`` names exactly the tasks that ``make_longlag`` builds."""
    from functools import partial

    from lstmlab.tasks import _REGISTRY
    from lstmlab.tasks.longlag import make_longlag

    def builds(fn) -> bool:
        return (fn.func if isinstance(fn, partial) else fn) is make_longlag

    longlag = {n for n, (fn, _, _) in _REGISTRY.items() if builds(fn)}
    assert longlag == {n for n in _REGISTRY if run.generated(n)}
    assert not run.generated("no_such_task")
