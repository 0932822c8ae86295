"""One small problem computed the same way by one process and by each worker of a group.

``compute(make_objective)`` evaluates everything the objective contract offers and a few steps
of each optimizer; ``make_objective(model, batch)`` is a plain ``Objective`` in one process and
a ``DistributedObjective`` over this worker's rows in a group (``group_worker.py``).
"""

from __future__ import annotations

import torch

from lstmlab.data import Batch
from lstmlab.nn.sequence_model import SequenceModel
from lstmlab.optim import LBFGS, SGD, Adam, HessianFree, NonlinearCG

N = 11  # samples, uneven lengths
WEIGHTS = (1.0, 2.5, 1.3)  # uneven shards: split_counts(N, WEIGHTS[:world])
STEPS = 3


def problem(output: str = "linear") -> tuple[SequenceModel, Batch]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([6, 3, 5, 1, 6, 2, 4, 6, 5, 3, 2])
    T = int(lengths.max())
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double().unsqueeze(-1)
    inputs = torch.randn(N, T, 3, generator=g, dtype=torch.float64) * mask
    if output == "softmax":
        targets = torch.randint(0, 3, (N, T), generator=g)
    else:
        targets = torch.randn(N, T, 3, generator=g, dtype=torch.float64) * mask
    model = SequenceModel(
        3, 4, 3, output=output, read="every", cell="lstm", dtype=torch.float64, seed=1
    )
    return model, Batch(inputs, targets, lengths)


def _vec(model, seed: int) -> torch.Tensor:
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


OPTIMIZERS = {
    "lbfgs": lambda: LBFGS(iterations=2),
    "cg": lambda: NonlinearCG(iterations=2),
    "hf": lambda: HessianFree(curvature_batch=4, preconditioner="diagonal", max_cg=10, seed=3),
    "hf_fd": lambda: HessianFree(curvature="fd", structural_weight=0.0, max_cg=5, seed=4),
    "sgd": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: Adam(lr=0.01),
}


# a whole `lstmlab train` run in a group (after the "core" values) and in one process; equal
# shards: a speed re-shard may cost L-BFGS one more gradient (its cache is per objective)
RUN_ARGS = [
    "multiplication",
    "--task.options.T", "20",
    "--task.options.n_train", "12",
    "--task.options.n_test", "6",
    "--optimizer.iterations_per_batch", "2",
    "--stop.max_iterations", "2",
    "--progress", "none",
]  # fmt: skip

CORE = ("lbfgs", "cg", "hf")  # the default run's; the slow run takes them all


def compute(make_objective, output: str = "linear", optimizers=tuple(OPTIMIZERS)) -> dict:
    model, batch = problem(output)
    obj = make_objective(model, batch)
    x0 = obj.get_params()
    v = _vec(model, 7)
    out: dict = {"n_samples": obj.n_samples}
    out["loss"] = torch.tensor(obj.loss())
    f, g = obj.loss_and_grad()
    out["loss_g"], out["grad"] = torch.tensor(f), g
    out["gn"] = obj.gauss_newton_product(v)
    out["hessian"] = obj.hessian_product(v)
    out["fd"] = obj.fd_hessian_product(v)
    out["structural"] = obj.structural_damping_product(v)
    op = obj.curvature_operator("gn", structural_weight=0.3)
    out["gn_sd"] = torch.stack([op(v), op(2 * v)])
    out["psg"] = obj.per_sample_grads_squared()
    out["saturation"] = torch.cat(list(obj.gate_saturation(0.49).values()))  # gate-aware HF
    out["per_sample_loss"] = obj.per_sample_loss()
    sub = obj.subset(torch.tensor([0, 1, 2]))  # all in the first rows: other ranks hold none
    out["sub_n"] = sub.n_samples
    fs, gs = sub.loss_and_grad()
    out["sub_loss"], out["sub_grad"] = torch.tensor(fs), gs
    out["sub_gn"] = sub.gauss_newton_product(v)
    spread = obj.subset(torch.tensor([1, 5, 9, 10]))  # rows on every rank
    out["spread_gn"] = spread.gauss_newton_product(v)
    out["counter"] = obj.counter.as_dict()
    for name in optimizers:
        obj.set_params(x0)
        opt = OPTIMIZERS[name]()
        before = obj.counter.snapshot()
        losses = []
        for _ in range(STEPS):
            info = opt.step(obj)
            losses.append(info.loss)
        out[f"{name}_losses"] = torch.tensor(losses)
        out[f"{name}_x"] = obj.get_params()
        out[f"{name}_cost"] = (obj.counter - before).as_dict()
    return out
