"""History is kept (issue 23): a damaged row in the middle of ``metrics.jsonl`` costs that row
only, never the valid rows around it; a checkpoint that carries no checksum is refused, or
loaded only on ``--allow-unverified`` with a warning."""

from __future__ import annotations

import json
import shutil

import pytest
from runkit import train_tiny

from lstmlab.cli import main


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    """A tiny run stopped after 6 iterations (tests copy it)."""
    run = tmp_path_factory.mktemp("history") / "run"
    assert train_tiny(run, **{"stop.max_iterations": "6"}) == 0
    return run


@pytest.fixture
def run(tmp_path, six):
    shutil.copytree(six, tmp_path / "run")
    return tmp_path / "run"


def iterations(run) -> list[int]:
    return [
        json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def damage_rows(run, *which: int, garbage: bytes = b'{"iteration": 2, "lo\xff\xfe\x00') -> None:
    """Replace the rows of the given iterations with ``garbage`` (a torn, non-UTF-8 row)."""
    lines = (run / "metrics.jsonl").read_bytes().split(b"\n")
    for i in which:
        lines[i] = garbage
    (run / "metrics.jsonl").write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("damaged", [(2,), (1, 4)], ids=["one-row", "two-rows"])
def test_a_damaged_row_costs_only_itself_at_resume(run, capsys, damaged):
    """Rows before and after a damaged row (up to the checkpoint) survive resume; one warning
    names what was dropped. Before: resume cut the log at the first damaged row."""
    assert iterations(run) == list(range(7))
    damage_rows(run, *damaged)
    assert main(["resume", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would drop {len(damaged)} damaged line" in out, out
    assert main(["resume", str(run), "--progress", "none", "--stop.max_iterations", "9"]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if "metrics.jsonl" in ln]
    assert len(warnings) == 1 and f"dropped {len(damaged)} damaged line" in warnings[0], err
    assert iterations(run) == [i for i in range(10) if i not in damaged]


def unverify(path, *, version: str = "1") -> None:
    """Rewrite a checkpoint as an older lstmlab or a forger would: no checksum in its header."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header["__metadata__"]
    meta["version"] = version
    meta.pop("sha256", None)
    meta.pop("config_sha256", None)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + n :])


@pytest.mark.parametrize("version", ["1", "2"], ids=["format-1", "checksum-removed"])
def test_a_checkpoint_without_checksum_is_refused_unless_allowed(run, capsys, version):
    for name in ("checkpoint.safetensors", "checkpoint.safetensors.prev"):
        unverify(run / name, version=version)
    capsys.readouterr()
    for argv in (["eval", str(run)], ["resume", str(run), "--dry-run"],
                 ["resume", str(run), "--progress", "none", "--stop.max_iterations", "8"]):  # fmt: skip
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no checksum" in err[0] and "--allow-unverified" in err[0], err
    assert main(["eval", str(run), "--allow-unverified"]) == 0
    assert "warning: " in capsys.readouterr().err
    argv = ["resume", str(run), "--allow-unverified", "--progress", "none",
            "--stop.max_iterations", "8"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "not verified" in err, err
    assert iterations(run) == list(range(9))
    assert main(["eval", str(run)]) == 0  # the checkpoints written since carry a checksum


def test_only_the_newest_unverified_falls_back_to_prev(run, capsys):
    unverify(run / "checkpoint.safetensors")
    assert main(["resume", str(run), "--progress", "none", "--stop.max_iterations", "8"]) == 0
    err = capsys.readouterr().err
    assert "no checksum" in err and "previous checkpoint" in err, err
