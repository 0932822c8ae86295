"""A worker of a test group: ``python group_worker.py SCENARIO OUT_DIR`` with torchrun's
environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) set by ``tests/distributed/group.py``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import scenarios
import torch

from lstmlab.distributed import DistributedObjective, comm, split_counts
from lstmlab.objective import Objective


def sharded(model, batch):
    counts = split_counts(len(batch), list(scenarios.WEIGHTS[: comm.get_world_size()]))
    start = sum(counts[: comm.get_rank()])
    rows = torch.arange(start, start + counts[comm.get_rank()])
    local = Objective(model, batch.index(rows)) if rows.numel() else None
    return DistributedObjective(local, model)


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    comm.init_from_env()
    rank = comm.get_rank()
    if scenario == "equivalence":
        result = scenarios.compute(sharded)
    elif scenario == "core":
        result = scenarios.compute(sharded, optimizers=scenarios.CORE)
        # a wall-clock decision ("have eval_seconds passed?"): each rank's own answer differs
        # here on purpose; the loop must act on rank 0's everywhere
        from lstmlab.distributed.session import Session

        result["agreed"] = [Session().agree()(rank == 0), Session().agree()(rank != 0)]
    elif scenario == "hang":  # rank 1 never joins the all-reduce: rank 0 must time out
        if rank == 1:
            time.sleep(15)
            return
        t0 = time.perf_counter()
        try:
            comm.all_reduce_sum(torch.ones(3))
            result = {"error": None}
        except comm.DistributedError as err:
            result = {"error": str(err)}
        result["seconds"] = time.perf_counter() - t0
    elif scenario == "mismatch":  # rank 1 holds another config
        try:
            comm.check_same({"lr": 0.1 if rank == 0 else 0.2}, "the run configuration")
            result = {"error": None}
        except comm.DistributedError as err:
            result = {"error": str(err)}
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    torch.save(result, out / f"rank{rank}.pt")
    if scenario == "core":  # then a whole run in the same group, rank r in OUT/cwd{r}
        from lstmlab.cli import main as cli

        cwd = out / f"cwd{rank}"
        cwd.mkdir()
        os.chdir(cwd)
        code = cli(["train", *scenarios.RUN_ARGS, "--run-dir", "run"])  # shuts the group down
        (out / f"rank{rank}.code").write_text(str(code))
    elif scenario != "hang":
        comm.shutdown()


if __name__ == "__main__":
    main()
