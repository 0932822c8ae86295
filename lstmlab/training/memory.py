"""Will a run fit in memory? A lower bound, checked before anything large is allocated.

``build.build_all`` calls ``check_task`` before the task is generated and ``check_model``
before the model is built. Each sums a *lower bound* of what the next stage must hold and
refuses, with a ``ConfigError`` naming the option that dominates, only when even that bound
exceeds the memory available (``/proc/meminfo`` MemAvailable on Linux, the free device
memory on CUDA; ``$LSTMLAB_MEMORY_LIMIT`` in bytes overrides both). A lower bound never
refuses a run that fits; a run refused needs at least the amount the message states.

Terms (bytes; ``f`` = 8 for float64, 4 for float32):
    task data     generated tasks (options n_train, n_valid, n_test, T): sequences x T x 4
    parameters    recurrent H·(I + H)·g (g = 1 rnn/mrnn/lstm, 3 gru) + output O·H, times f
    optimizer     L-BFGS 2·m vectors, HF 4, CG 3, others 2 -- each P·f
    activations   BPTT keeps at least 4 numbers per cell and step: 4·B·T_max·H·f for the
                  minibatch B, the same for an evaluation chunk, plus the inputs B·T_max·I·f
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lstmlab.training.config import ConfigError, RunConfig

__all__ = ["Estimate", "available_bytes", "check_task", "check_model", "format_bytes"]

GiB = 1024**3


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a run may still take (None: unknown, no check)."""
    env = os.environ.get("LSTMLAB_MEMORY_LIMIT")
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info()[0])
        except Exception:
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class Estimate:
    """Lower-bound terms: ``{option key: bytes}``; the largest names the error."""

    terms: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.terms.values()))

    def check(self, available: int | None, stage: str) -> None:
        if available is None or self.total <= available:
            return
        key = max(self.terms, key=self.terms.__getitem__)
        raise ConfigError(
            key,
            f"{stage} needs at least {format_bytes(self.total)} of memory "
            f"({format_bytes(available)} available); reduce {key}",
        )


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None


def task_estimate(cfg: RunConfig) -> Estimate:
    """Generated tasks only (a corpus read from disk is bounded by its files)."""
    opts = cfg.task.options  # builders' own defaults are small sizes
    T = _int(opts.get("T")) or 10
    est = Estimate()
    for key in ("n_train", "n_valid", "n_test"):
        n = _int(opts.get(key))
        if n is not None:
            est.terms[f"task.options.{key}"] = 4.0 * n * T
    if est.terms and _int(opts.get("T")):
        # the sequence length multiplies every split: blame T when it is the larger factor
        n_max = max(_int(opts.get(k)) or 0 for k in ("n_train", "n_valid", "n_test"))
        if T > n_max:
            est.terms = {"task.options.T": est.total}
    return est


def model_estimate(cfg: RunConfig, task: Any) -> Estimate:
    f = 8.0 if cfg.precision == "float64" else 4.0
    m = cfg.model
    H = m.hidden_size  # every cell gets blocks x cells_per_block units (build.build_model)
    I, O = int(task.input_size), int(task.output_size)
    g = 3 if m.cell == "gru" else 1
    P = H * (I + H) * g + O * H
    opt = cfg.optimizer
    vectors = {"lbfgs": 2 * (opt.history or 10), "hf": 4, "cg": 3}.get(opt.name, 2)
    T = max(int(task.train.max_length), int(task.test.max_length), 1)
    B = min(opt.batch_size, len(task.train))
    # build.evaluate's chunk: EVAL_CHUNK rows at most, EVAL_ELEMENTS numbers (build.eval_width)
    E = min(1000, len(task.test), max(1, 25_000_000 // (T * (I + O + 6 * H))))
    activations = (4 * (B + E) * T * H + (B + E) * T * I) * f
    act_key = "optimizer.batch_size" if B > max(E, H) else "model.blocks"
    est = Estimate({"model.blocks": (1 + vectors) * P * f})
    est.terms[act_key] = est.terms.get(act_key, 0.0) + activations
    return est


def check_task(cfg: RunConfig) -> None:
    task_estimate(cfg).check(available_bytes(cfg.device), "the task's data")


def check_model(cfg: RunConfig, task: Any) -> None:
    model_estimate(cfg, task).check(available_bytes(cfg.device), "this run")
