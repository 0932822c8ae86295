"""Forward+backward time of lstmlab's engines against torch.nn.LSTM, measured in the same run.

    python benchmarks/bench_lstm.py                 # the issue's sizes, float32 and float64
    python benchmarks/bench_lstm.py --quick         # small sizes only, fewer repeats
    python benchmarks/bench_lstm.py --sections loop # only batch-vs-per-sample (seed 000 Fig. 3(b))
    python benchmarks/bench_lstm.py --device cuda   # on a GPU: cuDNN is then the reference
    python benchmarks/bench_lstm.py --sections dropin  # lstmlab.TorchLSTM beside torch.nn.LSTM

Prints markdown tables of ratios (time / reference time; < 1 means faster than the reference).
Absolute times on a shared machine mean little, so each candidate is timed interleaved with its
reference and the median of the repeats is kept.

Memory: by default (``--malloc steady``, Linux/glibc) the process keeps freed memory instead of
returning large blocks to the system, so that no call pays first-touch page faults on fresh
buffers. Otherwise whether torch.nn.LSTM's oneDNN workspace (> 32 MB at (200, 32, 50, 256))
faults or not depends on what ran before in the process, and its time moves by 30 %.
``--malloc default`` measures the allocator as it comes.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager
from functools import partial

import torch
from torch import nn

from lstmlab import LSTM, TorchLSTM

SIZES = [
    (100, 1000, 2, 4),
    (100, 10000, 2, 4),
    (200, 32, 50, 256),
    (200, 128, 50, 512),
    (10, 1000, 10, 100),
]
QUICK_SIZES = [(100, 1000, 2, 4), (200, 32, 50, 256), (10, 1000, 10, 100)]
# variant -> extra constructor arguments (cells_per_block=2 where the block structure matters)
VARIANTS = {
    "vanilla": {},
    "lstm97": dict(variant="lstm97", cells_per_block=2),
    "NIG": dict(variant="NIG"),
    "NFG": dict(variant="NFG"),
    "NOG": dict(variant="NOG"),
    "CIFG": dict(variant="CIFG"),
    "FGR": dict(variant="FGR"),
    "mLSTM": dict(variant="mLSTM"),
    "F-LSTM": dict(variant="F-LSTM"),
    "G-LSTM": dict(variant="G-LSTM"),
}
EXTRA_WORK = {
    "vanilla": "peepholes: the output gate needs c_t, so the gates take two sigmoid calls instead "
    "of one, plus 2 multiply-adds forward per step (backward: folded into the derivative factors)",
    "lstm97": "2 cells per block (block sums in the backward, no peephole folding), full gate "
    "recurrence (one more small matmul per step each way), bipolar activations, peepholes",
    "FGR": "full gate recurrence (one more small matmul per step)",
    "mLSTM": "two recurrent matmuls per step (W_mh y, then R m)",
    "F-LSTM": "W2·W1 assembled once per call; same per-step work as a dense LSTM",
    "G-LSTM": "block-diagonal matrices assembled once per call (dense per-step matmul)",
    "NIG": "one gate fewer",
    "NFG": "one gate fewer",
    "NOG": "one gate fewer",
    "CIFG": "one gate fewer, f = 1 - i computed",
}


def fwd_bwd(module, x):
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def run():
        out, (h, c) = module(x)
        out.sum().backward()
        sync()

    return run


def _inside(run, *contexts):
    """A timing body: ``run()`` inside a fresh instance of each context-manager factory."""

    def go():
        with ExitStack() as stack:
            for make in contexts:
                stack.enter_context(make())
            run()

    return go


def _repeated(fn, n: int):
    """A timing body: ``fn()`` n times back to back."""

    def go():
        for _ in range(n):
            fn()

    return go


def steady_malloc() -> str:
    """Keep freed memory in the process (glibc): M_MMAP_THRESHOLD and M_TRIM_THRESHOLD at 1 GiB
    and 2 GiB. Returns what was done, for the header."""
    if not sys.platform.startswith("linux"):
        return "allocator as it comes (not Linux)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 1 << 30) == 1 and libc.mallopt(-1, 1 << 31) == 1
    except (OSError, AttributeError):
        ok = False
    return (
        "glibc keeps freed memory (no first-touch page faults)" if ok else "allocator as it comes"
    )


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Paired(dict):
    """Median times (s) by name ("ref" the reference), and ``ratio(name)``: the median over the
    repeats of name's time over the reference's time in the same repeat. Neighbours in time share
    the machine's load, so the ratio of a pair is steadier than the ratio of two medians."""

    def __init__(self, times: dict[str, list[float]]):
        super().__init__({k: statistics.median(v) for k, v in times.items()})
        self.times = times

    def ratio(self, name: str) -> float:
        return statistics.median(
            a / r for a, r in zip(self.times[name], self.times["ref"], strict=True)
        )

    def best_ratio(self, name: str) -> float:
        """name's fastest time over the reference's fastest: each side at its least load."""
        return min(self.times[name]) / min(self.times["ref"])


def paired(ref_fn, fns: dict, repeats: int, clock=time.perf_counter) -> Paired:
    """Interleave the reference and each candidate, ``repeats`` rounds after one warm-up.
    ``clock``: wall time by default; ``time.thread_time`` counts only the calling thread's CPU
    time (for one-thread timings on a loaded machine: a competing process does not inflate it)."""
    ref_fn()
    for f in fns.values():
        f()
    times = {"ref": [], **{k: [] for k in fns}}
    for _ in range(repeats):
        for k, f in [("ref", ref_fn), *fns.items()]:
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    return Paired(times)


def repeats_for(T, B, I, H, quick):
    work = T * B * H * (I + H)
    r = 5 if work > 1e9 else (11 if work > 1e8 else 15)
    return max(2, r // 3) if quick else r


DEVICE = torch.device("cpu")


@contextmanager
def fused_off():
    """torch.nn.LSTM without its fused kernel: oneDNN off on the CPU, cuDNN off on CUDA."""
    if DEVICE.type == "cuda":
        flags = torch.backends.cudnn.flags(enabled=False)
    else:
        flags = torch.backends.mkldnn.flags(enabled=False)
    with warnings.catch_warnings():
        # setting the oneDNN flags makes torch warn about TF32 on Intel GPUs: not this machine
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with flags:
            yield


def section_torch(sizes, dtypes, quick):
    print("\n## bptt engine vs torch.nn.LSTM (forward + backward)\n")
    if DEVICE.type == "cuda":
        print("torch.nn.LSTM runs cuDNN's fused RNN kernel on CUDA; the 'torch native' column is")
        print("torch.nn.LSTM with cuDNN disabled (its ATen cell loop).\n")
    else:
        print("torch.nn.LSTM runs oneDNN's fused RNN kernel in float32 on CPU (its default); the")
        print("'torch native' column is torch.nn.LSTM with oneDNN disabled (its ATen cell loop).\n")
    print("Ratios: the median of the paired ratios, and in brackets fastest time / fastest time.\n")
    print(
        "| dtype | (T, B, I, H) | torch.nn.LSTM ms | NP (same net) ratio | vanilla (peepholes) ratio "
        "| torch native ratio |"
    )
    print("|---|---|---|---|---|---|")
    for dtype in dtypes:
        for T, B, I, H in sizes:
            torch.manual_seed(0)
            ref = nn.LSTM(I, H, dtype=dtype, device=DEVICE)
            np_ = LSTM.from_torch(ref)
            van = LSTM(I, H, variant="vanilla", dtype=dtype, seed=0).to(DEVICE)
            x = torch.randn(T, B, I, dtype=dtype, device=DEVICE)
            native = _inside(fwd_bwd(ref, x), fused_off)

            t = paired(
                fwd_bwd(ref, x),
                {"NP": fwd_bwd(np_, x), "vanilla": fwd_bwd(van, x), "native": native},
                repeats_for(T, B, I, H, quick),
            )
            print(
                f"| {str(dtype)[6:]} | {(T, B, I, H)} | {t['ref'] * 1e3:.1f} | "
                f"{t.ratio('NP'):.2f} ({t.best_ratio('NP'):.2f}) | "
                f"{t.ratio('vanilla'):.2f} ({t.best_ratio('vanilla'):.2f}) | "
                f"{t.ratio('native'):.2f} |",
                flush=True,
            )


def fwd_bwd_packed(module, x, lengths):
    """Forward + backward of a packed batch (packing included, as a script does it)."""

    def run():
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h, c) = module(packed)
        out.data.sum().backward()

    return run


def section_dropin(sizes, dtypes, quick):
    print("\n## lstmlab.TorchLSTM (the drop-in) vs torch.nn.LSTM (forward + backward)\n")
    print("The same weights (the drop-in loads torch's state_dict). 'engine only' is")
    print("lstmlab.LSTM (variant NP, from_torch) on the same input: the drop-in's own layer")
    print("(row permutation of the weights, bias sum, the double-backward wrapper) is the gap")
    print("between the two. 'packed': both modules fed the same PackedSequence, lengths")
    print("spread over [T/2, T], packing inside the timing; its ratio is against torch packed.\n")
    print("Ratios: the median of the paired ratios, and in brackets fastest time / fastest time.\n")
    print(
        "| dtype | (T, B, I, H) | torch.nn.LSTM ms | TorchLSTM ratio | engine only ratio "
        "| torch packed ms | TorchLSTM packed ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype in dtypes:
        for T, B, I, H in sizes:
            torch.manual_seed(0)
            ref = nn.LSTM(I, H, dtype=dtype, device=DEVICE)
            dropin = TorchLSTM(I, H, dtype=dtype, device=DEVICE)
            dropin.load_state_dict(ref.state_dict())
            engine = LSTM.from_torch(ref)
            x = torch.randn(T, B, I, dtype=dtype, device=DEVICE)
            reps = repeats_for(T, B, I, H, quick)
            t = paired(
                fwd_bwd(ref, x), {"dropin": fwd_bwd(dropin, x), "engine": fwd_bwd(engine, x)}, reps
            )
            lengths = torch.randint(max(1, T // 2), T + 1, (B,))
            lengths[0] = T
            p = paired(
                fwd_bwd_packed(ref, x, lengths),
                {"dropin": fwd_bwd_packed(dropin, x, lengths)},
                reps,
            )
            print(
                f"| {str(dtype)[6:]} | {(T, B, I, H)} | {t['ref'] * 1e3:.1f} | "
                f"{t.ratio('dropin'):.2f} ({t.best_ratio('dropin'):.2f}) | "
                f"{t.ratio('engine'):.2f} ({t.best_ratio('engine'):.2f}) | "
                f"{p['ref'] * 1e3:.1f} | {p.ratio('dropin'):.2f} ({p.best_ratio('dropin'):.2f}) |",
                flush=True,
            )


def section_variants(sizes, dtypes, quick):
    print("\n## variants vs torch.nn.LSTM of the same (T, B, I, H) (forward + backward)\n")
    print("| dtype | (T, B, I, H) | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for dtype in dtypes:
        for T, B, I, H in sizes:
            torch.manual_seed(0)
            ref = nn.LSTM(I, H, dtype=dtype, device=DEVICE)
            x = torch.randn(T, B, I, dtype=dtype, device=DEVICE)
            mods = {}
            for name, kw in VARIANTS.items():
                if name == "G-LSTM" and (I % 2 or H % 2):
                    continue
                mods[name] = fwd_bwd(LSTM(I, H, dtype=dtype, seed=0, **kw).to(DEVICE), x)
            t = paired(fwd_bwd(ref, x), mods, repeats_for(T, B, I, H, quick))
            cells = [f"{t.ratio(n):.2f}" if n in t else "—" for n in VARIANTS]
            print(f"| {str(dtype)[6:]} | {(T, B, I, H)} | " + " | ".join(cells) + " |", flush=True)
    print("\nExtra work per variant:\n")
    for name, why in EXTRA_WORK.items():
        print(f"- {name}: {why}")


def section_split(dtypes, repeats: int = 15):
    """Forward and backward apart, best of ``repeats``, at the size where float32 is tightest."""
    print("\n## forward / backward apart, NP net, (200, 32, 50, 256) (best of the repeats, ms)\n")
    print("| dtype | torch fwd | torch bwd | bptt fwd | bptt bwd | ratio fwd | ratio bwd |")
    print("|---|---|---|---|---|---|---|")
    T, B, I, H = 200, 32, 50, 256
    for dtype in dtypes:
        torch.manual_seed(0)
        ref = nn.LSTM(I, H, dtype=dtype, device=DEVICE)
        ours = LSTM.from_torch(ref)
        x = torch.randn(T, B, I, dtype=dtype, device=DEVICE)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

        def split(m, x=x, sync=sync):
            t0 = time.perf_counter()
            out, _ = m(x)
            loss = out.sum()
            sync()
            t1 = time.perf_counter()
            loss.backward()
            sync()
            return t1 - t0, time.perf_counter() - t1

        split(ref), split(ours)
        runs = {"ref": [], "ours": []}
        for _ in range(repeats):
            runs["ref"].append(split(ref))
            runs["ours"].append(split(ours))
        best = {k: [min(r[i] for r in v) * 1e3 for i in (0, 1)] for k, v in runs.items()}
        (rf, rb), (of, ob) = best["ref"], best["ours"]
        print(
            f"| {str(dtype)[6:]} | {rf:.1f} | {rb:.1f} | {of:.1f} | {ob:.1f} | "
            f"{of / rf:.2f} | {ob / rb:.2f} |",
            flush=True,
        )


def section_activations(dtypes, n: int = 1 << 20, repeats: int = 50):
    """ns per element of torch's CPU tanh and sigmoid, and of the engine's tanh (one sigmoid)."""
    from lstmlab.engines.gates import activation

    print("\n## activations, ns per element (1M elements, best of the repeats)\n")
    print("| dtype | torch.tanh | torch.sigmoid | engine tanh = 2σ(2a) − 1 |")
    print("|---|---|---|---|")
    for dtype in dtypes:
        a = torch.randn(n, dtype=dtype, device=DEVICE)
        out = torch.empty_like(a)
        engine_tanh = activation("tanh", a)
        sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
        cells = []
        for fn in (torch.tanh, torch.sigmoid, None):
            best = float("inf")
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                if fn is None:
                    engine_tanh(a, out)
                else:
                    fn(a, out=out)
                sync()
                best = min(best, time.perf_counter() - t0)
            cells.append(f"{best / n * 1e9:.2f}")
        print(f"| {str(dtype)[6:]} | " + " | ".join(cells) + " |", flush=True)


LAYOUT_SIZES = [
    (100, 1000, 2, 16),
    (100, 1000, 10, 32),
    (50, 1000, 10, 64),
    (50, 32, 10, 64),
    (50, 32, 10, 32),
]


def section_layout(sizes, dtypes, quick, variant="NP"):
    """Both layouts of the bptt engine, forced, against torch.nn.LSTM, training (forward +
    backward) and inference (forward under no_grad): where bptt.choose_layout should switch
    from feature-major to batch-major, with the loops this machine runs (native where built).
    ``variant``: NP (torch's cell, the same net as the reference) or another of the family
    (then read its two layout columns against each other)."""
    from lstmlab.engines import native
    from lstmlab.engines.bptt import LAYOUTS, choose_layout, forced_layout

    print(
        f"\n## bptt layouts: feature-major vs batch-major, {variant} net, ratio to torch.nn.LSTM\n"
    )
    print(
        "| dtype | (T, B, I, H) | torch.nn.LSTM ms | feature-major | batch-major | chosen "
        "| inference: torch ms | feature-major | batch-major | chosen |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dtype in dtypes:
        for T, B, I, H in sizes:
            torch.manual_seed(0)
            ref = nn.LSTM(I, H, dtype=dtype, device=DEVICE)
            if variant == "NP":
                ours = LSTM.from_torch(ref)
            else:
                ours = LSTM(I, H, variant=variant, dtype=dtype, seed=0).to(DEVICE)
            x = torch.randn(T, B, I, dtype=dtype, device=DEVICE)
            reps = repeats_for(T, B, I, H, quick)
            run, inf = fwd_bwd(ours, x), _no_grad(ours, x)
            t = paired(
                fwd_bwd(ref, x),
                {name: _inside(run, partial(forced_layout, name)) for name in LAYOUTS},
                reps,
            )
            u = paired(
                _no_grad(ref, x),
                {name: _inside(inf, partial(forced_layout, name)) for name in LAYOUTS},
                reps,
            )
            spec = ours.cells[0].spec
            fast = native.use_native(spec, x, True, x.device.type == "cpu")
            chosen = choose_layout(spec, B, dtype, native=fast)
            chosen_inf = choose_layout(spec, B, dtype, native=fast, backward=False)
            print(
                f"| {str(dtype)[6:]} | {(T, B, I, H)} | {t['ref'] * 1e3:.1f} | "
                f"{t.ratio('features'):.2f} | {t.ratio('batch'):.2f} | {chosen} "
                f"| {u['ref'] * 1e3:.1f} | {u.ratio('features'):.2f} | {u.ratio('batch'):.2f} "
                f"| {chosen_inf} |",
                flush=True,
            )


def _no_grad(model, x):
    def run():
        with torch.no_grad():
            model(x)

    return run


PRODUCT_GRID = [(B, H) for B in (1, 4, 32, 128, 1000) for H in (64, 128, 256, 512)]


def section_products(sizes, quick):
    """The engine's per-step products on oneDNN's packed weight against BLAS (float32, CPU):
    one product at a grid of batches and widths (the rule behind ``products.MIN_SIDE``), then
    the whole engine with each kind forced, against torch.nn.LSTM."""
    from lstmlab.engines.bptt import forced_layout
    from lstmlab.engines.products import StepProduct, choose_products, forced_products

    print("\n## per-step products: oneDNN (packed weight) vs BLAS, float32\n")
    if DEVICE.type != "cpu":
        print("(CPU only: on CUDA the products are cuBLAS's.)")
        return
    print("One product, the rows of a step times the layer's weight; ratio = oneDNN / BLAS time")
    print("(forward: (B, H)·(H, 4H) added into the pre-activations; backward: (B, 4H)·(4H, H)).\n")
    print("| B | H | BLAS fwd µs | ratio fwd | BLAS bwd µs | ratio bwd | chosen (T = 200) |")
    print("|---|---|---|---|---|---|---|")
    grid = PRODUCT_GRID[::3] if quick else PRODUCT_GRID
    for B, H in grid:
        g = torch.Generator().manual_seed(0)
        R = torch.randn(4 * H, H, generator=g) / H**0.5
        y, pre = torch.randn(B, H, generator=g), torch.randn(B, 4 * H, generator=g)
        dy = torch.empty(B, H)
        kinds = {}
        for kind in ("blas", "onednn"):
            with forced_products(kind):
                kinds[kind] = (StepProduct(R, 200), StepProduct(R.t(), 200))
        n = max(1, min(500, int(1e9 // (8 * B * H * H))))  # ≈ 10 ms of work, ≤ 500 calls
        (fb, bb), (fo, bo) = kinds["blas"], kinds["onednn"]
        tf = paired(
            _repeated(partial(fb.add_, pre, y), n),
            {"o": _repeated(partial(fo.add_, pre, y), n)},
            15,
        )
        tb = paired(
            _repeated(partial(bb.into, dy, pre), n),
            {"o": _repeated(partial(bo.into, dy, pre), n)},
            15,
        )
        print(
            f"| {B} | {H} | {tf['ref'] / n * 1e6:.0f} | {tf.ratio('o'):.2f} | "
            f"{tb['ref'] / n * 1e6:.0f} | {tb.ratio('o'):.2f} | {choose_products(R, 200, B)} |",
            flush=True,
        )

    print("\nThe whole engine (NP net, batch-major), each kind forced; ratio to torch.nn.LSTM:\n")
    print("| (T, B, I, H) | torch.nn.LSTM ms | BLAS | oneDNN | chosen |")
    print("|---|---|---|---|---|")
    for T, B, I, H in [s for s in sizes if s[3] >= 64]:
        torch.manual_seed(0)
        ref = nn.LSTM(I, H)
        ours = LSTM.from_torch(ref)
        x = torch.randn(T, B, I)
        run = fwd_bwd(ours, x)
        batch_major = partial(forced_layout, "batch")
        forced = {
            k: _inside(run, batch_major, partial(forced_products, k)) for k in ("blas", "onednn")
        }
        t = paired(
            fwd_bwd(ref, x),
            forced,
            repeats_for(T, B, I, H, quick),
        )
        chosen = choose_products(ours.cells[0].weights()["R"], T, B)
        print(
            f"| {(T, B, I, H)} | {t['ref'] * 1e3:.1f} | {t.ratio('blas'):.2f} | "
            f"{t.ratio('onednn'):.2f} | {chosen} |",
            flush=True,
        )


# The batch call is timed as this many calls back to back (its time per call is reported), so
# that, like the per-sample loop (100 engine calls), it is measured warm: a single call of a few
# ms timed right after a 200 ms loop pays the loop's cold caches and took about twice as long.
BATCH_CALLS = 20


def section_loop(quick):
    """seed 000 Fig. 3(b): matrix-based batch vs looping over the samples, batch 100, T = 10."""
    print(
        "\n## matrix-based batch vs per-sample loop (seed 000 network, lstm97 2 blocks x 2 cells)\n"
    )
    print("| engine | T | B | batch ms (per call) | per-sample loop ms | loop / batch |")
    print("|---|---|---|---|---|---|")
    engines = ["bptt", "autograd"]
    from lstmlab.engines import ENGINES

    if "rtrl" in ENGINES:
        engines.append("rtrl")
    for engine in engines:
        for T, B in [(10, 100), (100, 100)]:
            m = LSTM(
                2,
                4,
                variant="lstm97",
                cells_per_block=2,
                gate_sharpness=3.75,
                engine=engine,
                dtype=torch.float64,
                seed=0,
            )
            x = torch.randn(T, B, 2, dtype=torch.float64)
            batch = fwd_bwd(m, x)
            m_loop = LSTM(
                2,
                4,
                variant="lstm97",
                cells_per_block=2,
                gate_sharpness=3.75,
                engine=f"{engine}:per-sample",
                dtype=torch.float64,
                seed=0,
            )
            loop = fwd_bwd(m_loop, x)
            r = 2 if quick else 5
            t = paired(_repeated(batch, BATCH_CALLS), {"loop": loop}, r)
            print(
                f"| {engine} | {T} | {B} | {t['ref'] / BATCH_CALLS * 1e3:.2f} | "
                f"{t['loop'] * 1e3:.1f} | {t.ratio('loop') * BATCH_CALLS:.0f}x |",
                flush=True,
            )
    if "rtrl-per-sample" in ENGINES:
        print("\n## batched RTRL vs per-sample RTRL (the 1997 rule)\n")
        print("| T | B | rtrl (batched) ms (per call) | rtrl-per-sample ms | ratio |")
        print("|---|---|---|---|---|")
        for T, B in [(10, 100), (100, 100)]:

            def mk(e):
                return LSTM(
                    2, 4, variant="lstm97", cells_per_block=2, gate_sharpness=3.75, engine=e,
                    dtype=torch.float64, seed=0,
                )  # fmt: skip

            x = torch.randn(T, B, 2, dtype=torch.float64)
            batch = _repeated(fwd_bwd(mk("rtrl"), x), BATCH_CALLS)
            t = paired(batch, {"ps": fwd_bwd(mk("rtrl-per-sample"), x)}, 3)
            print(
                f"| {T} | {B} | {t['ref'] / BATCH_CALLS * 1e3:.2f} | {t['ps'] * 1e3:.1f} | "
                f"{t.ratio('ps') * BATCH_CALLS:.0f}x |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes and fewer repeats")
    ap.add_argument(
        "--sections",
        default="torch,variants,loop",
        help="comma-separated subset of: torch, variants, layout, loop, split, activations, "
        "products, dropin",
    )
    ap.add_argument("--dtypes", default="float32,float64", help="comma-separated: float32, float64")
    ap.add_argument(
        "--sizes",
        default=None,
        help="'T,B,I,H;T,B,I,H;...' instead of the issue's sizes (torch, variants, layout)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    ap.add_argument(
        "--variant",
        default="NP",
        help="the layout section's cell: NP (torch's, default) or another variant of the family",
    )
    ap.add_argument(
        "--device", default="cpu", help="cpu or cuda (the loop section stays on the CPU)"
    )
    ap.add_argument(
        "--malloc",
        choices=["steady", "default"],
        default="steady",
        help="steady: keep freed memory in the process (see the module docstring)",
    )
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    memory = steady_malloc() if args.malloc == "steady" else "allocator as it comes"
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    sizes = QUICK_SIZES if args.quick else SIZES
    extra = [] if args.quick else LAYOUT_SIZES
    if args.sizes:
        try:
            sizes = [tuple(int(v) for v in part.split(",")) for part in args.sizes.split(";")]
        except ValueError:
            ap.error(f"--sizes {args.sizes!r}: give 'T,B,I,H;T,B,I,H;...' (integers)")
        if any(len(size) != 4 or min(size) < 1 for size in sizes):
            ap.error(f"--sizes {args.sizes!r}: each size is four positive integers T,B,I,H")
        extra = []
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {where}, "
        f"{memory}{' (quick)' if args.quick else ''}"
    )
    sections = args.sections.split(",")
    if "torch" in sections:
        section_torch(sizes, dtypes, args.quick)
    if "variants" in sections:
        section_variants([s for s in sizes if s[3] <= 256], dtypes, args.quick)
    if "layout" in sections:
        section_layout(sizes + extra, dtypes, args.quick, args.variant)
    if "loop" in sections:
        section_loop(args.quick)
    if "split" in sections:
        section_split(dtypes)
    if "activations" in sections:
        section_activations(dtypes)
    if "products" in sections:
        section_products(sizes, args.quick)
    if "dropin" in sections:
        section_dropin(sizes, dtypes, args.quick)


if __name__ == "__main__":
    main()
