"""A tiny multiplication run that takes a second, shared by the training and CLI tests.

(A plain module on pytest's ``pythonpath``: importing helpers from a ``conftest`` by name breaks
as soon as another folder has a ``conftest.py`` of its own.)
"""

from __future__ import annotations

# T = 20 (the 1997 minimum), 60 training / 40 test sequences in batches of 20, 2 L-BFGS
# iterations per minibatch: a few milliseconds per iteration.
TINY = {
    "task.options.T": "20",
    "task.options.n_train": "60",
    "task.options.n_test": "40",
    "optimizer.batch_size": "20",
    "optimizer.iterations_per_batch": "2",
    "stop.max_iterations": "8",
    "stop.max_epochs": "100",
}


def tiny_flags(**changes: str) -> list[str]:
    flags = {**TINY, **changes}
    out: list[str] = []
    for k, v in flags.items():
        out += [f"--{k}", v]
    return out


def train_tiny(run_dir, *extra: str, progress: str = "none", **changes: str) -> int:
    """``lstmlab train multiplication`` of the tiny run into ``run_dir``; its exit code."""
    from lstmlab.cli import main

    argv = ["train", "multiplication", "--run-dir", str(run_dir), "--progress", progress]
    return main([*argv, *tiny_flags(**changes), *extra])
