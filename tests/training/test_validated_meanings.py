"""Every option's meaning is validated when the run is built (issue 23): a value that cannot
mean anything is one line, exit 2, naming the option and its valid range -- in ``--dry-run``
too, before anything runs."""

from __future__ import annotations

import contextlib
import io

import pytest
from runkit import tiny_flags

from lstmlab.cli import main
from lstmlab.distributed.threads import available_cores


def dry_run(*flags: str, task: str = "multiplication") -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        tiny = tiny_flags() if task == "multiplication" else []
        code = main(["train", task, "--dry-run", *tiny, *flags])
    return code, err.getvalue()


def refused(*flags: str, says: tuple[str, ...], task: str = "multiplication") -> str:
    code, err = dry_run(*flags, task=task)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("note:", "warning:"))]
    assert code == 2 and len(lines) == 1, err
    for word in says:
        assert word in lines[0], err
    return lines[0]


def test_an_unknown_stop_metric_is_refused_with_the_tasks_metrics():
    """``--stop.metric bogus`` ran with exit 0, printed "test bogus: None" and could never stop
    on its target; now it names the metrics the task offers."""
    refused("--stop.metric", "bogus", says=("stop.metric", "'bogus'", "mae", "frac_wrong"))
    refused("--stop.metric", "perplexity", says=("stop.metric", "bits_per_char"), task="text")


@pytest.mark.parametrize(
    "task, metric",
    [("multiplication", "mse"), ("multiplication", "loss"), ("xor", "accuracy"),
     ("framewise", "nll_per_frame"), ("ctc", "seq_error")],
)  # fmt: skip
def test_every_metric_a_task_offers_is_accepted(task, metric):
    code, err = dry_run("--stop.metric", metric, task=task)
    assert code == 0, err


@pytest.mark.parametrize(
    "optimizer, c1, c2",
    [("lbfgs", "0", "0.9"), ("lbfgs", "1.5", "0.9"), ("lbfgs", "1e-4", "1"),
     ("lbfgs", "0.5", "0.1"), ("lbfgs", "-1", "0.9"), ("cg", "0.3", "0.2")],
)  # fmt: skip
def test_line_search_constants_outside_their_range_are_refused(optimizer, c1, c2):
    """Wolfe constants need 0 < c1 < c2 < 1; L-BFGS ran with any (one setting used 7x the
    work)."""
    refused(
        "--optimizer.name", optimizer,
        "--optimizer.options.c1", c1, "--optimizer.options.c2", c2,
        says=("optimizer.options", "0 < c1 < c2 < 1"),
    )  # fmt: skip


@pytest.mark.parametrize("value", ["3", '"yes"', "1.0", "[true]"])
def test_bidirectional_must_be_a_boolean(value):
    refused("--model.options.bidirectional", value,
            says=("model.options.bidirectional", "true or false"))  # fmt: skip


@pytest.mark.parametrize(
    "key, value, says",
    [("model.options.num_layers", "2.5", "an integer"),
     ("model.options.num_layers", "true", "an integer"),
     ("optimizer.options.max_ls", '"many"', "an integer"),
     ("optimizer.options.c2", '"big"', "a number")],
)  # fmt: skip
def test_typed_options_are_checked(key, value, says):
    refused(f"--{key}", value, says=(key, says))


def test_booleans_are_accepted():
    code, err = dry_run("--model.options.bidirectional", "true", task="framewise")
    assert code == 0, err


def test_threads_are_bounded_by_the_machine():
    """``--threads 100000`` started (300 spawned 599 threads on 2 cores): at most the cores
    this process may run on."""
    cores = str(available_cores())
    refused("--threads", "100000", says=("--threads", f"<= {cores}", "cores"))
    code, err = dry_run("--threads", cores)
    assert code == 0, err


def test_workers_and_slow_worker_are_checked_in_dry_run():
    """``--workers 100000`` and ``--slow-worker 99:2`` passed ``--dry-run``."""
    refused("--workers", "100000", says=("--workers", "<="))
    refused("--workers", "2", "--slow-worker", "99:2", says=("--slow-worker", "rank 99", "0..1"))
    refused("--slow-worker", "1:2", says=("--slow-worker", "rank 1", "0..0"))
    code, err = dry_run("--workers", "2", "--slow-worker", "1:2")
    assert code == 0, err
