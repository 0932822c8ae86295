"""N = 2 and 3 real worker processes (gloo, localhost) equal one process to float64 round-off:
loss, gradient, gate saturation, curvature products (GN, exact and finite-difference Hessian, structural
damping), per-sample statistics, HF's curvature subset, the cost counter, and a few steps of
L-BFGS, nonlinear CG, HF (subset + diagonal preconditioner; FD curvature), SGD and Adam.

The default run's group then runs a whole ``lstmlab train`` (equal shards), each rank in its
own working directory: it equals a one-process run, and only rank 0 wrote anything."""

from __future__ import annotations

import pytest
import scenarios
import torch
from group import run_group

from lstmlab.objective import Objective

REL = 1e-10  # float64 round-off, amplified a little by a few optimizer steps
# finite differences divide the gradients' round-off by ε ≈ 1e-8
LOOSE = {"fd": 1e-6, "hf_fd_losses": 1e-6, "hf_fd_x": 1e-6}


@pytest.fixture(scope="module")
def reference():
    return scenarios.compute(lambda model, batch: Objective(model, batch))


@pytest.fixture(
    scope="module",
    # the default run: 3 workers (uneven shards, a rank idle on the subset) and L-BFGS, CG,
    # HF; the slow run adds 2 workers and FD-HF, SGD and Adam
    params=[
        pytest.param((2, "equivalence"), marks=pytest.mark.slow),
        pytest.param((3, "equivalence"), marks=pytest.mark.slow),
        (3, "core"),
    ],
    ids=["2-workers-all", "3-workers-all", "3-workers"],
)
def group(request, tmp_path_factory):
    world, scenario = request.param
    out = tmp_path_factory.mktemp(f"group{world}")
    results = run_group(scenario, world, out)
    for r, res in enumerate(results):
        assert "log" not in res, f"rank {r} failed:\n{res['log'][-3000:]}"
    return _Group(results, out)


class _Group(list):
    """Every rank's results, and the folder the group worked in."""

    def __init__(self, results, out):
        super().__init__(results)
        self.out = out


def _close(a, b, key):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = max(float(b.abs().max()), 1e-300)
    err = float((a - b).abs().max()) / scale
    assert err <= LOOSE.get(key, REL), f"{key}: relative difference {err:.3g}"


VALUES = [
    "loss",
    "loss_g",
    "grad",
    "gn",
    "hessian",
    "fd",
    "structural",
    "gn_sd",
    "psg",
    "saturation",
    "per_sample_loss",
    "sub_loss",
    "sub_grad",
    "sub_gn",
    "spread_gn",
]


def _trajectories(res):
    return [f"{o}_{k}" for o in scenarios.OPTIMIZERS for k in ("losses", "x") if f"{o}_x" in res]


def test_values_equal_one_process(group, reference):
    for res in group:
        assert res["n_samples"] == reference["n_samples"] and res["sub_n"] == 3
        for key in VALUES:
            _close(res[key], reference[key], key)


def test_trajectories_equal_one_process(group, reference):
    for res in group:
        assert _trajectories(res), "no optimizer ran"
        for key in _trajectories(res):
            _close(res[key], reference[key], key)


def test_run_equals_one_process_and_only_rank0_writes(group, tmp_path):
    import json

    from lstmlab.cli import main
    from lstmlab.training.checkpoint import load_latest

    out = group.out
    if not (out / "cwd0").exists():
        pytest.skip("the run rides on the default scenario's group")
    codes = [(out / f"rank{r}.code").read_text() for r in range(len(group))]
    assert codes == ["0"] * len(group)
    for r in range(1, len(group)):
        assert list((out / f"cwd{r}").iterdir()) == [], f"rank {r} wrote files"
    run, ref = out / "cwd0" / "run", tmp_path / "ref"
    assert main(["train", *scenarios.RUN_ARGS, "--run-dir", str(ref)]) == 0
    assert sorted(p.name for p in run.rglob("*")) == sorted(p.name for p in ref.rglob("*"))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run, ref))
    for key in ("iterations", "samples", "P_D", "P_I", "presentations"):
        assert a[key] == b[key], key

    def losses(d):
        recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return torch.tensor([r["loss"] for r in recs if "loss" in r])

    torch.testing.assert_close(losses(run), losses(ref), rtol=1e-9, atol=0)
    ckpt, _ = load_latest(run / "checkpoint.safetensors")
    ckpt_ref, _ = load_latest(ref / "checkpoint.safetensors")
    for k, v in ckpt_ref["model"].items():
        torch.testing.assert_close(ckpt["model"][k], v, rtol=1e-8, atol=1e-10)
    ranks = ckpt["rng_ranks"]  # rank 0's stream is one process's; the others their own
    assert ckpt["world_size"] == len(group) == len(ranks)
    assert torch.equal(ranks[0]["torch"], ckpt["rng"]["torch"])
    assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])


def test_every_rank_holds_the_same_bits(group):
    for res in group[1:]:
        for key in VALUES + _trajectories(res):
            assert torch.equal(torch.as_tensor(res[key]), torch.as_tensor(group[0][key])), key


def test_wall_clock_decisions_are_rank_0s_on_every_rank(group):
    if "agreed" not in group[0]:
        pytest.skip("only the core scenario asks")
    assert [res["agreed"] for res in group] == [[True, False]] * len(group)


def test_cost_counter_is_the_one_process_count(group, reference):
    for res in group:
        keys = ["counter"] + [f"{o}_cost" for o in scenarios.OPTIMIZERS if f"{o}_x" in res]
        for key in keys:
            for field, value in reference[key].items():
                assert res[key][field] == pytest.approx(value, rel=1e-12), (key, field)
