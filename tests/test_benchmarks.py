"""The benchmark scripts that docs/benchmarks.md names, run end to end at tiny sizes on the CPU:
benchmarks/gpu_check.py (issue 21's GPU check), bench_native.py --variants and --per-step,
bench_curvature.py --device."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=timeout, cwd=ROOT
    )


def test_every_cuda_test_is_marked_cuda():
    """gpu_check runs the CUDA tests as ``pytest -m cuda``: every test that skips without CUDA
    carries the mark (in its decorators, or in its module's ``pytestmark``)."""
    unmarked = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        text = path.read_text()
        if re.search(r"pytestmark\s*=.*?pytest\.mark\.cuda", text, re.S):
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("@pytest.mark.skipif") and "cuda.is_available" in line:
                j = i
                while j > 0 and lines[j - 1].startswith("@"):
                    j -= 1
                k = i
                while k < len(lines) and lines[k].startswith("@"):
                    k += 1
                if "@pytest.mark.cuda" not in lines[j:k]:
                    unmarked.append(f"{path.relative_to(ROOT)}:{k + 1}")
    assert not unmarked, f"CUDA tests without @pytest.mark.cuda: {unmarked}"


def test_gpu_check_quick_on_cpu(tmp_path):
    """``gpu_check.py --device cpu --quick`` writes one file with every part, each ended "ok",
    with its table; the CUDA tests are found (and skipped without CUDA). The native core is
    left out (``LSTMLAB_NATIVE=0``): this tests the script, not the core, and needs no build."""
    out = tmp_path / "gpu.md"
    run = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--quick", "--out", str(out)],
        capture_output=True, text=True, env={**ENV, "LSTMLAB_NATIVE": "0"}, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    titles = [s.splitlines()[0] for s in sections]
    assert titles == [
        "Machine",
        "CUDA tests",
        "Issue 21's grid: lstmlab.TorchLSTM against torch.nn.LSTM",
        "Gauss–Newton product against the gradient, seed 000's network",
        "Seed 000 Fig. 4(a): the device against the CPU as the network grows",
    ]
    for s in sections:
        assert "\nStatus: ok;" in s, s
    machine, tests, grid, curvature, fig4a = sections
    assert "| torch | " in machine and "| native core (CPU) |" in machine
    assert "| GPU | " in machine and "| native core (CPU) | NOT available" in machine
    assert "tests/distributed/test_cuda.py" in tests and "test_benchmarks.py" not in tests
    if not torch.cuda.is_available():
        assert "| GPU | none" in machine
        skipped = re.search(r"`python -m pytest -m cuda .*`: (\d+) skipped", tests)
        assert skipped and int(skipped.group(1)) >= 16, tests
    assert len([ln for ln in grid.splitlines() if re.match(r"\| \d+, \d+, \d+, \d+ \|", ln)]) == 2
    assert re.search(r"\| GN product, fast \| [\d.]+ \| [\d.]+ \|", curvature)
    assert "GN product (fast) / gradient:" in curvature
    assert len([ln for ln in fig4a.splitlines() if re.match(r"\| \d+ \| float", ln)]) == 4
    assert "Total:" in text
    assert "[gpu_check] wrote" in run.stdout and "| torch |" in run.stdout  # the machine, printed


def test_gpu_check_refuses_bad_parts_and_missing_cuda(tmp_path):
    script = str(BENCH / "gpu_check.py")
    bad = _run(script, "--device", "cpu", "--parts", "grid,nope", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2
    assert "give a comma-separated subset of machine, tests" in bad.stderr.splitlines()[-1]
    if not torch.cuda.is_available():
        nocuda = _run(script, "--out", str(tmp_path / "x"))
        assert nocuda.returncode == 2
        assert "no CUDA device here; --device cpu" in nocuda.stderr.splitlines()[-1]
    one = _run(script, "--device", "cpu", "--quick", "--parts", "machine", "--out", str(tmp_path / "m.md"))  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    assert re.findall(r"^## (.*)$", (tmp_path / "m.md").read_text(), re.M) == ["Machine"]


def test_bench_native_variants():
    """``bench_native.py --variants``: one row per dtype and size, a cell per variant with the
    loop that ran it (every variant, the structured ones included: the native core where it is
    built, with the forced Python loop in brackets)."""
    from lstmlab.engines.native import build

    run = _run(
        str(BENCH / "bench_native.py"), "--variants", "--sizes", "3,2,2,4", "--dtypes", "float64",
        "--repeats", "1", "--python",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [ln for ln in run.stdout.splitlines() if ln.startswith("| float64 | 3, 2, 2, 4 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")][3:]
    assert len(cells) == 11  # NP + the 10 variants of bench_lstm.VARIANTS
    loop = "n" if build.load() else "p"
    for cell in cells:
        assert re.fullmatch(rf"[\d.]+ {loop}" + (r" \([\d.]+\)" if loop == "n" else ""), cell), cell


def test_bench_native_per_step():
    """``bench_native.py --per-step``: a row per shape with torch's and the native loop's cost
    per step, their ratio, and the fixed cost of a call (torch, the loop, the drop-in); a
    malformed shape is one clear line."""
    from lstmlab.engines.native import build

    script = str(BENCH / "bench_native.py")
    if not build.load():
        bad = _run(script, "--per-step", "4,3,5")
        assert bad.returncode == 2 and "native core is not available" in bad.stderr
        return
    run = _run(script, "--per-step", "4,3,5")
    assert run.returncode == 0, run.stderr[-3000:]
    [row] = [ln for ln in run.stdout.splitlines() if ln.startswith("| 4, 3, 5 |")]
    cells = [float(c) for c in row.strip("|").split("|")[1:]]
    assert len(cells) == 6 and all(c > 0 for c in cells[3:])
    # (the ratio is of the unrounded costs: allow for the rounding of both to 0.01 µs)
    if cells[0] >= 0.05:  # (a noisy machine can make a tiny slope 0.00)
        slack = 0.01 + 0.005 * (1 + cells[1] / cells[0]) / cells[0]
        assert cells[2] == pytest.approx(cells[1] / cells[0], abs=slack), row
    train = _run(script, "--per-step", "4,3,5", "--train")
    assert train.returncode == 0, train.stderr[-3000:]
    assert "forward + backward" in train.stdout
    [row] = [ln for ln in train.stdout.splitlines() if ln.startswith("| 4, 3, 5 |")]
    cells = [float(c) for c in row.strip("|").split("|")[1:]]
    assert len(cells) == 6 and all(c > 0 for c in cells[3:])
    assert cells[5] == pytest.approx(
        cells[4] / cells[3], abs=0.01 + 0.5 * (1 + cells[5]) / cells[3]
    )
    bad = _run(script, "--per-step", "4,3")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip().splitlines()[-1].endswith("give 'B,I,H;B,I,H;...' (positive integers)")
    )


def test_bench_curvature_device_option():
    script = str(BENCH / "bench_curvature.py")
    tiny = ["--batch", "2", "--length", "3", "--hidden", "2", "--inputs", "2", "--repeat", "1",
            "--no-reference", "--no-hf"]  # fmt: skip
    ok = _run(script, *tiny, "--device", "cpu")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "GN product (fast) / gradient:" in ok.stdout
    if not torch.cuda.is_available():
        bad = _run(script, *tiny, "--device", "cuda")
        assert bad.returncode != 0
        assert bad.stderr.strip().splitlines()[-1] == "--device cuda: no CUDA device is available"


def test_bench_lstm_layout_section():
    """``bench_lstm.py --sections layout`` (docs/benchmarks.md, "Which layout"): a row per size
    with both layouts' training and inference ratios and the layout ``choose_layout`` picks
    for each mode, as ``bptt.run`` asks it (the native loops where built)."""
    from lstmlab import LSTM
    from lstmlab.engines.bptt import choose_layout
    from lstmlab.engines.native import build

    run = _run(
        str(BENCH / "bench_lstm.py"), "--sections", "layout", "--sizes", "3,32,2,4",
        "--quick", "--threads", "1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [ln for ln in run.stdout.splitlines() if "(3, 32, 2, 4)" in ln]
    assert rows
    spec = LSTM(2, 4).cells[0].spec
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 10
        assert [float(c) > 0 for c in (*cells[2:5], *cells[6:9])] == [True] * 6
        assert cells[5] == choose_layout(spec, 32, native=build.load())
        assert cells[9] == choose_layout(spec, 32, native=build.load(), backward=False)


def test_bench_lstm_layout_section_of_another_variant():
    """``--variant vanilla``: the same table for lstmlab's default cell (peepholes), its layout
    choice the rule's for that cell (16 units: batch-major in both modes where native)."""
    from lstmlab import LSTM
    from lstmlab.engines.bptt import choose_layout
    from lstmlab.engines.native import build

    run = _run(
        str(BENCH / "bench_lstm.py"), "--sections", "layout", "--sizes", "3,8,2,16",
        "--quick", "--threads", "1", "--dtypes", "float32", "--variant", "vanilla",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "vanilla net" in run.stdout
    [row] = [ln for ln in run.stdout.splitlines() if "(3, 8, 2, 16)" in ln]
    cells = [c.strip() for c in row.strip("|").split("|")]
    spec = LSTM(2, 16, variant="vanilla").cells[0].spec
    native = build.load()
    assert cells[5] == choose_layout(spec, 8, torch.float32, native=native)
    assert cells[9] == choose_layout(spec, 8, torch.float32, native=native, backward=False)
