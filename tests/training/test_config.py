from __future__ import annotations

import pytest

from lstmlab.training.config import (
    ConfigError,
    RunConfig,
    dumps_toml,
    from_dict,
    load_toml,
    parse_value,
    resolve,
    to_dict,
)


def test_defaults_are_seed000_setting():
    cfg = resolve(overrides={"task.name": "multiplication"})
    assert (cfg.model.variant, cfg.model.blocks, cfg.model.cells_per_block) == ("lstm97", 2, 2)
    assert cfg.model.alpha == 3.75
    assert (cfg.optimizer.name, cfg.optimizer.batch_size) == ("lbfgs", 1000)
    assert cfg.optimizer.iterations_per_batch == 20
    assert cfg.optimizer.history == 100  # minFunc's Corr default
    assert cfg.optimizer.options == {"keep_history": False}  # minFunc restarts per minibatch
    opts = cfg.task.options
    assert (opts["T"], opts["n_train"], opts["n_test"], opts["rule"]) == (
        100,
        10_000,
        3_000,
        "seed000",
    )


def test_optimizer_preset_follows_the_chosen_name_and_user_values_win():
    cfg = resolve(overrides={"optimizer.name": "momentum"})
    assert (cfg.optimizer.batch_size, cfg.optimizer.lr, cfg.optimizer.momentum) == (100, 0.1, 0.9)
    cfg = resolve(overrides={"optimizer.name": "momentum", "optimizer.lr": "0.01"})
    assert cfg.optimizer.lr == 0.01


def test_toml_round_trip(tmp_path):
    cfg = resolve(
        overrides={
            "model.alpha": '{type="linear", start=1, end=3.75, steps=10}',
            "stop.patience": "5",
        }
    )
    path = tmp_path / "c.toml"
    path.write_text(dumps_toml(cfg))
    again = from_dict(load_toml(path))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize(
    "override, key, words",
    [
        ({"optimizer.bogus": "1"}, "optimizer.bogus", "unknown key"),
        ({"bogus": "1"}, "bogus", "unknown key"),
        ({"seed": "abc"}, "seed", "integer"),
        ({"optimizer.batch_size": "1.5"}, "optimizer.batch_size", "integer"),
        ({"optimizer.batch_size": "0"}, "optimizer.batch_size", ">= 1"),
        ({"model.alpha": "-1"}, "model.alpha", "> 0"),
        ({"optimizer.momentum": "1.5"}, "optimizer.momentum", "<= 1"),
        ({"precision": "float16"}, "precision", "valid: float64, float32"),
        ({"model.alpha": "{type='nope'}"}, "model.alpha", "valid types"),
        ({"stop.max_seconds": "nan"}, "stop.max_seconds", "finite"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_bad_values_name_the_key(override, key, words):
    with pytest.raises(ConfigError) as err:
        resolve(overrides=override)
    assert err.value.key == key
    assert str(err.value).startswith(key + ":")
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_parse_value_reads_toml_or_falls_back_to_text():
    assert parse_value("3") == 3 and parse_value("0.1") == 0.1 and parse_value("true") is True
    assert parse_value("lbfgs") == "lbfgs"
    assert parse_value("{a=1}") == {"a": 1}


def test_direct_construction_validates():
    with pytest.raises(ConfigError):
        RunConfig(seed=-1)
