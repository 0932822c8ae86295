"""Every HF hyperparameter is a constant or a schedule (SPEC S3), and bad options fail when
the optimizer — or the run — is built, with one line naming the argument."""

from __future__ import annotations

import pytest
import torch

from lstmlab.cli import main
from lstmlab.objective import FunctionObjective
from lstmlab.optim import HessianFree, LevenbergMarquardt
from lstmlab.optim.hf import HF_RANGES
from lstmlab.training.build import build_optimizer
from lstmlab.training.config import ConfigError, resolve

SCHEDULABLE = sorted(HF_RANGES)


def quadratic(n: int = 6):
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = Q @ Q.T + torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return FunctionObjective(
        lambda x: 0.5 * x @ A @ x - b @ x + 0.05 * (x**4).sum(), torch.zeros(n, dtype=torch.float64)
    )


@pytest.mark.parametrize("name", SCHEDULABLE)
def test_every_number_accepts_a_schedule_and_checks_its_range(name):
    lo, lo_in, hi, hi_in = HF_RANGES[name]
    good = lo + 1.0 if hi == float("inf") else (lo + hi) / 2
    bad = lo - 1.0 if lo_in else lo
    kw = {"lm": None} if name == "damping" else {}
    spec = {"type": "piecewise", "boundaries": [3], "values": [good, good]}
    HessianFree(**kw, **{name: spec})
    spec_bad = {"type": "piecewise", "boundaries": [1000], "values": [good, bad]}
    with pytest.raises(ValueError, match=rf"^{name}: must be .* at iteration 1000$"):
        HessianFree(**kw, **{name: spec_bad})
    with pytest.raises(ValueError, match=rf"^{name}: "):
        HessianFree(**kw, **{name: "fast"})


def test_lambda_follows_its_schedule_when_lm_is_off():
    hf = HessianFree(
        damping={"type": "exponential", "start": 1.0, "rate": 0.5}, lm=None, structural_weight=0.0
    )
    obj = quadratic()
    lams = [hf.step(obj).damping for _ in range(4)]
    assert lams == [1.0, 0.5, 0.25, 0.125]


def test_a_lambda_schedule_with_lm_is_refused():
    with pytest.raises(ValueError, match="^damping: a schedule for λ needs lm off"):
        HessianFree(damping={"type": "linear", "start": 1.0, "end": 0.1, "steps": 10})


def test_max_cg_schedule_caps_each_solve():
    hf = HessianFree(
        damping=1e-3,
        structural_weight=0.0,
        cg_tol=0.0,
        max_cg={"type": "piecewise", "boundaries": [1, 2], "values": [1, 2, 3]},
    )
    obj = quadratic()
    assert [hf.step(obj).cg_iterations for _ in range(3)] == [1, 2, 3]


def test_structural_weight_schedule_reaches_the_curvature_operator():
    seen = []

    class Spy(FunctionObjective):
        def curvature_operator(self, kind="gn", structural_weight=0.0):
            seen.append(structural_weight)
            return super().curvature_operator(kind, structural_weight)

    base = quadratic()
    obj = Spy(base.fn, base.x)
    hf = HessianFree(
        damping=2.0,
        lm=None,
        structural_weight={"type": "linear", "start": 0.0, "end": 1.0, "steps": 2},
    )
    for _ in range(3):
        hf.step(obj)
    assert seen == [0.0, 1.0, 2.0]  # λ·μ with μ = 0, 0.5, 1


def test_curvature_batch_schedule_picks_the_subset_size():
    sizes = []

    class Counted(FunctionObjective):
        def subset(self, idx):
            sizes.append(len(idx))
            return self

    base = quadratic()
    obj = Counted(base.fn, base.x, n_samples=10)
    hf = HessianFree(curvature_batch={"type": "piecewise", "boundaries": [1], "values": [0.5, 3]})
    hf.step(obj)
    hf.step(obj)
    assert sizes == [5, 3]


def test_option_tables_as_a_config_file_writes_them():
    hf = HessianFree(lm={"decrease": 0.99, "increase": 1.01}, preconditioner="none")
    assert hf.lm == LevenbergMarquardt(decrease=0.99, increase=1.01) and hf.preconditioner is None
    assert HessianFree(lm=False).lm is None and HessianFree(lm="none").lm is None
    obj = quadratic()
    info = hf.step(obj)
    assert info.damping in (pytest.approx(0.99), pytest.approx(1.01), 1.0)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"lm": {"decrese": 0.5}}, "optimizer.options.lm.decrese"),
        ({"lm": {"increase": 0.5}}, "optimizer.options.lm"),
        ({"lm": 3}, "optimizer.options.lm"),
        ({"max_cg": 0}, "optimizer.options.max_cg"),
        ({"warm_start": 1.5}, "optimizer.options.warm_start"),
        ({"curvature": "exact"}, "optimizer.options.curvature"),
        ({"preconditioner": "jacobi"}, "optimizer.options.preconditioner"),
        (
            {"damping": {"type": "linear", "start": 1.0, "end": 0.0, "steps": 5}},
            "optimizer.options.damping",
        ),
    ],
    ids=[
        "lm-unknown-key",
        "lm-bad-factor",
        "lm-not-a-table",
        "max_cg",
        "warm_start",
        "curvature",
        "preconditioner",
        "damping-schedule-with-lm",
    ],
)
def test_bad_options_fail_when_the_run_is_built(options, key):
    cfg = resolve([{"optimizer": {"name": "hf", "options": options}}])
    with pytest.raises(ConfigError) as err:
        build_optimizer(cfg)
    assert str(err.value).startswith(key + ":") and "\n" not in str(err.value)


def test_cli_rejects_a_bad_damping_table_before_any_step(tmp_path, capsys):
    cfg = tmp_path / "hf.toml"
    cfg.write_text(
        '[optimizer]\nname = "hf"\n[optimizer.options.lm]\ndecrease = 0.5\nincrese = 2.0\n'
    )
    run = tmp_path / "run"
    code = main(["train", "multiplication", "--config", str(cfg), "--run-dir", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "optimizer.options.lm.increse" in err, err
    assert not run.exists()
