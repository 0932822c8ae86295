"""Measured cost of a Gauss–Newton product and of one HF iteration, in forward passes.

Seed 001 assumes gradient = 3 and curvature product = 4 forward passes. This measures them on a
SequenceModel (one batch, one run): forward (no grad, fast engine), gradient (bptt and autograd
engines), the cached GN operator's set-up and per-product time, and one HF iteration.

    .venv/bin/python benchmarks/bench_curvature.py [--batch 100 --length 100 --hidden 32 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lstmlab.data import Batch
from lstmlab.nn.sequence_model import SequenceModel
from lstmlab.objective import Objective
from lstmlab.optim import HessianFree


def timeit(fn, repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=100, help="sequences per batch")
    ap.add_argument("--length", type=int, default=100, help="sequence length T")
    ap.add_argument("--hidden", type=int, default=32, help="LSTM cells")
    ap.add_argument("--inputs", type=int, default=8, help="input size")
    ap.add_argument("--variant", default="vanilla", help="LSTM variant")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats (median)")
    ap.add_argument("--cg", type=int, default=10, help="CG iterations in the HF iteration")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    model = SequenceModel(
        a.inputs, a.hidden, a.inputs, output="softmax", variant=a.variant, dtype=dtype, seed=0
    )
    B, T = a.batch, a.length
    x = torch.randn(B, T, a.inputs, dtype=dtype)
    y = torch.randint(0, a.inputs, (B, T))
    batch = Batch(x, y, torch.full((B,), T))
    obj = Objective(model, batch)

    def fwd():
        with torch.no_grad():
            model(batch.inputs, batch.lengths)

    t_f = timeit(fwd, a.repeat)
    t_g = timeit(obj.loss_and_grad, a.repeat)
    with obj.engine("autograd"):
        t_ga = timeit(obj.loss_and_grad, a.repeat)
    v = torch.randn(obj.n_params, dtype=dtype)
    t_setup = timeit(lambda: obj.curvature_operator("gn"), a.repeat)
    op = obj.curvature_operator("gn")
    t_gv = timeit(lambda: op(v), a.repeat)
    op_s = obj.curvature_operator("gn", structural_weight=1 / 30)
    t_gvs = timeit(lambda: op_s(v), a.repeat)
    t_gv_once = timeit(lambda: obj.gauss_newton_product(v), a.repeat)

    hf = HessianFree(damping=1e-4, lm=None, max_cg=a.cg, cg_tol=0.0)
    hf.step(obj)
    infos = []

    def hf_iter():
        infos.append(hf.step(obj))

    t_hf = timeit(hf_iter, max(1, a.repeat // 2))
    info = infos[-1]
    print(
        f"model: {a.variant} LSTM, I={a.inputs}, H={a.hidden}, P={obj.n_params}, {a.dtype}, "
        f"B={B}, T={T}, threads={a.threads}"
    )
    print(f"{'quantity':46s} {'ms':>9s} {'forward passes':>15s}")
    rows = [
        ("forward (no grad, bptt engine)", t_f),
        ("loss + gradient, bptt engine", t_g),
        ("loss + gradient, autograd engine", t_ga),
        ("GN operator set-up (autograd, create_graph)", t_setup),
        ("GN product, cached operator", t_gv),
        ("GN + structural damping product, cached", t_gvs),
        ("GN product, one-off (set-up + product)", t_gv_once),
        (f"one HF iteration ({info.cg_iterations} CG its, {info.cg_stop})", t_hf),
    ]
    for name, t in rows:
        print(f"{name:46s} {1e3 * t:9.2f} {t / t_f:15.2f}")
    print(
        f"HF iteration / gradient (bptt): {t_hf / t_g:.2f}; "
        f"GN product / gradient (bptt): {t_gv / t_g:.2f}"
    )


if __name__ == "__main__":
    main()
