"""TensorBoard scalars of a run, read back with TensorBoard's own reader: every logged field,
HF's damping and CG iterations, the option's defaults per preset, resume without duplicate
steps, and the one-line answers when the tensorboard package is missing."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from runkit import train_tiny
from test_cli_tasks import tiny_args

import lstmlab.training.tensorboard as tb
from lstmlab.cli import main
from lstmlab.training.config import resolve
from lstmlab.training.metrics import read_metrics
from lstmlab.training.presets import TASK_PRESETS

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402

REAL_DATA = ("text", "ptb", "music", "japanese_vowels", "words", "ptb_words")
TEXT_RUN = ["--progress", "none", "--stop.max_iterations", "2", "--model.blocks", "2"]


def events(run: Path) -> list[Path]:
    return sorted(run.glob("events.out.tfevents.*"))


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a run directory as TensorBoard shows it: tag → [(step, value)]."""
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected(records: list[dict]) -> dict[str, dict[int, float]]:
    """What the scalars must hold: each record's numbers under their tags, at its iteration."""
    out: dict[str, dict[int, float]] = {}
    for rec in records:
        for tag, value in tb.scalars(rec):
            out.setdefault(tag, {}).setdefault(rec["iteration"], value)  # the first of a step
    return out


def assert_mirrors(run: Path) -> dict[str, list[tuple[int, float]]]:
    got = read_scalars(run)
    want = expected(read_metrics(run / "metrics.jsonl"))
    assert set(got) == set(want)
    for tag, series in got.items():
        steps = [s for s, _ in series]
        assert len(steps) == len(set(steps)), f"{tag}: a step written twice: {steps}"
        assert dict(series).keys() == want[tag].keys(), tag
        for step, value in series:  # TensorBoard keeps float32
            assert math.isclose(value, want[tag][step], rel_tol=1e-6, abs_tol=1e-30), (tag, step)
    return got


def test_tiny_cli_run_writes_every_logged_number_as_a_scalar(tmp_path):
    run = tmp_path / "run"
    assert train_tiny(run, "--log.tensorboard", "true") == 0
    assert events(run), "no event file in the run directory"
    got = assert_mirrors(run)
    for tag in ("train/loss", "test/mae", "test/loss", "cost/P_D", "cost/P_I", "cost/wall_seconds"):
        assert tag in got, tag
    assert "optimizer/step_size" in got  # L-BFGS's line search step
    assert [s for s, _ in got["test/mae"]] == list(range(9))  # the initial network and 8 steps
    assert [s for s, _ in got["train/loss"]] == list(range(1, 9))


def test_hf_run_shows_damping_and_cg_iterations(tmp_path):
    run = tmp_path / "run"
    flags = ["--log.tensorboard", "true", "--optimizer.options.max_cg", "3"]
    assert train_tiny(run, *flags, **{"optimizer.name": "hf", "stop.max_iterations": "2"}) == 0
    got = assert_mirrors(run)
    assert [s for s, _ in got["optimizer/damping"]] == [1, 2]
    assert [v for _, v in got["optimizer/cg_iterations"]] == [3.0, 3.0]


@pytest.mark.parametrize("name", sorted(TASK_PRESETS))
def test_presets_turn_tensorboard_on_for_real_data_only(name):
    cfg = resolve([], {"task.name": name})
    assert cfg.log.tensorboard == ("auto" if name in REAL_DATA else False)


def test_real_data_preset_writes_scalars_and_false_turns_them_off(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "text", "--run-dir", str(run), *TEXT_RUN, *tiny_args("text", tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "valid/bits_per_char" in assert_mirrors(run)
    off = tmp_path / "off"
    argv[argv.index(str(run))] = str(off)
    assert main([*argv, "--log.tensorboard", "false"]) == 0
    assert (off / "metrics.jsonl").exists() and not events(off)


@pytest.mark.parametrize("flag", [[], ["--log.tensorboard", "false"]])
def test_off_by_default_for_long_time_lag_tasks_and_when_false(tmp_path, flag):
    run = tmp_path / "run"
    assert train_tiny(run, *flag) == 0
    assert (run / "metrics.jsonl").exists() and not events(run)


def test_auto_on_a_long_time_lag_task_writes_scalars(tmp_path):
    run = tmp_path / "run"
    assert train_tiny(run, "--log.tensorboard", "auto", **{"stop.max_iterations": "2"}) == 0
    assert "test/mae" in assert_mirrors(run)


def test_resume_writes_no_step_twice(tmp_path, capsys):
    """A run resumed from an older checkpoint (as after a crash: its scalars went past the
    checkpoint) shows each step once, with the values its metrics log holds."""
    run = tmp_path / "run"
    flags = ["--log.tensorboard", "true", "--checkpoint_every", "4"]
    assert train_tiny(run, *flags, **{"stop.max_iterations": "6"}) == 0  # checkpoints 0, 4, 6
    assert [s for s, _ in read_scalars(run)["test/mae"]] == list(range(7))
    (run / "checkpoint.safetensors").unlink()  # back to the .prev checkpoint: iteration 4
    assert main(["resume", str(run), "--progress", "none"]) == 0
    assert "resuming from the previous checkpoint" in capsys.readouterr().err
    first, second = events(run)
    rewritten = [e.step for e in EventFileLoader(str(second)).Load() if _has(e, "test/mae")]
    assert rewritten == [5, 6]  # the resumed process wrote steps 5 and 6 again
    after = assert_mirrors(run)
    assert [s for s, _ in after["test/mae"]] == list(range(7))
    assert [s for s, _ in after["train/loss"]] == list(range(1, 7))


def _has(event, tag: str) -> bool:
    return any(v.tag == tag for v in event.summary.value)


@pytest.fixture
def no_tensorboard(monkeypatch):
    """A Python where ``import tensorboard`` fails, as on a machine without the package."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setattr(tb, "_noted", False)


def test_true_without_tensorboard_says_how_to_install_and_writes_nothing(
    tmp_path, capsys, no_tensorboard
):
    run = tmp_path / "run"
    assert train_tiny(run, "--log.tensorboard", "true") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("lstmlab: config error: log.tensorboard:")
    assert 'pip install "lstmlab[tensorboard]"' in err[0]
    assert not run.exists()


def test_auto_without_tensorboard_trains_with_one_note(tmp_path, capsys, no_tensorboard):
    argv = ["train", "text", *TEXT_RUN, *tiny_args("text", tmp_path)]
    for name in ("a", "b"):
        assert main([*argv, "--run-dir", str(tmp_path / name)]) == 0
        assert (tmp_path / name / "summary.json").exists() and not events(tmp_path / name)
    err = capsys.readouterr().err
    assert (
        err.count(
            'note: no TensorBoard scalars (tensorboard is not installed: pip install "lstmlab[tensorboard]")'
        )
        == 1
    )


def test_resume_without_tensorboard_of_a_true_run_is_one_line(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert train_tiny(run, "--log.tensorboard", "true") == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert main(["resume", str(run), "--progress", "none", "--stop.max_iterations", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "lstmlab[tensorboard]"' in err[0], err


def test_logdir_over_a_folder_of_runs_shows_each_run(tmp_path):
    """What `tensorboard --logdir runs/` loads: every run directory below it is one run."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    runs = tmp_path / "runs"
    for name, opt in (("a", "lbfgs"), ("b", "cg")):
        flags = {"optimizer.name": opt, "stop.max_iterations": "2"}
        assert train_tiny(runs / name, "--log.tensorboard", "true", **flags) == 0
    mux = EventMultiplexer().AddRunsFromDirectory(str(runs))
    mux.Reload()
    assert set(mux.Runs()) == {"a", "b"}
    for name in ("a", "b"):
        steps = [e.step for e in mux.Tensors(name, "test/mae")]
        assert steps == [0, 1, 2], name


@pytest.mark.parametrize(
    "where, value, message",
    [
        ("file", '"yes"', "log.tensorboard: invalid choice 'yes'; valid: true, false, auto"),
        ("file", "1", "log.tensorboard: must be true/false or a string, got 1"),
        ("flag", "yes", "invalid choice: 'yes' (choose from 'true', 'false', 'auto')"),
    ],
)
def test_a_bad_value_is_one_line(tmp_path, capsys, where, value, message):
    run = tmp_path / "run"
    if where == "file":
        cfg = tmp_path / "log.toml"
        cfg.write_text(f"[log]\ntensorboard = {value}\n")
        code = train_tiny(run, "--config", str(cfg))
    else:
        code = train_tiny(run, "--log.tensorboard", value)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not run.exists()


def test_log_is_not_part_of_a_runs_identity():
    """Runs made before `log` existed (or with another setting) resume and are kept as theirs."""
    from lstmlab.reproduce import krause2015
    from lstmlab.training import run as runs
    from lstmlab.training.config import from_dict

    on = resolve([], {"task.name": "text"})
    off = from_dict({"log": {"tensorboard": False}}, on)
    assert on.log.tensorboard == "auto" and off.log.tensorboard is False
    assert runs.config_sha(on) == runs.config_sha(off)
    assert krause2015._identity(on) == krause2015._identity(off)
    assert runs.config_sha(on) != runs.config_sha(from_dict({"seed": 1}, on))


@pytest.mark.slow  # two worker processes: ~15 s on a loaded 2-core machine
def test_a_worker_group_writes_one_event_file_from_rank_0(tmp_path):
    run = tmp_path / "run"
    flags = ["--log.tensorboard", "true", "--workers", "2"]
    assert train_tiny(run, *flags, **{"stop.max_iterations": "3"}) == 0
    assert len(events(run)) == 1
    assert [s for s, _ in assert_mirrors(run)["test/mae"]] == [0, 1, 2, 3]


def test_a_diverging_run_shows_its_non_finite_numbers(tmp_path):
    run = tmp_path / "run"
    diverge = [
        "--optimizer.name",
        "momentum",
        "--optimizer.lr",
        "1e10",
        "--log.tensorboard",
        "true",
    ]
    changes = {"task.options.output": "linear", "stop.max_iterations": "40"}
    assert train_tiny(run, *diverge, **changes) == 3  # exit 3: diverged
    got = read_scalars(run)
    last = read_metrics(run / "metrics.jsonl")[-1]
    assert not math.isfinite(last["test_loss"])
    step, value = got["test/loss"][-1]
    assert step == last["iteration"] and not math.isfinite(value)


def test_a_new_event_file_sorts_after_one_made_the_same_second(tmp_path):
    """Readers take event files in name order; the name's time is in whole seconds and its
    host / pid / counter do not sort by time (here a host name that sorts last)."""
    import time

    older = tmp_path / f"events.out.tfevents.{int(time.time())}.zzzz.99999.99"
    older.write_bytes(b"")
    writer = tb.summary_writer(True, tmp_path, purge_step=0)
    writer.close()
    names = sorted(p.name for p in events(tmp_path))
    assert len(names) == 2 and names[0] == older.name
