"""lstmlab.TorchLSTM against torch.nn.LSTM (same weights) on issue 21's grid, training and
inference, float32 and float64, 1 and 2 threads — the table of docs/benchmarks.md.

    python benchmarks/bench_native.py                  # the whole grid, 5 paired repeats
    python benchmarks/bench_native.py --repeats 3      # quicker
    python benchmarks/bench_native.py --python         # also the Python loop (the fallback)
    python benchmarks/bench_native.py --best           # also fastest / fastest
    python benchmarks/bench_native.py --sizes '2000,1,64,64'
    python benchmarks/bench_native.py --memory '5000,1,64,64'   # peak memory of one training step
    python benchmarks/bench_native.py --cpu-time       # one-thread cells by CPU time (loaded machine)
    python benchmarks/bench_native.py --variants --threads 1    # the family's variants beside NP
    python benchmarks/bench_native.py --per-step '32,16,16;20,128,128'   # inference: per step + per call
    python benchmarks/bench_native.py --per-step '32,16,16' --train      # the same, forward + backward

Each cell is the median over the repeats of (time of lstmlab) / (time of torch) measured back to
back in the same repeat (below 1: lstmlab is faster). "train" is forward + backward of
``out.sum()``, "inference" the forward under ``torch.no_grad()``. The engine picks its layout
and loop as a user gets them (the native core where it is built, see ``lstmlab.engines.native``);
``--python`` adds, in brackets, the ratio with the Python loop forced (what lstmlab ran before
the native core). The first call of the process builds the native core if the cache lacks it;
it happens before any timing.

``--variants`` times ``lstmlab.LSTM`` of each variant of the family (NP, vanilla, lstm97, the
one-gate-fewer ones, FGR, mLSTM, F-LSTM, G-LSTM) against torch.nn.LSTM of the same (T, B, I, H),
training only, and marks the loop each ran: the native core (``n``) or the Python loop (``p``)
— read off ``native.use_native`` during the warm-up call, not assumed.

``--per-step 'B,I,H;…'`` takes float32 inference (one thread) apart: each call's time at T = 1
and T = 1 + STEPS, as the fastest tenth of many calls, gives a cost per step (the slope) and a
fixed cost per call (the intercept) — for torch.nn.LSTM, for the native loop alone
(``native.torch_lstm`` on the module's weights) and for the drop-in module around it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import VARIANTS, paired, steady_malloc  # noqa: E402

from lstmlab import LSTM, TorchLSTM  # noqa: E402
from lstmlab.engines import native  # noqa: E402
from lstmlab.engines.native import build  # noqa: E402

GRID = [
    (100, 32, 64, 256),
    (200, 32, 50, 256),
    (50, 64, 512, 512),
    (1000, 8, 32, 128),
    (2000, 1, 64, 64),
    (100, 1000, 2, 4),  # seed 000
]
# the variants' table: two batch-major rows of the grid (a wide layer, and batch 1)
VARIANT_SIZES = [(100, 32, 64, 256), (2000, 1, 64, 64)]
# (dtype, mode, threads): the columns, then float64 inference
COLUMNS = [
    ("float32", "train", 1),
    ("float32", "inference", 1),
    ("float32", "train", 2),
    ("float32", "inference", 2),
    ("float64", "train", 1),
    ("float64", "inference", 1),
]


def body(module, x, mode: str):
    """One timed call: forward + backward of ``out.sum()`` ("train") or the forward under
    ``no_grad`` ("inference"); on CUDA it waits for the device before returning."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    if mode == "train":

        def run():
            out, _ = module(x)
            out.sum().backward()
            sync()

    else:

        def run():
            with torch.no_grad():
                module(x)
            sync()

    return run


@contextmanager
def loops_seen() -> Iterator[list[bool]]:
    """The answers of ``native.use_native`` inside the block (True: the native loop ran)."""
    seen: list[bool] = []
    real = native.use_native

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    native.use_native = spy
    try:
        yield seen
    finally:
        native.use_native = real


def variants_row(size, dtype_name: str, repeats: int, with_python: bool) -> str:
    """One row of the variants' table: each variant's training time over torch.nn.LSTM's (paired
    median), with ``n``/``p`` for the loop it ran (and the Python loop's ratio in brackets)."""
    T, B, I, H = size
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, dtype=dtype)
    x = torch.randn(T, B, I, dtype=dtype)
    fns, loop = {}, {}
    for name, kw in {"NP": dict(variant="NP"), **VARIANTS}.items():
        if name == "G-LSTM" and (I % 2 or H % 2):
            continue
        fns[name] = body(LSTM(I, H, dtype=dtype, seed=0, **kw), x, "train")
        with loops_seen() as seen:
            fns[name]()
        loop[name] = "n" if seen and all(seen) else "p"
        if with_python and loop[name] == "n":
            fns[f"{name} python"] = python_loop(fns[name])
    t = paired(body(ref, x, "train"), fns, repeats)
    cells = []
    for name in ("NP", *VARIANTS):
        if name not in loop:
            cells.append("—")
            continue
        text = f"{t.ratio(name):.2f} {loop[name]}"
        if f"{name} python" in t:
            text += f" ({t.ratio(name + ' python'):.2f})"
        cells.append(text)
    return (
        f"| {dtype_name} | {', '.join(map(str, size))} | {t['ref'] * 1e3:.1f} | "
        + " | ".join(cells)
        + " |"
    )


def python_loop(fn):
    def run():
        with native.forced_python():
            fn()

    return run


def cell(
    size,
    dtype_name: str,
    mode: str,
    threads: int,
    repeats: int,
    with_python: bool,
    with_best: bool,
    cpu_time: bool = False,
) -> str:
    if cpu_time and threads != 1:
        return "—"  # a thread's CPU time says nothing of a two-thread call's duration
    T, B, I, H = size
    dtype = getattr(torch, dtype_name)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, dtype=dtype)
    ours = TorchLSTM(I, H, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, dtype=dtype)
    fns = {"native": body(ours, x, mode)}
    if with_python:
        fns["python"] = python_loop(body(ours, x, mode))
    t = paired(
        body(ref, x, mode), fns, repeats, time.thread_time if cpu_time else time.perf_counter
    )
    text = f"{t.ratio('native'):.2f}"
    if with_python:
        text += f" ({t.ratio('python'):.2f})"
    if with_best:
        text += f" [{t.best_ratio('native'):.2f}]"
    return text


_MEMORY_CHILD = """
import resource, sys, torch
from torch import nn
from lstmlab import TorchLSTM
from lstmlab.engines.native import build
build.load()
T, B, I, H = (int(v) for v in sys.argv[2].split(","))
torch.set_num_threads(1)
torch.manual_seed(0)
ref = nn.LSTM(I, H)
m = ref if sys.argv[1] == "torch" else TorchLSTM(I, H)
m.load_state_dict(ref.state_dict())
x = torch.randn(T, B, I)
small = torch.randn(2, B, I)
m(small)[0].sum().backward()  # load every kernel first
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m(x)[0].sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def peak_memory(size: tuple[int, ...]) -> str:
    """Growth of the peak resident memory (MB) of a fresh process over one forward + backward
    of ``size``, torch.nn.LSTM and lstmlab.TorchLSTM (float32, one thread)."""
    import subprocess

    out = {}
    for who in ("torch", "lstmlab"):
        arg = ",".join(map(str, size))
        run = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, who, arg], capture_output=True, text=True
        )
        if run.returncode != 0:
            raise SystemExit(f"memory run failed: {run.stderr.strip().splitlines()[-1]}")
        out[who] = int(run.stdout.split()[-1]) / 1024  # ru_maxrss: KiB on Linux
    return (
        f"| {', '.join(map(str, size))} | {out['torch']:.1f} | {out['lstmlab']:.1f} | "
        f"{out['lstmlab'] / max(out['torch'], 1e-9):.2f} |"
    )


PER_STEP_T = 51  # the longer call of --per-step (T = 1 is the other)


def _fastest_tenth(fn, calls: int) -> float:
    """µs of the call at the fastest tenth of ``calls`` runs (after a warm-up)."""
    for _ in range(max(5, calls // 30)):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 10] * 1e6


def _slopes_and_fixed(calls_for, I: int, B: int, calls: int):
    """For each call ``calls_for(x)`` gives (x (T, B, I) at T = 1 and T = PER_STEP_T): its µs
    per step (the slope) and its µs at T = 1 (the fixed cost)."""
    at = {}
    for T in (1, PER_STEP_T):
        x = torch.randn(T, B, I)
        at[T] = [_fastest_tenth(fn, calls) for fn in calls_for(x)]
    per = [(a - b) / (PER_STEP_T - 1) for a, b in zip(at[PER_STEP_T], at[1], strict=True)]
    return per, at[1]


def _pair(I: int, H: int):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H)
    ours = TorchLSTM(I, H)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def per_step_row(B: int, I: int, H: int, calls: int = 1500) -> str:
    """One --per-step row: per-step and fixed µs of torch.nn.LSTM, the native loop alone and
    the drop-in, float32 inference on the threads set (see the module docstring)."""
    ref, ours = _pair(I, H)
    weights = list(ref._flat_weights)
    with torch.no_grad():
        per, fixed = _slopes_and_fixed(
            lambda x: (
                lambda: ref(x),
                lambda: native.torch_lstm(x, weights, None, 1, False, True),
                lambda: ours(x),
            ),
            I,
            B,
            calls,
        )
    return (
        f"| {B}, {I}, {H} | {per[0]:.2f} | {per[1]:.2f} | {per[1] / max(per[0], 1e-9):.2f} | "
        f"{fixed[0]:.0f} | {fixed[1]:.0f} | {fixed[2]:.0f} |"
    )


def per_step_train_row(B: int, I: int, H: int, calls: int = 600) -> str:
    """One --per-step --train row: per-step and fixed µs of forward + backward (of
    ``out.sum()``) for torch.nn.LSTM and the drop-in, float32, on the threads set."""
    ref, ours = _pair(I, H)
    per, fixed = _slopes_and_fixed(
        lambda x: tuple((lambda m=m: m(x)[0].sum().backward()) for m in (ref, ours)), I, B, calls
    )
    return (
        f"| {B}, {I}, {H} | {per[0]:.2f} | {per[1]:.2f} | {per[1] / max(per[0], 1e-9):.2f} | "
        f"{fixed[0]:.0f} | {fixed[1]:.0f} | {fixed[1] / fixed[0]:.2f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=5, help="paired repeats per cell")
    ap.add_argument("--python", action="store_true", help="also time the Python loop")
    ap.add_argument(
        "--best", action="store_true", help="also fastest / fastest time, in square brackets"
    )
    ap.add_argument("--sizes", default=None, help="'T,B,I,H;T,B,I,H;...' instead of the grid")
    ap.add_argument(
        "--memory", default=None, help="'T,B,I,H': peak memory of one training step instead"
    )
    ap.add_argument(
        "--variants",
        action="store_true",
        help="the family's variants against torch.nn.LSTM instead (training; default sizes "
        + "; ".join(",".join(map(str, s)) for s in VARIANT_SIZES)
        + ")",
    )
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the one-thread cells by the thread's CPU time (time.thread_time) instead of "
        "wall time: robust to other processes on a shared machine; two-thread cells are left out",
    )
    ap.add_argument(
        "--per-step",
        default=None,
        help="'B,I,H;...': float32 inference taken apart into a per-step and a fixed cost "
        "(torch.nn.LSTM, the native loop alone, the drop-in) instead",
    )
    ap.add_argument(
        "--train",
        action="store_true",
        help="--per-step: forward + backward instead of inference (torch.nn.LSTM and the drop-in)",
    )
    ap.add_argument("--dtypes", default="float32,float64", help="--variants: comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="--variants, --per-step: torch threads")
    args = ap.parse_args()
    if args.memory:
        try:
            size = tuple(int(v) for v in args.memory.split(","))
        except ValueError:
            size = ()
        if len(size) != 4 or min(size) < 1:
            ap.error(f"--memory {args.memory!r}: give four positive integers T,B,I,H")
        print("peak resident memory growth over one float32 forward + backward, MB")
        print("\n| (T, B, I, H) | torch.nn.LSTM | lstmlab.TorchLSTM | ratio |\n|---|---|---|---|")
        print(peak_memory(size))
        return
    sizes = VARIANT_SIZES if args.variants else GRID
    if args.sizes:
        try:
            sizes = [tuple(int(v) for v in part.split(",")) for part in args.sizes.split(";")]
        except ValueError:
            ap.error(f"--sizes {args.sizes!r}: give 'T,B,I,H;T,B,I,H;...' (integers)")
        if any(len(s) != 4 or min(s) < 1 for s in sizes):
            ap.error(f"--sizes {args.sizes!r}: each size is four positive integers T,B,I,H")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    memory = steady_malloc()
    loaded = build.load()  # build (or load) the native core before any timing
    if args.per_step is not None:
        try:
            shapes = [tuple(int(v) for v in part.split(",")) for part in args.per_step.split(";")]
        except ValueError:
            shapes = [()]
        if any(len(s) != 3 or min(s) < 1 for s in shapes):
            ap.error(f"--per-step {args.per_step!r}: give 'B,I,H;B,I,H;...' (positive integers)")
        if not loaded:
            ap.error("--per-step times the native loop: the native core is not available here")
        torch.set_num_threads(args.threads)
        what, cols, row = (
            ("forward + backward", "drop-in / step | ratio | torch fixed | drop-in fixed | ratio",
             per_step_train_row)
            if args.train
            else ("inference", "native loop / step | ratio | torch fixed | native loop fixed | "
                  "drop-in fixed", per_step_row)
        )  # fmt: skip
        print(
            f"\nfloat32 {what}, {args.threads} thr, µs: the cost of one step (the slope from "
            f"T = 1 to T = {PER_STEP_T}) and of a call at T = 1 (the fixed cost), fastest tenth"
        )
        print(f"\n| B, I, H | torch / step | {cols} |\n|---|---|---|---|---|---|---|")
        for B, I, H in shapes:
            print(row(B, I, H), flush=True)
        return
    print(
        f"torch {torch.__version__}, native core {'loaded' if loaded else 'NOT available'}, "
        f"{memory}, median of {args.repeats} paired repeats"
    )
    if args.variants:
        dtypes = args.dtypes.split(",")
        if any(d not in ("float32", "float64") for d in dtypes) or args.threads < 1:
            ap.error("--dtypes: float32 and/or float64; --threads: >= 1")
        torch.set_num_threads(args.threads)
        print(f"\nlstmlab.LSTM time / torch.nn.LSTM time, forward + backward, {args.threads} thr")
        forced = "; in brackets: the Python loop forced" if args.python else ""
        print(f"(n: the native core ran the layer, p: the Python loop{forced})")
        names = ("NP", *VARIANTS)
        print(f"\n| dtype | (T, B, I, H) | torch ms | {' | '.join(names)} |")
        print("|---|---|---|" + "---|" * len(names))
        for d in dtypes:
            for size in sizes:
                print(variants_row(size, d, args.repeats, args.python), flush=True)
        return
    print("\nlstmlab.TorchLSTM time / torch.nn.LSTM time (below 1: lstmlab faster)")
    if args.python:
        print("(in brackets: the same with the Python loop forced)")
    if args.best:
        print("[in square brackets: lstmlab's fastest time / torch's fastest time]")
    head = " | ".join(f"f{d[5:]} {m}, {n} thr" for d, m, n in COLUMNS)
    print(f"\n| (T, B, I, H) | {head} |")
    print("|---|" + "---|" * len(COLUMNS))
    for size in sizes:
        cells = [
            cell(size, d, m, n, args.repeats, args.python, args.best, args.cpu_time)
            for d, m, n in COLUMNS
        ]
        print(f"| {', '.join(map(str, size))} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
