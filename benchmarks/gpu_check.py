"""The GPU check of issue 21: one script that a machine with a CUDA device runs in under
8 minutes, writing every table into one markdown file.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out gpu.md           # on the GPU machine
    PYTHONPATH=. python3 benchmarks/gpu_check.py --device cpu --quick   # anywhere: tiny sizes

It needs torch and the repository (plus pytest for the tests part); it installs nothing and
writes only ``--out`` (and, where matplotlib is present, the figure beside it). Parts, in order,
each run as a child process of this script under its own time limit (``LIMITS``; together 460 s).
A part that runs past its limit is stopped; what it printed until then is kept and marked so:

    machine    GPU name and memory, torch, CUDA and cuDNN versions, CPUs, lstmlab's dependencies;
               loads the native core (building it on a fresh machine, timed)
    tests      the CUDA tests: ``pytest -m cuda`` on every test file that marks some
    grid       issue 21's grid, (T, B, I, H) = (100,32,64,256) … (100,1000,2,4):
               lstmlab.TorchLSTM against torch.nn.LSTM (cuDNN on CUDA) with the same weights,
               float32 and float64, training (forward + backward) and inference
    curvature  seed 000's network (lstm97, 2 blocks x 2 cells, float64, B = 1000): the
               Gauss–Newton product against the gradient, and one HF iteration, on the device
    fig4a      seed 000 Fig. 4(a): one loss and gradient, the device against the CPU (all its
               threads), as the network grows (H = 16 … 512), lstmlab and torch.nn.LSTM

``--quick`` runs tiny sizes and one repeat (seconds: what the test of this script runs);
``--device cpu`` runs the same parts on the CPU (the fig4a part then has the CPU column only).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = ("machine", "tests", "grid", "curvature", "fig4a")
LIMITS = {"machine": 90, "tests": 120, "grid": 110, "curvature": 50, "fig4a": 90}  # seconds
TITLES = {
    "machine": "Machine",
    "tests": "CUDA tests",
    "grid": "Issue 21's grid: lstmlab.TorchLSTM against torch.nn.LSTM",
    "curvature": "Gauss–Newton product against the gradient, seed 000's network",
    "fig4a": "Seed 000 Fig. 4(a): the device against the CPU as the network grows",
}
QUICK_GRID = [(5, 2, 3, 4), (6, 1, 2, 3)]


# ---------------------------------------------------------------- parts (child processes)


def part_machine(a) -> None:
    import torch

    rows = [
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("CPUs", f"{os.cpu_count()} (torch threads: {torch.get_num_threads()})"),
        ("torch", torch.__version__),
        ("CUDA (torch built with)", str(torch.version.cuda)),
        ("cuDNN", str(torch.backends.cudnn.version() if torch.cuda.is_available() else None)),
    ]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        rows += [
            (
                "GPU",
                f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability "
                f"{p.major}.{p.minor}, {p.multi_processor_count} SMs",
            ),  # fmt: skip
            ("GPUs visible", str(torch.cuda.device_count())),
        ]
    else:
        rows.append(("GPU", "none (torch.cuda.is_available() is False)"))
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    rows.append(("lstmlab commit", commit or "unknown (no git here)"))
    missing = []
    for mod in ("numpy", "scipy", "safetensors", "rich", "matplotlib", "tomli_w", "pytest"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    rows.append(("missing Python packages", ", ".join(missing) or "none of those this check uses"))
    from lstmlab import TorchLSTM  # noqa: F401  (the package imports before its engines)
    from lstmlab.engines.native import build

    t0 = time.perf_counter()
    loaded = build.load()  # builds on a fresh machine (once; cached)
    took = time.perf_counter() - t0
    rows.append(("native core (CPU)", f"{'loaded' if loaded else 'NOT available'} in {took:.1f} s"))
    print("| what | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |", flush=True)


def part_grid(a) -> None:
    import torch
    from bench_lstm import paired
    from bench_native import GRID, body  # issue 21's grid, one definition
    from torch import nn

    from lstmlab import TorchLSTM

    dev = torch.device(a.device)
    sizes = QUICK_GRID if a.quick else GRID
    repeats = 1 if a.quick else 5
    print("Each cell: time of lstmlab.TorchLSTM / time of torch.nn.LSTM, the median of "
          f"{repeats} paired repeats (below 1: lstmlab faster), then torch.nn.LSTM's median ms. "
          "Training is forward + backward of out.sum(), inference the forward under no_grad; "
          f"device {dev}.", end=" ")  # fmt: skip
    if dev.type == "cuda":
        print("torch.nn.LSTM runs cuDNN; lstmlab runs its Python time loop on the GPU (the "
              "native core is CPU-only, CUDA kernels are a later issue).")  # fmt: skip
    print()
    cols = [(d, m) for d in ("float32", "float64") for m in ("train", "inference")]
    print("\n| (T, B, I, H) | " + " | ".join(f"{d} {m}" for d, m in cols) + " |")
    print("|---|" + "---|" * len(cols), flush=True)
    t_start = time.perf_counter()
    for i, (T, B, I, H) in enumerate(sizes):
        if time.perf_counter() - t_start > 0.75 * a.limit:
            print(f"\n(stopped after {i} of {len(sizes)} rows: the part's time limit)")
            break
        cells = []
        for dtype_name, mode in cols:
            dtype = getattr(torch, dtype_name)
            torch.manual_seed(0)
            ref = nn.LSTM(I, H, dtype=dtype, device=dev)
            ours = TorchLSTM(I, H, dtype=dtype, device=dev)
            ours.load_state_dict(ref.state_dict())
            x = torch.randn(T, B, I, dtype=dtype, device=dev)
            t = paired(body(ref, x, mode), {"ours": body(ours, x, mode)}, repeats)
            cells.append(f"{t.ratio('ours'):.2f} · {t['ref'] * 1e3:.2f} ms")
        print(f"| {T}, {B}, {I}, {H} | " + " | ".join(cells) + " |", flush=True)


def part_curvature(a) -> None:
    import torch
    from bench_curvature import measure, network, synced, timeit

    from lstmlab.objective import Objective
    from lstmlab.optim import HessianFree

    args = argparse.Namespace(
        network="seed000", batch=20 if a.quick else 1000, length=None, hidden=32, inputs=8,
        variant="vanilla", dtype="float64", repeat=1 if a.quick else 5, cg=2 if a.quick else 10,
        no_reference=True, no_hf=True, threads=torch.get_num_threads(), device=a.device,
    )  # fmt: skip
    rows, head, summary = measure(args)
    t_g = dict(rows)["loss + gradient, bptt engine"]
    print(f"`bench_curvature.measure`, {head}, device {a.device}; the fastest of {args.repeat} "
          "interleaved rounds; the fast products (R-forward pass + the bptt engine's backward); "
          f"HF: damping 1e-2, {args.cg} CG iterations, structural weight 1/30.\n")  # fmt: skip
    print("| quantity | ms | gradients |\n|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.1f} | {t / t_g:.2f} |", flush=True)
    # one HF iteration, apart: the rows above stand even if it fails on this device
    model, batch, _ = network(args)
    obj = Objective(model, batch)
    hf = HessianFree(damping=1e-2, lm=None, max_cg=args.cg, cg_tol=0.0, seed=0)
    t = timeit(synced(lambda: hf.step(obj), torch.device(a.device)), max(1, args.repeat // 2))
    print(f"| one HF iteration ({args.cg} CG its, mu=1/30) | {t * 1e3:.1f} | {t / t_g:.2f} |")
    print("\n" + "; ".join(summary), flush=True)


def part_fig4a(a) -> None:
    import torch
    from bench_distributed import gpu_row, plot_gpu

    hidden = [4, 8] if a.quick else [16, 64, 256, 512]
    B, T, repeat = (4, 5, 1) if a.quick else (256, 50, 3)
    devices = [a.device] + (["cpu"] if a.device != "cpu" else [])
    n = torch.get_num_threads()
    print(f"One loss and gradient (`bench_distributed.gpu_row`: vanilla LSTM, bptt engine, "
          f"8 inputs and outputs, B = {B}, T = {T}), median of {repeat} after a warm-up, ms; "
          f"torch.nn.LSTM + a linear head beside it; the CPU with {n} thread{'s' * (n != 1)}. "
          "Speed-up: the CPU's time over the device's.\n")  # fmt: skip
    head = ["H", "dtype"]
    for dev in devices:
        head += [f"{dev} lstmlab", f"{dev} torch.nn.LSTM"]
    if len(devices) == 2:
        head += ["lstmlab speed-up", "torch.nn.LSTM speed-up"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    rows = []
    t_start = time.perf_counter()
    for h in hidden:
        for dtype in (torch.float32, torch.float64):
            if time.perf_counter() - t_start > 0.6 * a.limit:
                print("\n(stopped early: the part's time limit)")
                break
            got = [gpu_row(dev, dtype, h, B, T, repeat) for dev in devices]
            rows += got
            cells = [str(h), str(dtype)[6:]]
            for r in got:
                cells += [f"{r['lstmlab_s'] * 1e3:.2f}", f"{r['torch_nn_lstm_s'] * 1e3:.2f}"]
            if len(got) == 2:
                cells += [f"{got[1][k] / got[0][k]:.1f}" for k in ("lstmlab_s", "torch_nn_lstm_s")]
            print("| " + " | ".join(cells) + " |", flush=True)
        else:
            continue
        break
    if a.figure:
        try:
            plot_gpu({"rows": rows, "batch": B, "length": T}, Path(a.figure))
            print(f"\nFigure: {Path(a.figure).name}")
        except ImportError:
            print("\n(no figure: matplotlib is not installed)")


# ---------------------------------------------------------------- the parent


def _run(cmd: list[str], limit: float, env: dict) -> tuple[str, str, str, float]:
    """Run ``cmd`` in its own process group; stop the group at ``limit`` seconds. Returns the
    status, stdout, stderr and the wall time."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = p.communicate(timeout=limit)
        status = "ok" if p.returncode == 0 else f"FAILED (exit status {p.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the child and what it started (a compiler, say)
        out, err = p.communicate()
        status = f"STOPPED at its time limit ({limit:.0f} s); what it printed is kept"
    return status, out or "", err or "", time.perf_counter() - t0


def cuda_test_files() -> list[str]:
    """The test files that mark some test ``cuda`` (``pytest -m cuda`` selects those tests)."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if re.search(r"^\s*@?pytest\.mark\.cuda\b", p.read_text(errors="replace"), re.M)
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("gpu_check.md"), help="the markdown file")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (seconds)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one part, in a child
    ap.add_argument("--limit", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--figure", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        {"machine": part_machine, "grid": part_grid, "curvature": part_curvature,
         "fig4a": part_fig4a}[a.part](a)  # fmt: skip
        return
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        ap.error(f"--parts {a.parts!r}: give a comma-separated subset of {', '.join(PARTS)}")
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            ap.error("no CUDA device here; --device cpu runs the same parts on the CPU "
                     "(with --quick: tiny sizes, seconds)")  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), env.get("PYTHONPATH")) if x)
    env["PYTHONUNBUFFERED"] = "1"
    out = a.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = out.with_name(out.stem + "_fig4a.png")
    started = datetime.datetime.now(datetime.UTC)
    text = [
        "# GPU check (issue 21)\n",
        f"`{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}` — device {a.device}"
        f"{', quick (tiny sizes, one repeat)' if a.quick else ''}; started "
        f"{started:%Y-%m-%d %H:%M} UTC. Each part ran as a child process under its own time "
        "limit; its status line says how it ended.\n",
    ]
    t_all = time.perf_counter()
    for name in parts:
        limit = LIMITS[name]
        if name == "tests":
            files = cuda_test_files()
            cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfEs",
                   "-p", "no:cacheprovider", *files]  # fmt: skip
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name,
                   "--device", a.device, "--limit", str(limit)]  # fmt: skip
            cmd += ["--quick"] * a.quick + (["--figure", str(figure)] if name == "fig4a" else [])
        print(f"[gpu_check] {name} (limit {limit} s) …", flush=True)
        status, stdout, stderr, wall = _run(cmd, limit, env)
        print(f"[gpu_check] {name}: {status}, {wall:.1f} s", flush=True)
        text.append(f"## {TITLES[name]}\n")
        text.append(f"Status: {status}; {wall:.1f} s of its {limit} s.\n")
        if name == "tests":
            counts = re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", stdout)
            text.append(f"`python -m pytest -m cuda {' '.join(files)}`: "
                        + (", ".join(f"{n} {w}" for n, w in counts) or "no summary") + "\n")  # fmt: skip
            text.append("```text\n" + "\n".join(stdout.strip().splitlines()[-40:]) + "\n```\n")
        else:
            text.append(stdout.strip() + "\n")
            if name == "machine":
                print(stdout.strip(), flush=True)
        if status != "ok" and stderr.strip():
            text.append("Last lines on stderr:\n\n```text\n"
                        + "\n".join(stderr.strip().splitlines()[-15:]) + "\n```\n")  # fmt: skip
        if name == "machine" and "NOT available" in stdout:
            env["LSTMLAB_NATIVE"] = "0"  # no later part waits on a build
        elif name == "machine" and status != "ok":
            env["LSTMLAB_NATIVE"] = "0"  # a build stopped at the limit may have left its lock
            text.append("(later parts ran with LSTMLAB_NATIVE=0: the Python loop on the CPU)\n")
        out.write_text("\n".join(text))  # after every part: a stopped run keeps what it had
    text.append(f"---\nTotal: {time.perf_counter() - t_all:.0f} s.\n")
    out.write_text("\n".join(text))
    print(f"[gpu_check] wrote {out}", flush=True)


if __name__ == "__main__":
    main()
