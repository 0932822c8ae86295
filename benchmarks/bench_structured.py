"""F-LSTM and G-LSTM against the LSTM of the same state size: forward + backward time per
training step of one layer in the bptt engine, beside the ratio of multiply-adds.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_structured.py [--sizes 512 1024]
        [--batch 32] [--steps 35] [--repeats 7] [--dtype float32] [--proj P]

Each size times the LSTM and its structured twins in one run, round-robin (one call of each in
turn, ``--repeats`` rounds, after a warm-up), so that a change of the machine's load hits all
of them alike; the ratio is each variant's median over the LSTM's median (the best-time ratio
beside it). The layer reads inputs of size I = H (a layer inside a stack) — or p with
``--proj p``, then with a projection of size p — and has no peepholes. The multiply-add ratio
counts the products of the map [x_t, y_{t-1}] → gates only (``structured.multiply_adds``); the
elementwise work, the same in every variant, is not in it, so the measured ratio stays above it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lstmlab import LSTM
from lstmlab.engines.structured import multiply_adds


def variants(H: int) -> dict[str, dict]:
    return {
        "LSTM": {},
        f"F-LSTM r={H // 4}": dict(variant="F-LSTM", factorization_rank=H // 4),
        "G-LSTM k=2": dict(variant="G-LSTM", groups=2),
        "G-LSTM k=4": dict(variant="G-LSTM", groups=4),
    }


def bench(H: int, B: int, T: int, repeats: int, dtype, proj: int | None) -> list[dict]:
    I = proj or H
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, I, generator=g, dtype=dtype)
    layers = {
        name: LSTM(I, H, proj_size=proj, peepholes=False, dtype=dtype, seed=0, **kw)
        for name, kw in variants(H).items()
    }

    def step(m):
        out, _ = m(x)
        out.sum().backward()

    times: dict[str, list[float]] = {n: [] for n in layers}
    for m in layers.values():  # warm-up
        step(m)
    for _ in range(repeats):
        for name, m in layers.items():
            t0 = time.perf_counter()
            step(m)
            times[name].append(time.perf_counter() - t0)
    ref = layers["LSTM"].cells[0].spec
    rows = []
    for name, m in layers.items():
        rows.append(
            dict(
                H=H,
                name=name,
                median=statistics.median(times[name]),
                best=min(times[name]),
                macs=multiply_adds(m.cells[0].spec) / multiply_adds(ref),
            )
        )
    for r in rows:
        r["ratio"] = r["median"] / rows[0]["median"]
        r["best_ratio"] = r["best"] / rows[0]["best"]
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="state sizes H")
    p.add_argument("--batch", type=int, default=32, help="sequences per step")
    p.add_argument("--steps", type=int, default=35, help="time steps per sequence")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--proj", type=int, default=None, help="projection size p (LSTMP)")
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    print(
        f"B = {a.batch}, T = {a.steps}, {a.dtype}, {torch.get_num_threads()} thread(s), "
        f"proj = {a.proj}, {a.repeats} rounds"
    )
    print(
        "| H | model | ms per step (median) | × LSTM (median) | × LSTM (best) | multiply-adds × LSTM |"
    )
    print("|---|---|---|---|---|---|")
    for H in a.sizes:
        for r in bench(H, a.batch, a.steps, a.repeats, dtype, a.proj):
            print(
                f"| {r['H']} | {r['name']} | {r['median'] * 1e3:.1f} | {r['ratio']:.2f} | "
                f"{r['best_ratio']:.2f} | {r['macs']:.3f} |"
            )


if __name__ == "__main__":
    main()
