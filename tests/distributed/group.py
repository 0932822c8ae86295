"""Start a group of real worker processes on localhost (gloo), as torchrun would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(rank: int, world: int, port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]),
        LSTMLAB_DIST_TIMEOUT="60",
    )
    env.update(extra)
    return env


def run_group(scenario: str, world: int, out: Path, timeout: float = 120, **extra) -> list[dict]:
    """Run ``group_worker.py SCENARIO`` on ``world`` ranks; every rank's saved result."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "group_worker.py"), scenario, str(out)],
            env=worker_env(r, world, port, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return [
        torch.load(out / f"rank{r}.pt", weights_only=False)
        if (out / f"rank{r}.pt").exists()
        else {"log": logs[r], "returncode": procs[r].returncode}
        for r in range(world)
    ]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
    ):
        env.pop(key, None)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), LSTMLAB_DIST_TIMEOUT="60")
    env.update(extra)
    return env


def run_cli_group(
    args: list[str], world: int, cwds: list[Path], timeout: float = 180, **extra: str
) -> list[subprocess.CompletedProcess]:
    """``python -m lstmlab ARGS`` as ``world`` ranks, rank r in ``cwds[r]`` (as torchrun's
    workers are started, without the agent)."""
    port = free_port()
    procs = []
    for r in range(world):
        env = worker_env(r, world, port, **extra)
        env["PYTHONPATH"] = str(ROOT)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "lstmlab", *args],
                env=env,
                cwd=cwds[r],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done
