"""Forward+backward time of lstmlab's engines against torch.nn.LSTM, measured in the same run.

    python benchmarks/bench_lstm.py                 # the issue's sizes, float32 and float64
    python benchmarks/bench_lstm.py --quick         # small sizes only, fewer repeats
    python benchmarks/bench_lstm.py --sections loop # only batch-vs-per-sample (seed 000 Fig. 3(b))

Prints markdown tables of ratios (time / reference time; < 1 means faster than the reference).
Absolute times on a shared machine mean little, so each candidate is timed interleaved with its
reference and the median of the repeats is kept.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from lstmlab import LSTM

SIZES = [(100, 1000, 2, 4), (100, 10000, 2, 4), (200, 32, 50, 256), (200, 128, 50, 512), (10, 1000, 10, 100)]
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
    "of one, plus 3 multiply-adds forward and 3 backward per step",
    "lstm97": "2 cells per block (block sums in the backward), full gate recurrence (one more "
    "small matmul per step each way), bipolar activations, peepholes",
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
    def run():
        out, (h, c) = module(x)
        out.sum().backward()

    return run


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired(ref_fn, fns: dict, repeats: int) -> dict[str, float]:
    """Interleave the reference and each candidate; return median times."""
    ref_fn()
    for f in fns.values():
        f()
    times = {"ref": [], **{k: [] for k in fns}}
    for _ in range(repeats):
        for k, f in [("ref", ref_fn), *fns.items()]:
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def repeats_for(T, B, I, H, quick):
    work = T * B * H * (I + H)
    r = 3 if work > 1e9 else (5 if work > 1e8 else 10)
    return max(2, r // 2) if quick else r


def section_torch(sizes, dtypes, quick):
    print("\n## bptt engine vs torch.nn.LSTM (forward + backward)\n")
    print("torch.nn.LSTM runs oneDNN's fused RNN kernel in float32 on CPU (its default); the")
    print("'torch native' column is torch.nn.LSTM with oneDNN disabled (its ATen cell loop).\n")
    print("| dtype | (T, B, I, H) | torch.nn.LSTM ms | NP (same net) ratio | vanilla (peepholes) ratio "
          "| torch native ratio |")
    print("|---|---|---|---|---|---|")
    for dtype in dtypes:
        for T, B, I, H in sizes:
            torch.manual_seed(0)
            ref = nn.LSTM(I, H, dtype=dtype)
            np_ = LSTM.from_torch(ref)
            van = LSTM(I, H, variant="vanilla", dtype=dtype, seed=0)
            x = torch.randn(T, B, I, dtype=dtype)
            native = fwd_bwd(ref, x)

            def without_onednn(run=native):
                with torch.backends.mkldnn.flags(enabled=False):
                    run()

            t = paired(fwd_bwd(ref, x),
                       {"NP": fwd_bwd(np_, x), "vanilla": fwd_bwd(van, x), "native": without_onednn},
                       repeats_for(T, B, I, H, quick))
            print(f"| {str(dtype)[6:]} | {(T, B, I, H)} | {t['ref'] * 1e3:.1f} | "
                  f"{t['NP'] / t['ref']:.2f} | {t['vanilla'] / t['ref']:.2f} | "
                  f"{t['native'] / t['ref']:.2f} |", flush=True)


def section_variants(sizes, dtypes, quick):
    print("\n## variants vs torch.nn.LSTM of the same (T, B, I, H) (forward + backward)\n")
    print("| dtype | (T, B, I, H) | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for dtype in dtypes:
        for T, B, I, H in sizes:
            torch.manual_seed(0)
            ref = nn.LSTM(I, H, dtype=dtype)
            x = torch.randn(T, B, I, dtype=dtype)
            mods = {}
            for name, kw in VARIANTS.items():
                if name == "G-LSTM" and (I % 2 or H % 2):
                    continue
                mods[name] = fwd_bwd(LSTM(I, H, dtype=dtype, seed=0, **kw), x)
            t = paired(fwd_bwd(ref, x), mods, repeats_for(T, B, I, H, quick))
            cells = [f"{t[n] / t['ref']:.2f}" if n in t else "—" for n in VARIANTS]
            print(f"| {str(dtype)[6:]} | {(T, B, I, H)} | " + " | ".join(cells) + " |", flush=True)
    print("\nExtra work per variant:\n")
    for name, why in EXTRA_WORK.items():
        print(f"- {name}: {why}")


LAYOUT_SIZES = [(100, 1000, 2, 16), (100, 1000, 10, 32), (50, 1000, 10, 64), (50, 32, 10, 64),
                (50, 32, 10, 32)]


def section_layout(sizes, dtypes, quick):
    """Both layouts of the bptt engine, forced, against torch.nn.LSTM: where bptt.choose_layout
    should switch from feature-major to batch-major."""
    from lstmlab.engines.bptt import choose_layout, forced_layout

    print("\n## bptt layouts: feature-major vs batch-major, NP net, ratio to torch.nn.LSTM\n")
    print("| dtype | (T, B, I, H) | torch.nn.LSTM ms | feature-major | batch-major | chosen |")
    print("|---|---|---|---|---|---|")
    for dtype in dtypes:
        for T, B, I, H in sizes:
            torch.manual_seed(0)
            ref = nn.LSTM(I, H, dtype=dtype)
            ours = LSTM.from_torch(ref)
            x = torch.randn(T, B, I, dtype=dtype)

            run = fwd_bwd(ours, x)

            def forced(name, run=run):
                def go():
                    with forced_layout(name):
                        run()
                return go

            t = paired(fwd_bwd(ref, x), {"features": forced("features"), "batch": forced("batch")},
                       repeats_for(T, B, I, H, quick))
            chosen = choose_layout(ours.cells[0].spec, B)
            print(f"| {str(dtype)[6:]} | {(T, B, I, H)} | {t['ref'] * 1e3:.1f} | "
                  f"{t['features'] / t['ref']:.2f} | {t['batch'] / t['ref']:.2f} | {chosen} |",
                  flush=True)


def section_loop(quick):
    """seed 000 Fig. 3(b): matrix-based batch vs looping over the samples, batch 100, T = 10."""
    print("\n## matrix-based batch vs per-sample loop (seed 000 network, lstm97 2 blocks x 2 cells)\n")
    print("| engine | T | B | batch ms | per-sample loop ms | loop / batch |")
    print("|---|---|---|---|---|---|")
    engines = ["bptt", "autograd"]
    from lstmlab.engines import ENGINES

    if "rtrl" in ENGINES:
        engines.append("rtrl")
    for engine in engines:
        for T, B in [(10, 100), (100, 100)]:
            m = LSTM(2, 4, variant="lstm97", cells_per_block=2, gate_sharpness=3.75, engine=engine,
                     dtype=torch.float64, seed=0)
            x = torch.randn(T, B, 2, dtype=torch.float64)
            batch = fwd_bwd(m, x)
            m_loop = LSTM(2, 4, variant="lstm97", cells_per_block=2, gate_sharpness=3.75,
                          engine=f"{engine}:per-sample", dtype=torch.float64, seed=0)
            loop = fwd_bwd(m_loop, x)
            r = 2 if quick else 3
            t = paired(batch, {"loop": loop}, r)
            print(f"| {engine} | {T} | {B} | {t['ref'] * 1e3:.1f} | {t['loop'] * 1e3:.1f} | "
                  f"{t['loop'] / t['ref']:.0f}x |", flush=True)
    if "rtrl-per-sample" in ENGINES:
        print("\n## batched RTRL vs per-sample RTRL (the 1997 rule)\n")
        print("| T | B | rtrl (batched) ms | rtrl-per-sample ms | ratio |")
        print("|---|---|---|---|---|")
        for T, B in [(10, 100), (100, 100)]:
            mk = lambda e: LSTM(2, 4, variant="lstm97", cells_per_block=2, gate_sharpness=3.75,  # noqa: E731
                                engine=e, dtype=torch.float64, seed=0)
            x = torch.randn(T, B, 2, dtype=torch.float64)
            t = paired(fwd_bwd(mk("rtrl"), x), {"ps": fwd_bwd(mk("rtrl-per-sample"), x)}, 3)
            print(f"| {T} | {B} | {t['ref'] * 1e3:.1f} | {t['ps'] * 1e3:.1f} | {t['ps'] / t['ref']:.0f}x |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and fewer repeats")
    ap.add_argument("--sections", default="torch,variants,loop",
                    help="comma-separated subset of: torch, variants, layout, loop")
    ap.add_argument("--dtypes", default="float32,float64", help="comma-separated: float32, float64")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    sizes = QUICK_SIZES if args.quick else SIZES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device cpu{' (quick)' if args.quick else ''}")
    sections = args.sections.split(",")
    if "torch" in sections:
        section_torch(sizes, dtypes, args.quick)
    if "variants" in sections:
        section_variants([s for s in sizes if s[3] <= 256], dtypes, args.quick)
    if "layout" in sections:
        section_layout(sizes + ([] if args.quick else LAYOUT_SIZES), dtypes, args.quick)
    if "loop" in sections:
        section_loop(args.quick)


if __name__ == "__main__":
    main()
