"""The search space and `lstmlab study` on the command line: bad input is one clear line
(exit 2), an existing study is never overwritten, and every action runs at tiny size."""

from __future__ import annotations

import pytest

from lstmlab.cli import main
from lstmlab.studies.space import GREFF, SpaceError, from_dict, load_space

TINY = [
    "--task.options.n_train", "12",
    "--task.options.n_valid", "6",
    "--task.options.n_test", "6",
    "--optimizer.batch_size", "6",
    "--stop.max_epochs", "2",
]  # fmt: skip
SPACE = """
variants = ["vanilla", "CIFG"]
[params.hidden_size]
type = "int_log"
low = 2
high = 4
[params.lr]
type = "log"
low = 0.001
high = 0.1
"""


def test_greff_space():
    p = GREFF.params
    assert GREFF.variants[0] == "vanilla" and len(GREFF.variants) == 9
    assert (p["hidden_size"].low, p["hidden_size"].high, p["hidden_size"].type) == (
        20,
        200,
        "int_log",
    )
    assert (p["lr"].low, p["lr"].high, p["lr"].log) == (1e-6, 1e-2, True)
    assert p["momentum"].key == "1-momentum" and p["momentum"].to_value(0.01) == 0.99
    assert (p["input_noise"].low, p["input_noise"].high, p["input_noise"].log) == (0, 1, False)


@pytest.mark.parametrize(
    "space, message",
    [
        ({"params": {"dropout": {"type": "uniform", "low": 0, "high": 1}}}, r"params\.dropout: unknown hyperparameter"),
        ({"variants": ["vanilla", "LSTM-X"]}, r"variants: unknown variant 'LSTM-X'"),
        ({"params": {"lr": {"type": "log", "low": 0.1, "high": 0.1}}}, r"params\.lr: empty range"),
        ({"params": {"lr": {"type": "log", "low": 0.0, "high": 0.1}}}, r"params\.lr\.low: a log range"),
        ({"params": {"hidden_size": {"type": "log", "low": 2, "high": 9}}}, r"hidden_size takes type int"),
        ({"params": {"momentum": {"type": "uniform", "low": 0, "high": 2}}}, r"params\.momentum: gives momentum = 2"),
        ({"variants": []}, r"variants: must be a non-empty list"),
        ({"params": {"lr": {"type": "sobol", "low": 0, "high": 1}}}, r"params\.lr\.type: invalid choice"),
    ],
    ids=["unknown-hp", "unknown-variant", "empty-range", "log-zero", "int-type", "out-of-range", "no-variants", "bad-type"],
)  # fmt: skip
def test_bad_space_is_one_line_naming_the_key(space, message):
    with pytest.raises(SpaceError, match=message):
        from_dict(space)


def test_space_file_round_trip(tmp_path):
    f = tmp_path / "space.toml"
    f.write_text(SPACE)
    s = load_space(f)
    assert s.variants == ("vanilla", "CIFG") and set(s.params) == {"hidden_size", "lr"}
    assert from_dict(s.to_dict()).fingerprint() == s.fingerprint()
    (tmp_path / "bad.toml").write_text("variants = [")
    with pytest.raises(SpaceError, match="not valid TOML"):
        load_space(tmp_path / "bad.toml")


def test_cli_actions_and_errors(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    d = str(tmp_path / "st")
    assert main(["study", "create", d, "framewise", "--space", str(space), *TINY]) == 0
    # an existing study is never overwritten, with the same space or another
    assert main(["study", "create", d, "framewise", "--space", str(space)]) == 2
    assert "already holds study" in capsys.readouterr().err
    other = tmp_path / "other.toml"
    other.write_text(SPACE.replace('"CIFG"', '"NP"'))
    journal = tmp_path / "st" / "study.journal"
    d2 = str(tmp_path / "st2")
    assert main(["study", "create", d2, "framewise", "--name", "st", "--storage", f"journal:{journal}", "--space", str(other)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "already exists" in err and "another search space" in err
    assert main(["study", "run", d, "--trials", "1", "--space", str(other)]) == 2
    assert "another search space" in capsys.readouterr().err
    assert main(["study", "run", d, "--trials", "2"]) == 0
    assert main(["study", "resume", d]) == 0
    assert main(["study", "status", d]) == 0
    out = capsys.readouterr().out
    assert "2 trials: 2 complete" in out
    assert main(["study", "analyze", d]) == 0
    assert (tmp_path / "st" / "analysis" / "report.md").exists()
    assert main(["study", "status", str(tmp_path / "nothing")]) == 2
    assert "no study here" in capsys.readouterr().err
    assert main(["study", "run", d]) == 2
    assert "--trials N" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[params.dropout]\ntype = "uniform"\nlow = 0\nhigh = 1\n')
    assert main(["study", "create", str(tmp_path / "st3"), "framewise", "--space", str(bad)]) == 2
    assert "unknown hyperparameter" in capsys.readouterr().err
    assert not (tmp_path / "st3").exists()
