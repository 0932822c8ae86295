"""CUDA paths of the distributed layer; skipped without a CUDA device (run them where one is:
``pytest -m cuda tests/distributed/test_cuda.py``)."""

from __future__ import annotations

import pytest
import torch

from lstmlab.distributed import DistributedObjective
from lstmlab.objective import Objective

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_wrapped_objective_on_cuda_equals_cpu(dtype):
    import scenarios

    model, batch = scenarios.problem()
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    f_cpu, g_cpu = Objective(model, batch).loss_and_grad()
    gn_cpu = Objective(model, batch).gauss_newton_product(v)
    model = model.to("cuda", dtype)
    obj = DistributedObjective(Objective(model, batch.to("cuda", dtype)), model)
    f, g = obj.loss_and_grad()
    gn = obj.gauss_newton_product(v.to("cuda", dtype))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert g.device.type == "cuda" and g.dtype == dtype
    assert abs(f - f_cpu) <= tol * abs(f_cpu)
    torch.testing.assert_close(g.cpu().double(), g_cpu, rtol=tol, atol=tol)
    torch.testing.assert_close(gn.cpu().double(), gn_cpu, rtol=tol * 10, atol=tol * 10)


def test_device_auto_takes_cuda(tmp_path):
    from lstmlab.cli import main
    from lstmlab.training.checkpoint import load_latest

    run = tmp_path / "run"
    args = ["train", "multiplication", "--run-dir", str(run), "--device", "auto",
            "--task.options.T", "20", "--task.options.n_train", "12", "--task.options.n_test",
            "6", "--stop.max_iterations", "1", "--progress", "none"]  # fmt: skip
    assert main(args) == 0
    ckpt, _ = load_latest(run / "checkpoint.safetensors")
    assert ckpt["config"]["device"] == "auto"
    assert torch.cuda.is_initialized()
