"""Resume continues to the result an uninterrupted run gives (bitwise, float64, CPU)."""

from __future__ import annotations

import pytest
import torch

from lstmlab.training import run
from lstmlab.training.checkpoint import load_checkpoint
from lstmlab.training.config import resolve
from lstmlab.training.metrics import read_metrics

STRIP = ("wall",)


def final_params(run_dir):
    return load_checkpoint(run_dir / "checkpoint.safetensors")["model"]


def same_metrics(a, b):
    ra = [{k: v for k, v in r.items() if k not in STRIP} for r in read_metrics(a / "metrics.jsonl")]
    rb = [{k: v for k, v in r.items() if k not in STRIP} for r in read_metrics(b / "metrics.jsonl")]
    return ra == rb


@pytest.mark.parametrize(
    "optimizer",
    [
        "lbfgs",
        "momentum",
        pytest.param("cg", marks=pytest.mark.slow),
        pytest.param("hf", marks=pytest.mark.slow),
    ],
)
def test_resume_with_a_larger_budget_equals_uninterrupted(tmp_path, tiny_overrides, optimizer):
    ov = {
        **tiny_overrides,
        "optimizer.name": optimizer,
        "optimizer.batch_size": "20",
        "stop.max_iterations": "6",
    }
    if optimizer == "hf":
        ov["optimizer.options.max_cg"] = "3"
    full = run.start(resolve(overrides=ov), tmp_path / "full", progress="none")
    ov["stop.max_iterations"] = "3"
    run.start(resolve(overrides=ov), tmp_path / "part", progress="none")
    resumed = run.resume(tmp_path / "part", stop_overrides={"max_iterations": 6}, progress="none")
    assert resumed["iterations"] == full["iterations"] == 6
    a, b = final_params(tmp_path / "full"), final_params(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final"] == full["final"]
    assert resumed["P_D"] == full["P_D"]
    assert same_metrics(tmp_path / "full", tmp_path / "part")


def test_finished_run_refuses_resume_without_a_new_budget(tmp_path, tiny_overrides):
    ov = {**tiny_overrides, "stop.max_iterations": "1"}
    run.start(resolve(overrides=ov), tmp_path / "r", progress="none")
    with pytest.raises(run.RunError, match="already finished"):
        run.resume(tmp_path / "r", progress="none")


def test_float32_runs(tmp_path, tiny_overrides):
    s = run.start(
        resolve(overrides={**tiny_overrides, "precision": "float32", "stop.max_iterations": "2"}),
        tmp_path / "r",
        progress="none",
    )
    assert s["iterations"] == 2
    assert final_params(tmp_path / "r")["head.weight"].dtype == torch.float32
