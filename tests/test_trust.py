"""Runs you can trust (issue 16): verified checkpoints with fallback to ``.prev``, diverged runs
that keep their last finite state, repaired metrics logs, standard JSON, documented exit codes,
one-line errors for bad files and values, presets that compose, every README engine name."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from runkit import tiny_flags

from lstmlab.cli import main
from lstmlab.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from lstmlab.training.config import resolve

ROOT = Path(__file__).resolve().parents[1]


def train(run: Path, *flags: str, **changes: str) -> int:
    return main(
        ["train", "multiplication", "--run-dir", str(run), "--progress", "none"]
        + tiny_flags(**changes)
        + list(flags)
    )


def params(run: Path, name: str = "checkpoint.safetensors") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / name)["model"]


def assert_same_params(a: Path, b: Path) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity (what other tools do)."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if not ln.startswith(("note:", "warning:"))]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run of 6 iterations (the result every recovery must reach)."""
    ref = tmp_path_factory.mktemp("ref") / "run"
    assert train(ref, **{"stop.max_iterations": "6"}) == 0
    return ref


@pytest.fixture(scope="module")
def partial4(tmp_path_factory):
    """The same run stopped after 4 iterations (tests copy it)."""
    run = tmp_path_factory.mktemp("partial") / "run"
    assert train(run, **{"stop.max_iterations": "4"}) == 0
    return run


@pytest.fixture
def partial(tmp_path, partial4):
    run = tmp_path / "run"
    shutil.copytree(partial4, run)
    return run


# ---------------------------------------------------------------------------------- verified


def test_every_flipped_byte_of_a_checkpoint_is_caught(tmp_path, reference):
    """One changed byte anywhere (sampled positions, and every byte of the tensor data of one
    weight) is refused on load -- never a silently different state."""
    data = (reference / "checkpoint.safetensors").read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(16)
    positions = set(rng.sample(range(len(data)), 300)) | set(
        range(header, min(header + 64, len(data)))
    )
    path = tmp_path / "c.safetensors"
    silent = []
    for pos in sorted(positions):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            load_checkpoint(path)
        except CheckpointError:
            continue
        silent.append(pos)
    assert silent == [], f"{len(silent)} flipped bytes loaded silently, e.g. at {silent[:5]}"


def test_resume_after_a_flipped_weight_byte_falls_back_to_prev(partial, reference, capsys):
    run = partial
    ck = run / "checkpoint.safetensors"
    data = bytearray(ck.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes
    ck.write_bytes(bytes(data))
    assert main(["resume", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "previous checkpoint (.prev)" in out and "checksum mismatch" in out
    assert main(["resume", str(run), "--progress", "none", "--stop.max_iterations", "6"]) == 0
    assert "checksum mismatch" in capsys.readouterr().err
    assert_same_params(reference, run)


def test_a_nan_weight_with_a_valid_checksum_falls_back_and_is_never_written(
    partial, reference, capsys
):
    run = partial
    ck = run / "checkpoint.safetensors"
    state = load_checkpoint(ck)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name].view(-1)[0] = float("nan")
    save_checkpoint(state, ck.with_name("crafted"))  # the generic writer, no finite guard
    ck.with_name("crafted").replace(ck)
    assert main(["resume", str(run), "--progress", "none", "--stop.max_iterations", "6"]) == 0
    assert "holds NaN or Inf" in capsys.readouterr().err
    assert_same_params(reference, run)
    for f in ("checkpoint.safetensors", "checkpoint.safetensors.prev"):
        assert all(torch.isfinite(t).all() for t in params(run, f).values()), f


def test_the_run_writer_refuses_a_non_finite_model(tmp_path):
    from lstmlab.training.checkpoint import NonFiniteError

    path = tmp_path / "c.safetensors"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path, finite=("model",))
    with pytest.raises(NonFiniteError):
        save_checkpoint({"model": {"w": torch.tensor([1.0, math.inf])}}, path, finite=("model",))
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert not path.with_name(path.name + ".prev").exists()


def test_a_checkpoint_of_another_config_is_refused(partial, capsys):
    run = partial
    cfg = (run / "config.toml").read_text()
    (run / "config.toml").write_text(cfg.replace("alpha = 3.75", "alpha = 2.0"))
    assert main(["resume", str(run), "--stop.max_iterations", "4"]) == 1
    assert "another config" in one_line_error(capsys)


DIVERGE = ("--optimizer.name", "momentum", "--optimizer.lr", "1e10")


def test_a_diverged_run_exits_3_and_keeps_its_last_finite_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    code = train(run, *DIVERGE, **{"task.options.output": "linear", "stop.max_iterations": "40"})
    assert code == 3
    out = capsys.readouterr().out
    assert "not solved (diverged)" in out and "last finite state" in out
    summary = strict_json((run / "summary.json").read_text())
    assert summary["stop_reason"] == "diverged"
    assert summary["checkpoint_iteration"] < summary["iterations"]
    for f in ("checkpoint.safetensors", "checkpoint.safetensors.prev"):
        st = load_checkpoint(run / f)
        assert all(torch.isfinite(t).all() for t in st["model"].values()), f
        assert math.isfinite(st["train_state"]["last_eval"]["loss"])
    assert (
        load_checkpoint(run / "checkpoint.safetensors")["train_state"]["iteration"]
        == (summary["checkpoint_iteration"])
    )
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    assert main(["resume", str(run), "--stop.max_iterations", "80"]) == 1
    assert "diverged" in one_line_error(capsys)
    assert main(["eval", str(run), "--json"]) == 0
    strict_json(capsys.readouterr().out)
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0


# ---------------------------------------------------------------------------------- metrics log


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:40] + b"\xff\xfe\x00binary\x00" + b[60:], id="binary-middle"),
        pytest.param(lambda b: b[: len(b) // 2], id="cut-short", marks=pytest.mark.slow),
        pytest.param(
            lambda b: b.replace(b"\n", b"\n{not json\n", 1),
            id="garbage-row",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_damaged_metrics_log_is_repaired_at_resume(partial, capsys, damage):
    run = partial
    log = run / "metrics.jsonl"
    log.write_bytes(damage(log.read_bytes()))
    assert main(["resume", str(run), "--dry-run"]) == 0
    assert "  metrics.jsonl" in capsys.readouterr().out  # what it would drop or keep
    assert main(["resume", str(run), "--progress", "none", "--stop.max_iterations", "6"]) == 0
    assert "metrics.jsonl: " in capsys.readouterr().err  # one warning saying what was dropped
    rows = [strict_json(line) for line in log.read_text(encoding="utf-8").splitlines()]
    its = [r["iteration"] for r in rows]
    assert its == sorted(set(its)) and its[-1] == 6  # whole rows, no duplicates, finished
    assert strict_json((run / "summary.json").read_text())["iterations"] == 6


# ---------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xff\xfe[task]\n", id="utf16-bom"),
        pytest.param(bytes(range(256)), id="binary"),
        pytest.param(b"seed = 1\n\x00\x01\x02", id="nul-bytes"),
        pytest.param(b"[model]\nalpha = " + b"[" * 5000 + b"1" + b"]" * 5000, id="deep"),
    ],
)
def test_a_config_file_that_is_not_utf8_toml_is_one_line(tmp_path, capsys, content):
    f = tmp_path / "bad.toml"
    f.write_bytes(content)
    assert main(["train", "multiplication", "--config", str(f), "--dry-run"]) == 2
    assert str(f) in one_line_error(capsys)


@pytest.mark.parametrize(
    "flags, key",
    [
        (["--model.options.gate_bias", "{i = inf}"], "model.options.gate_bias.i"),
        (["--model.options.gate_bias", "{i = nan}"], "model.options.gate_bias.i"),
        (["--model.options.gate_bias", "{i = [1.0, -inf]}"], "model.options.gate_bias.i[1]"),
        (["--task.options.T", "nan"], "task.options.T"),
        (["--optimizer.options.c2", "-inf"], "optimizer.options.c2"),
        (["--model.alpha", "{type = 'linear', start = 1, end = nan, steps = 3}"], "model.alpha"),
    ],
)
def test_non_finite_option_values_are_one_line_errors(capsys, flags, key):
    assert main(["train", "multiplication", "--dry-run", *flags]) == 2
    line = one_line_error(capsys)
    assert key in line and "finite" in line


def test_non_finite_values_in_a_config_file(tmp_path, capsys):
    f = tmp_path / "c.toml"
    f.write_text("[model.options.gate_bias]\ni = nan\n")
    assert main(["train", "multiplication", "--config", str(f), "--dry-run"]) == 2
    assert "model.options.gate_bias.i" in one_line_error(capsys)


@pytest.mark.parametrize(
    "flags, key",
    [
        (["--model.blocks", "10000000"], "model.blocks"),
        (["--task.options.n_train", "1000000000000"], "task.options.n_train"),
        (["--task.options.T", "100000000000"], "task.options.T"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_before_allocating(capsys, flags, key):
    assert main(["train", "multiplication", "--dry-run", *flags]) == 2
    line = one_line_error(capsys)
    assert key in line and re.search(r"needs at least [\d.]+ [KMGT]iB", line)


def test_memory_limit_names_the_amount(capsys, monkeypatch):
    monkeypatch.setenv("LSTMLAB_MEMORY_LIMIT", str(10 * 1024**2))
    assert (
        main(["train", "multiplication", "--dry-run", *tiny_flags(**{"model.blocks": "300"})]) == 2
    )
    assert "(10.0 MiB available)" in one_line_error(capsys)


# ---------------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    "cell",
    [
        "gru",
        pytest.param("rnn", marks=pytest.mark.slow),
        pytest.param("mrnn", marks=pytest.mark.slow),
    ],
)
def test_every_cell_runs_on_the_multiplication_preset(tmp_path, capsys, cell):
    assert train(tmp_path / "r", "--model.cell", cell, **{"stop.max_iterations": "2"}) == 0
    assert "gate_bias" in capsys.readouterr().err  # the note about the dropped preset option


def test_a_variant_without_the_preset_gate_drops_it_with_a_note(capsys):
    notes: list[str] = []
    cfg = resolve(overrides={"task.name": "multiplication", "model.variant": "NIG"}, notes=notes)
    assert "gate_bias" not in cfg.model.options and "NIG" in notes[0]
    cfg = resolve(overrides={"task.name": "multiplication"}, notes=notes)
    assert cfg.model.options == {"gate_bias": {"i": -1.0}}


def test_seed000_and_multiplication_are_one_setting():
    from lstmlab.training.config import to_dict

    a = to_dict(resolve(overrides={"task.name": "seed000"}))
    b = to_dict(resolve(overrides={"task.name": "multiplication"}))
    assert a.pop("task").pop("name") == "seed000"
    assert b.pop("task").pop("name") == "multiplication"
    assert a == b


def test_sgd_preset_evaluates_and_checkpoints_at_intervals(tmp_path):
    cfg = resolve(overrides={"task.name": "multiplication", "optimizer.name": "sgd"})
    assert cfg.optimizer.batch_size == 1
    assert cfg.eval_every >= 1000 and cfg.checkpoint_every >= 1000 and cfg.log_every >= 100
    # and the user's values still win
    cfg = resolve(overrides={"optimizer.name": "sgd", "eval_every": "7"})
    assert cfg.eval_every == 7


@pytest.mark.slow
def test_log_every_writes_fewer_rows(tmp_path):
    run = tmp_path / "r"
    assert train(run, "--log_every", "3", "--eval_every", "4", **{"stop.max_iterations": "8"}) == 0
    its = [strict_json(ln)["iteration"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert its == [0, 3, 4, 6, 8]


def readme_engine_names() -> list[str]:
    row = next(
        ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith("| engines")
    )
    names = re.findall(r"`([^`]+)`", row.split("|")[3])
    bases = [n for n in names if not n.startswith("…") and "/" not in n]
    out = list(bases)
    if any(n.startswith("…:") for n in names):
        suffix = next(n for n in names if n.startswith("…:"))[1:]
        out += [b + suffix for b in bases if not b.endswith("per-sample")]
    return out


def test_every_engine_name_in_the_readme_is_accepted_by_the_cli(capsys):
    from lstmlab.engines import engine_names
    from lstmlab.training.config import ENGINES

    names = readme_engine_names()
    assert {"bptt", "rtrl-per-sample", "bptt:per-sample"} <= set(names)
    assert set(ENGINES) == set(engine_names()) >= set(names)
    for name in names:
        assert (
            main(["train", "multiplication", "--dry-run", "--model.engine", name, *tiny_flags()])
            == 0
        )
        assert f'engine = "{name}"' in capsys.readouterr().out


@pytest.mark.slow
def test_every_engine_name_in_the_readme_trains(tmp_path):
    for i, name in enumerate(readme_engine_names()):
        flags = {
            "stop.max_iterations": "1",
            "task.options.n_train": "4",
            "optimizer.batch_size": "2",
        }
        assert train(tmp_path / f"r{i}", "--model.engine", name, **flags) == 0, name


def test_a_run_diverged_at_its_first_evaluation_writes_no_checkpoint(tmp_path, monkeypatch, capsys):
    from lstmlab.training import build

    monkeypatch.setattr(build.Built, "evaluate", lambda self, m: {"loss": math.nan, "mae": 1.0})
    run = tmp_path / "run"
    assert train(run, **{"stop.max_iterations": "3"}) == 3
    assert "before any finite checkpoint" in capsys.readouterr().out
    assert not (run / "checkpoint.safetensors").exists()
    summary = strict_json((run / "summary.json").read_text())
    assert summary["checkpoint_iteration"] is None and summary["final"]["loss"] == "NaN"


def test_format_1_checkpoints_load_only_when_allowed(tmp_path):
    """A format-1 file has no checksum: refused by default (issue 23), loaded on
    ``allow_unverified`` with the reason attached for the caller's warning."""
    from safetensors.torch import save

    from lstmlab.training.checkpoint import UNVERIFIED, CheckpointError

    meta = {"format": "lstmlab-checkpoint", "version": "1", "state": json.dumps({"i": 1})}
    path = tmp_path / "old.safetensors"
    path.write_bytes(save({}, metadata=meta))
    with pytest.raises(CheckpointError, match="no checksum"):
        load_checkpoint(path)
    state = load_checkpoint(path, allow_unverified=True)
    assert state.pop(UNVERIFIED).endswith("loaded not verified (--allow-unverified)")
    assert state == {"i": 1}
