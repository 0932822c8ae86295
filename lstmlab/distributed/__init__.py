"""Data-parallel batch learning on ``torch.distributed`` (SPEC S6; seed 000 Sec. 5.4.2).

Each worker holds a shard of every minibatch; loss, gradient, curvature products, per-sample
statistics and the cost counter are reduced across workers weighted by sample counts, so every
optimizer runs unchanged on any number of workers. Launch with ``torchrun`` (or
``lstmlab train … --workers N`` on one machine); in one process every helper is a no-op
(``get_rank() == 0``, ``get_world_size() == 1``).

    comm.py       the process group, collectives with a deadline, no-op helpers
    objective.py  ``DistributedObjective``: the objective contract, reduced over workers
    shards.py     which rows a worker holds; shard sizes that follow measured worker speed
    session.py    how a run behaves in a group (rank 0 writes, evaluates and decides)
    threads.py    intra-op threads chosen from the network's size, cores and workers
    launch.py     ``--workers N``: torchrun's launcher on one machine; elastic restarts
"""

from __future__ import annotations

from lstmlab.distributed.comm import (
    DistributedError,
    barrier,
    get_local_world_size,
    get_rank,
    get_world_size,
    init_from_env,
    is_distributed,
    is_main,
    shutdown,
)
from lstmlab.distributed.objective import DistributedObjective, SpeedMeter, check_params_agree
from lstmlab.distributed.session import Session
from lstmlab.distributed.shards import ShardedSplit, split_counts

__all__ = [
    "DistributedError",
    "DistributedObjective",
    "Session",
    "ShardedSplit",
    "SpeedMeter",
    "barrier",
    "check_params_agree",
    "get_local_world_size",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_distributed",
    "is_main",
    "shutdown",
    "split_counts",
]
