"""Measured cost of a Gauss–Newton product and of one HF iteration: fast products vs the old ones.

Seed 001 assumes gradient = 3 and curvature product = 4 forward passes. This measures, on one
batch in one run (ratios are against a gradient timed in the same run): the forward pass (no
grad), the gradient (bptt engine), the cached GN operator's set-up and per-product time with the
fast products (R-forward + hand-written backward of the bptt engine) and with the reference ones
(double backward on the autograd engine, what HF used before), and one HF iteration with each.

Networks (``--network``):
    seed000   seed 000's: lstm97, 2 blocks × 2 cells, α = 3.75, the multiplication task's
              batches (I = 2, sigmoid output read at the last step), float64, B = 1000, T ≈ 100
    char      a character model: vanilla LSTM, H = 200, 50 symbols one-hot in, softmax out at
              every step, float32, T = 200, B = --batch (32 by default)
    custom    vanilla (or --variant) LSTM, I = --inputs, H = --hidden, softmax every step

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_curvature.py --network seed000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_curvature.py --network char --batch 32
    python benchmarks/bench_curvature.py --network seed000 --device cuda --no-reference --no-hf

``--device cuda`` runs the same on a GPU (each timed call then waits for the device).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from lstmlab.data import Batch
from lstmlab.nn.sequence_model import SequenceModel
from lstmlab.objective import Objective
from lstmlab.optim import HessianFree


def timeit(fn, repeat: int) -> float:
    """The fastest of ``repeat`` timed calls after a warm-up call (the machine is shared and
    loaded: the minimum is the least disturbed estimate of a call's own cost)."""
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def interleaved(fns: dict, repeat: int) -> dict[str, float]:
    """The fastest of ``repeat`` rounds of each function, the functions called in turn within
    a round so that they meet the same load (ratios between them are what this reports)."""
    for fn in fns.values():
        fn()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in ts.items()}


def network(a) -> tuple[SequenceModel, Batch, str]:
    device = torch.device(getattr(a, "device", "cpu"))
    model, batch, what = _network(a)
    if device.type == "cpu":
        return model, batch, what
    return model.to(device), batch.to(device), f"{what}, {device}"


def _network(a) -> tuple[SequenceModel, Batch, str]:
    if a.network == "seed000":
        from lstmlab.training.build import DeviceSplit, build_model, build_task
        from lstmlab.training.config import RunConfig, TaskConfig

        cfg = RunConfig(task=TaskConfig(name="seed000"))
        task = build_task(cfg)
        dtype = torch.float64
        model = build_model(cfg, task, torch.device("cpu"), dtype)
        batch = DeviceSplit(task.train, torch.device("cpu"), dtype).batch(torch.arange(a.batch))
        return model, batch, "seed 000: lstm97, 2 blocks x 2 cells, alpha 3.75, float64"
    dtype = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(0)
    if a.network == "char":
        V, H, variant = 50, 200, "vanilla"
    else:
        V, H, variant = a.inputs, a.hidden, a.variant
    B, T = a.batch, a.length
    model = SequenceModel(V, H, V, output="softmax", variant=variant, dtype=dtype, seed=0)
    symbols = torch.randint(0, V, (B, T + 1), generator=g)
    x = torch.nn.functional.one_hot(symbols[:, :-1], V).to(dtype)
    batch = Batch(x, symbols[:, 1:], torch.full((B,), T))
    return model, batch, f"{variant} LSTM, {V} symbols, H={H}, {a.dtype}"


def synced(fn, device: torch.device):
    """``fn`` that, on CUDA, waits for the device before returning (so that it can be timed)."""
    if device.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="custom", choices=["seed000", "char", "custom"])
    ap.add_argument("--batch", type=int, default=None, help="sequences per batch")
    ap.add_argument("--length", type=int, default=None, help="sequence length T (char/custom)")
    ap.add_argument("--hidden", type=int, default=32, help="LSTM cells (custom)")
    ap.add_argument("--inputs", type=int, default=8, help="input size = symbols (custom)")
    ap.add_argument("--variant", default="vanilla", help="LSTM variant (custom)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (the fastest is kept)")
    ap.add_argument("--cg", type=int, default=10, help="CG iterations in the HF iteration")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference products")
    ap.add_argument("--no-hf", action="store_true", help="skip the HF iterations")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    return ap


def measure(a) -> tuple[list[tuple[str, float]], str, list[str]]:
    """The rows (quantity, seconds) of one run, the header line, and the summary ratios."""
    defaults = {"seed000": (1000, 100), "char": (32, 200), "custom": (100, 100)}[a.network]
    a.batch = a.batch or defaults[0]
    a.length = a.length or defaults[1]
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    model, batch, what = network(a)
    fast = Objective(model, batch)
    ref = Objective(model, batch, curvature_products="reference")
    dtype = batch.inputs.dtype
    v = torch.randn(fast.n_params, dtype=dtype, generator=torch.Generator().manual_seed(1))
    v = v.to(device)
    mu = 1 / 30

    def fwd():
        with torch.no_grad():
            model(batch.inputs, batch.lengths)

    fns = {
        "forward (no grad, bptt engine)": fwd,
        "loss + gradient, bptt engine": fast.loss_and_grad,
    }
    for name, obj in (("fast", fast), ("reference", ref)):
        if name == "reference" and a.no_reference:
            continue
        op = obj.curvature_operator("gn")
        assert op.products == name
        op_s = obj.curvature_operator("gn", structural_weight=mu)
        fns[f"GN operator set-up, {name}"] = lambda o=obj: o.curvature_operator("gn")
        fns[f"GN product, {name}"] = lambda o=op: o(v)
        fns[f"GN + structural damping product, {name}"] = lambda o=op_s: o(v)
    times = interleaved({k: synced(f, device) for k, f in fns.items()}, a.repeat)
    rows = list(times.items())
    t_g = times["loss + gradient, bptt engine"]
    if not a.no_hf:
        for name in ("fast", "reference"):
            if name == "reference" and a.no_reference:
                continue
            m = copy.deepcopy(model)
            obj = Objective(m, batch, curvature_products=name)
            hf = HessianFree(damping=1e-2, lm=None, max_cg=a.cg, cg_tol=0.0, seed=0)
            infos = []
            step = synced(lambda h=hf, o=obj, i=infos: i.append(h.step(o)), device)
            t = timeit(step, max(1, a.repeat // 2))
            info = infos[-1]
            rows.append((f"one HF iteration, {name} ({info.cg_iterations} CG its, mu=1/30)", t))
    head = (
        f"network: {what}; P={fast.n_params}, B={len(batch)}, "
        f"T={int(batch.lengths.max())}, threads={a.threads}"
    )
    times = dict(rows)
    summary = [f"GN product (fast) / gradient: {times['GN product, fast'] / t_g:.2f}"]
    summary.append(
        f"GN + structural (fast) / gradient: "
        f"{times['GN + structural damping product, fast'] / t_g:.2f}"
    )
    if not a.no_reference:
        summary.append(
            f"GN product reference / fast: {times['GN product, reference'] / times['GN product, fast']:.2f}"
        )
    hf_rows = [t for n, t in rows if n.startswith("one HF iteration")]
    if len(hf_rows) == 2:
        summary.append(f"HF iteration reference / fast: {hf_rows[1] / hf_rows[0]:.2f}")
    return rows, head, summary


def main() -> None:
    a = parser().parse_args()
    rows, head, summary = measure(a)
    t_f = dict(rows)["forward (no grad, bptt engine)"]
    t_g = dict(rows)["loss + gradient, bptt engine"]
    print(head)
    print(f"{'quantity':58s} {'ms':>10s} {'fwd passes':>10s} {'gradients':>10s}")
    for name, t in rows:
        print(f"{name:58s} {1e3 * t:10.1f} {t / t_f:10.2f} {t / t_g:10.2f}")
    print("; ".join(summary))


if __name__ == "__main__":
    main()
