"""The training loop: one function that takes built objects and runs them.

It knows nothing of configs, files or the command line: the caller (``lstmlab.training.run``)
builds the model, task data, optimizer, stopping rule, metrics log and checkpoint writer, and
hands them in. Every iteration is: pick the next minibatch → one ``optimizer.step`` on its
objective → update the counters → maybe evaluate → log one record → maybe checkpoint.

Divergence: after every step the parameters are checked (one reduction each); a NaN or Inf
ends the run at once with ``stop_reason = "diverged"`` (as does a non-finite evaluation loss,
``StoppingRule``). The checkpoint callback is not called for a diverged state: the last
checkpoint written stays the last finite one.

Data order is a pure function of ``(seed, epoch)`` (a fresh generator per epoch), so a resumed
run needs only the counters to draw the same minibatches.

One metrics record per iteration (``metrics.jsonl``)::

    iteration, epoch, samples, P_D, P_I, wall, loss (training minibatch, before the step),
    grad_norm, damping, line_search_evals, cg_iterations (whatever the optimizer reports),
    and after an evaluation test_<metric> for each metric of the task's evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from lstmlab.data import Batch
from lstmlab.training.state import TrainState
from lstmlab.training.stopping import StoppingRule

__all__ = ["train", "minibatch", "step_diagnostics"]

# diagnostics copied from the optimizer's step into the log, under the log's names
_DIAG_FIELDS = {
    "loss": "loss",
    "grad_norm": "grad_norm",
    "damping": "damping",
    "step_size": "step_size",
    "new_loss": "new_loss",
    "line_search_evals": "line_search_evals",
    "cg_iterations": "cg_iterations",
    "cg_stop": "cg_stop",
    "rejected": "rejected",
    "rho": "rho",
    "inner_iterations": "inner_iterations",
}


def minibatch(data: Any, batch_size: int, seed: int, epoch: int, index: int) -> Batch:
    """Minibatch ``index`` of ``epoch``: a slice of a permutation seeded by (seed, epoch).

    ``data`` is anything with ``len(data)`` and ``data.batch(rows)`` (``rows=None``: all), like
    a task ``Split``; the whole set is used as it is when ``batch_size >= len(data)``. Data
    drawn afresh (``data.fresh``, a generated task's ``fresh`` option) gives minibatch number
    epoch · (batches per epoch) + index of its stream instead: new sequences at every step,
    each minibatch a full min(batch_size, len(data)) (an epoch of ⌈n / B⌉ of them).
    """
    n = len(data)
    if getattr(data, "fresh", False):
        k = epoch * batches_per_epoch(n, batch_size) + index
        return data.drawn(k, min(batch_size, n))
    if batch_size >= n:
        return data.batch(None)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen)
    return data.batch(order[index * batch_size : (index + 1) * batch_size])


def stream_batch(data: Any, streams: int, index: int, carried: Any) -> Batch:
    """Chunk ``index`` of each of the ``streams`` streams (rows [index·streams, …)), starting
    from the ``carried`` state (h_n, c_n) of the previous chunk (None: zero)."""
    rows = torch.arange(index * streams, min((index + 1) * streams, len(data)))
    batch = data.batch(rows)
    if carried is None:
        return batch
    h, c = carried
    dtype = batch.inputs.dtype
    return dataclasses.replace(batch, initial_state=(h.to(dtype), c.to(dtype)))


def batches_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def step_diagnostics(diag: Any) -> dict[str, Any]:
    """The optimizer's step diagnostics as a plain dict (dict, dataclass or attributes)."""
    if diag is None:
        return {}
    if isinstance(diag, dict):
        return dict(diag)
    if dataclasses.is_dataclass(diag):
        return dataclasses.asdict(diag)
    return {k: v for k, v in vars(diag).items() if not k.startswith("_")}


def _number(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    return x


def train(
    model: Any,
    optimizer: Any,
    train_data: Any,
    evaluate: Callable[[Any], dict[str, float]],
    stopping: StoppingRule,
    log: Any,
    *,
    state: TrainState,
    make_objective: Callable[[Any, Batch], Any],
    batch_size: int,
    seed: int,
    eval_every: int | None = 1,
    checkpoint_every: int | None = 1,
    log_every: int = 1,
    checkpoint: Callable[[TrainState], None] | None = None,
    on_best: Callable[[TrainState], None] | None = None,
    progress: Any = None,
    interrupted: Callable[[], bool] = lambda: False,
    carry_state: bool = False,
    eval_seconds: float | None = None,
    checkpoint_seconds: float | None = None,
    eval_name: str = "test",
    agree: Callable[[bool], bool] = lambda decided: decided,
) -> TrainState:
    """Train until ``stopping`` says so (or ``interrupted()``); return the final state.

    ``optimizer.step(objective)`` returns diagnostics (``lstmlab.optim.StepInfo``) whose
    ``cost`` is this step's ``CostCounter`` delta (P_D, P_I in forward-pass equivalents,
    seed 001; sequences that went into gradients); the loop sums them. ``evaluate(model)`` returns
    the test metrics (e.g. ``{"loss": .., "mae": ..}``). ``checkpoint(state)`` persists
    everything; it is called every ``checkpoint_every`` iterations and when the loop ends.
    ``on_best(state)`` is called right after every evaluation that improved the stopping
    metric's best value (the initial one included), while the model is that network: the
    caller keeps it (``run``'s ``best`` checkpoint).
    A record is logged every ``log_every`` iterations and at every evaluation.

    ``carry_state``: the training data are parallel streams of consecutive chunks (rows
    [j·B, (j+1)·B) hold chunk j of the B = ``batch_size`` streams, see ``tasks/words.py``); the
    minibatches then come in order and each starts from the state (h_n, c_n) the model
    reached at the end of the previous one (``state.carried``, detached; zero at the start of
    an epoch) — truncated BPTT across chunks, for first-order optimizers.

    ``eval_seconds`` / ``checkpoint_seconds`` also evaluate / checkpoint once that much wall
    time has passed since the last one (whichever interval ends first). ``eval_every`` /
    ``checkpoint_every`` None: by iterations never (the initial and final ones stay). The evaluation's
    metrics are logged as ``<eval_name>_<metric>`` (``valid_bits_per_char``). ``agree(x)``
    turns this process's answer to "have that many seconds passed?" into the one every process
    of a worker group acts on (rank 0's; ``lstmlab.distributed.Session.agree``).
    """
    n_batches = batches_per_epoch(len(train_data), batch_size)
    clock = time.perf_counter() - state.wall  # wall time continues across resumes

    def observe() -> None:
        stopping.observe(state, evaluate(model))
        if on_best is not None and state.evals_since_best == 0:  # this network is the best
            on_best(state)

    if state.iteration == 0 and state.evals == 0:  # a fresh run: evaluate the initial network
        observe()
        log.write(_record(state, {}, test=state.last_eval, name=eval_name))
        if checkpoint is not None:
            checkpoint(state)
    last_eval = last_checkpoint = time.perf_counter()
    # was the network as it stands evaluated?
    evaluated = state.iteration % eval_every == 0 if eval_every else state.iteration == 0

    def due(every: int | None, seconds: float | None, since: float) -> bool:
        if every is not None and state.iteration % every == 0:
            return True
        # a clock differs between processes: a worker group takes rank 0's answer (agree)
        return seconds is not None and agree(time.perf_counter() - since >= seconds)

    while True:
        state.wall = time.perf_counter() - clock
        reason = stopping.reason(state)
        if reason is None and interrupted():
            reason = "interrupted"
        if reason is not None:
            state.stop_reason = reason
            break

        model.set_epoch(state.epoch)  # gate-sharpness schedules run over epochs
        step_start = time.perf_counter()
        if carry_state:
            batch = stream_batch(train_data, batch_size, state.batch_in_epoch, state.carried)
        else:
            batch = minibatch(train_data, batch_size, seed, state.epoch, state.batch_in_epoch)
        diag = step_diagnostics(optimizer.step(make_objective(model, batch)))
        if carry_state:  # the state at the end of this chunk starts the next one
            state.carried = model.final_state
        step = {  # for the progress line: smoothed loss and throughput
            "loss": _number(diag.get("loss")),
            "tokens": _tokens(batch),
            "samples": len(batch),
            "seconds": time.perf_counter() - step_start,
        }

        state.iteration += 1
        state.samples += len(batch)
        cost = diag.get("cost") or {}  # this step's CostCounter delta (lstmlab.objective)
        state.P_D += float(cost.get("p_d", 0.0))
        state.P_I += float(cost.get("p_i", 0.0))
        state.presentations += float(cost.get("samples_grad", 0.0))
        state.batch_in_epoch += 1
        if state.batch_in_epoch >= n_batches:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            state.carried = None
        state.wall = time.perf_counter() - clock

        if not _params_finite(model):  # diverged: log this step, keep the last checkpoint
            state.stop_reason = "diverged"
            stopping.observe(state, evaluate(model))
            log.write(_record(state, diag, test=state.last_eval, name=eval_name))
            if progress is not None:
                progress.update(state, **step)
            return state

        test = None
        evaluated = due(eval_every, eval_seconds, last_eval)
        if evaluated:
            observe()
            test = state.last_eval
            last_eval = time.perf_counter()
        if test is not None or state.iteration % log_every == 0:
            log.write(_record(state, diag, test=test, name=eval_name))
        if progress is not None:
            progress.update(state, **step)
        if checkpoint is not None and due(checkpoint_every, checkpoint_seconds, last_checkpoint):
            checkpoint(state)
            last_checkpoint = time.perf_counter()

    if state.stop_reason != "interrupted" and not evaluated:
        observe()  # the summary reports the final network
        log.write(_record(state, {}, test=state.last_eval, name=eval_name))
    if checkpoint is not None and state.stop_reason != "diverged":
        checkpoint(state)  # the final state, stop reason included
    return state


def _tokens(batch: Any) -> int:
    """Valid time steps of a minibatch; a worker's shard (``ShardedBatch``) counts as its share
    of the whole (local steps · global rows / local rows)."""
    local = getattr(batch, "local", batch)
    lengths = getattr(local, "lengths", None)
    if lengths is None or len(local) == 0:
        return 0
    return round(int(lengths.sum()) * len(batch) / len(local))


def _params_finite(model: Any) -> bool:
    """Whether every parameter is finite (a model without ``parameters()`` counts as finite)."""
    for p in getattr(model, "parameters", lambda: ())():
        x = p.detach()
        if not (bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())):
            return False
    return True


def _record(
    state: TrainState, diag: dict[str, Any], test: dict[str, Any] | None, name: str = "test"
) -> dict:
    rec: dict[str, Any] = {
        "iteration": state.iteration,
        "epoch": state.epoch,
        "samples": state.samples,
        "presentations": state.presentations,
        "P_D": state.P_D,
        "P_I": state.P_I,
        "wall": round(state.wall, 6),
    }
    for src, dst in _DIAG_FIELDS.items():
        if src in diag and diag[src] is not None:
            rec[dst] = _number(diag[src])
    if test:
        rec.update({f"{name}_{k}": _number(v) for k, v in test.items()})
    return rec
