"""Scale-out measurements (seed 000 Fig. 4): workers, threads, CPU against GPU.

Sections (``--sections``, default all):

    workers  Fig. 4(b): time per iteration of full-batch gradient descent on multiplication
             against the number of workers (1 … --max-workers, processes on this machine,
             one thread each), with equal shards and with speed-proportional shards while
             the last worker is slowed ``--slow`` times (``--slow-worker``). Each point is
             one ``lstmlab train … --workers W`` run; the time per iteration is the median of
             the differences of the logged wall times (evaluation and checkpoints off).
    threads  the thread default: a small ``lstmlab train multiplication`` (and a wide net)
             alone and beside a CPU-bound neighbour (a second ``lstmlab train`` with torch's
             default threads, or ``--neighbour-threads rule``: with lstmlab's default), with
             the default rule, one thread and torch's default.
    gpu      Fig. 4(a): one gradient (forward + backward, bptt engine) of an LSTM layer as
             the network grows, on the CPU and, when CUDA is present, on the GPU (float32
             and float64), plus torch.nn.LSTM (cuDNN on the GPU) for reference.

Writes ``OUT/bench_distributed.json``, ``OUT/fig4b_workers.png`` and ``OUT/fig4a_gpu.png``
and prints markdown tables. The machine may be shared: every number of a table is measured
in the same run, so read the ratios.

    OMP_NUM_THREADS=1 python benchmarks/bench_distributed.py --sections workers --out docs/figures
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID", "OMP_NUM_THREADS"):  # fmt: skip
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _train(args: list[str], run: Path, **env: str) -> list[dict]:
    cmd = [sys.executable, "-m", "lstmlab", "train", *args, "--run-dir", str(run)]
    p = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _per_iteration(records: list[dict], skip: int = 2) -> float:
    walls = [r["wall"] for r in records if "loss" in r]
    steps = [b - a for a, b in zip(walls, walls[1:], strict=False)][skip:]
    return statistics.median(steps)


# ------------------------------------------------------------------------------ Fig. 4(b)
def workers(a, tmp: Path) -> dict:
    base = [
        "multiplication",
        "--task.options.T", str(a.length),
        "--task.options.n_train", str(a.samples),
        "--task.options.n_test", "50",
        "--optimizer.name", "sgd",
        "--optimizer.batch_size", str(a.samples),
        "--optimizer.lr", "0.01",
        "--stop.max_iterations", str(a.iterations),
        "--eval_every", "100000",
        "--checkpoint_every", "100000",
        "--log_every", "1",
        "--progress", "none",
        "--threads", "1",
    ]  # fmt: skip
    rows = []
    for w in range(1, a.max_workers + 1):
        for shards in ("equal", "speed"):
            if w == 1 and shards == "speed":
                continue
            extra = ["--workers", str(w), "--shards", shards]
            if w > 1 and a.slow > 1:
                extra += ["--slow-worker", f"{w - 1}:{a.slow}"]
            run = tmp / f"w{w}-{shards}"
            t = _per_iteration(_train(base + extra, run, OMP_NUM_THREADS="1"))
            rows.append({"workers": w, "shards": shards, "seconds": t})
            print(f"  workers {w} {shards:5s}: {t * 1e3:.1f} ms / iteration", flush=True)
    t1 = rows[0]["seconds"]
    for r in rows:
        r["speedup"] = t1 / r["seconds"]
        r["efficiency"] = r["speedup"] / r["workers"]
    return {"rows": rows, "slow": a.slow, "samples": a.samples, "length": a.length}


def plot_workers(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    rows = res["rows"]
    t1 = rows[0]["seconds"]
    ws = sorted({r["workers"] for r in rows})
    for shards, style in (("equal", "o-"), ("speed", "s-")):
        pts = [
            (r["workers"], r["seconds"]) for r in rows if r["shards"] == shards or r["workers"] == 1
        ]
        ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], style, label=f"{shards} shards")
    ax.plot(ws, [t1 / w * 1e3 for w in ws], "k:", label="ideal (time / W)")
    ax.set_xticks(ws)
    ax.set_xlabel("workers (processes on one machine)")
    ax.set_ylabel("time per iteration (ms)")
    ax.set_title(f"Fig. 4(b): full-batch gradient, last worker {res['slow']:g}x slower")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ threads
def threads(a, tmp: Path) -> dict:
    import torch

    cores = os.cpu_count() or 1
    all_jobs = {
        "small (H=4, multiplication)": ["multiplication", "--task.options.T", "50",
                                        "--task.options.n_train", "1000"],
        "wide (H=128)": ["multiplication", "--task.options.T", "50", "--task.options.n_train",
                         "200", "--model.blocks", "64"],
    }  # fmt: skip
    jobs = {k: v for k, v in all_jobs.items() if k.split()[0] in a.thread_jobs}
    settings = {
        "rule": [],
        "1 thread": ["--threads", "1"],
        "torch default": ["--threads", str(torch.get_num_threads())],
    }
    common = ["--stop.max_iterations", "3", "--progress", "none", "--eval_every", "100000",
              "--checkpoint_every", "100000", "--optimizer.iterations_per_batch", "3"]  # fmt: skip
    rows = []
    for job, args in jobs.items():
        for neighbour in (False, True):
            nb = None
            if neighbour:  # a CPU-bound neighbour: a second lstmlab train, torch's threads
                nb = subprocess.Popen(
                    [sys.executable, "-m", "lstmlab", "train", "multiplication",
                     "--task.options.T", "100", "--task.options.n_train", "4000",
                     "--stop.max_iterations", "100000", "--progress", "none",
                     *([] if a.neighbour_threads == "rule" else ["--threads", str(cores)]),
                     "--run-dir", str(tmp / f"nb-{len(rows)}")],
                    env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(8)  # let it start computing
            try:
                for name, flags in settings.items():
                    run = tmp / f"t{len(rows)}"
                    recs = _train(args + common + flags, run)
                    wall = recs[-1]["wall"]
                    rows.append(
                        {"job": job, "neighbour": neighbour, "threads": name, "seconds": wall}
                    )
                    (a.out / "threads_partial.json").write_text(json.dumps(rows, indent=1))
                    print(
                        f"  {job:28s} neighbour={neighbour!s:5s} {name:13s} {wall:7.2f} s",
                        flush=True,
                    )
            finally:
                if nb is not None:
                    nb.kill()
                    nb.wait()
    return {"rows": rows, "cores": cores, "torch_default": torch.get_num_threads(),
            "neighbour_threads": a.neighbour_threads}  # fmt: skip


# ------------------------------------------------------------------------------ Fig. 4(a)
def gpu(a, tmp: Path) -> dict:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.set_num_threads(a.cpu_threads)
    rows = []
    for dev in devices:
        for dtype in (torch.float32, torch.float64):
            for h in a.hidden:
                rows.append(gpu_row(dev, dtype, h, a.batch, a.length, a.repeat))
                print(f"  {dev:4s} {rows[-1]['dtype']} H={h:4d}: lstmlab "
                      f"{rows[-1]['lstmlab_s'] * 1e3:8.2f} ms, torch.nn.LSTM "
                      f"{rows[-1]['torch_nn_lstm_s'] * 1e3:8.2f} ms", flush=True)  # fmt: skip
    return {"rows": rows, "batch": a.batch, "length": a.length, "cpu_threads": a.cpu_threads,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}  # fmt: skip


def gpu_row(dev: str, dtype, h: int, B: int, T: int, repeat: int) -> dict:
    """One point of Fig. 4(a): the median time of one loss and gradient of lstmlab (``Objective``,
    bptt engine, vanilla LSTM of ``h`` cells, 8 inputs and outputs, squared error at every step,
    B sequences of length T) and of torch.nn.LSTM + a linear head (cuDNN on CUDA)."""
    import torch

    from lstmlab.data import Batch
    from lstmlab.nn.sequence_model import SequenceModel
    from lstmlab.objective import Objective

    g = torch.Generator().manual_seed(0)
    I = 8
    x = torch.randn(B, T, I, generator=g, dtype=dtype).to(dev)
    y = torch.randn(B, T, I, generator=g, dtype=dtype).to(dev)
    batch = Batch(x, y, torch.full((B,), T, device=dev))
    model = SequenceModel(I, h, I, variant="vanilla", dtype=dtype, device=dev, seed=0)
    obj = Objective(model, batch)
    ours = _time(lambda o=obj: o.loss_and_grad(), dev, repeat)
    ref = torch.nn.LSTM(I, h, batch_first=True).to(dev, dtype)
    head = torch.nn.Linear(h, I).to(dev, dtype)

    def nn_step(ref=ref, head=head, x=x, y=y, n=B * T):
        out, _ = ref(x)
        loss = ((head(out) - y) ** 2).sum() / (2 * n)
        loss.backward()

    theirs = _time(nn_step, dev, repeat)
    return {"device": dev, "dtype": str(dtype).removeprefix("torch."), "hidden": h,
            "lstmlab_s": ours, "torch_nn_lstm_s": theirs}  # fmt: skip


def _time(fn, dev: str, repeat: int) -> float:
    import torch

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def plot_gpu(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for dev in sorted({r["device"] for r in res["rows"]}):
        for dtype, style in (("float32", "-"), ("float64", "--")):
            pts = [r for r in res["rows"] if r["device"] == dev and r["dtype"] == dtype]
            ax.plot([r["hidden"] for r in pts], [r["lstmlab_s"] * 1e3 for r in pts], "o" + style,
                    label=f"{dev} {dtype}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("LSTM cells H")
    ax.set_ylabel("one gradient (ms)")
    ax.set_title(f"Fig. 4(a): B={res['batch']}, T={res['length']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=["workers", "threads", "gpu"],
                    choices=["workers", "threads", "gpu"])  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("bench-distributed"))
    ap.add_argument("--max-workers", type=int, default=3)
    ap.add_argument("--samples", type=int, default=3000, help="Fig. 4(b): training sequences")
    ap.add_argument("--length", type=int, default=50, help="sequence length T")
    ap.add_argument("--iterations", type=int, default=12, help="Fig. 4(b): iterations per run")
    ap.add_argument("--slow", type=float, default=2.0, help="Fig. 4(b): the slow worker's factor")
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 64, 256, 512])
    ap.add_argument("--batch", type=int, default=256, help="Fig. 4(a): sequences per batch")
    ap.add_argument("--cpu-threads", type=int, default=1, help="Fig. 4(a): CPU threads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--thread-jobs", nargs="+", default=["small", "wide"],
                    choices=["small", "wide"], help="threads: which jobs")  # fmt: skip
    ap.add_argument("--neighbour-threads", default="torch", choices=["torch", "rule"],
                    help="threads: the neighbour's threads (torch's default, or our rule)")  # fmt: skip
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "bench_distributed.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for section in a.sections:
            print(f"## {section}", flush=True)
            results[section] = globals()[section](a, Path(tmp))
            results[section]["command"] = " ".join(sys.argv)
            path.write_text(json.dumps(results, indent=2) + "\n")
    if "workers" in results:
        plot_workers(results["workers"], a.out / "fig4b_workers.png")
    if "gpu" in results:
        plot_gpu(results["gpu"], a.out / "fig4a_gpu.png")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
