"""Watching a study in optuna-dashboard: what each trial publishes, and the server.

A study's storage (the journal file or the PostgreSQL database, ``storage``) is an ordinary
Optuna storage, so optuna-dashboard reads it as it is. What a trial shows there:

    params               the variant (``variant``, when the space has several) and every
                         sampled hyperparameter (``hidden_size``, ``lr``, …), as Optuna sampled
    intermediate values  the watched metric at every evaluation of the trial's run (its
                         ``metrics.jsonl``), step = the epoch (trials evaluate once per epoch)
    value                the best watched metric of the run (what the study optimizes), named
                         by the study's metric name (``valid loss (best)``)
    user attrs           ``variant`` (also for one-variant spaces), run directory, seed, stop
                         reason, epochs, wall time, test metric, worker

``publish`` writes the intermediate values, the variant and the metric name when a trial's run
has ended (a retried trial's continued run publishes its whole curve). ``serve`` runs
optuna-dashboard's WSGI app (``optuna_dashboard.wsgi``) on a threaded ``wsgiref`` server bound
to 127.0.0.1 — the dashboard can edit the study, so it is not opened to the network; from
another machine use an SSH tunnel (``ssh -L 8080:127.0.0.1:8080 host``). optuna-dashboard is
an optional extra (``pip install "lstmlab[dashboard]"``); nothing here but the glue is written
by hand.
"""

from __future__ import annotations

import math
import signal
import sys
import warnings
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lstmlab.training.metrics import read_metrics

__all__ = ["INSTALL", "DashboardError", "curve", "publish", "serve", "metric_name"]

INSTALL = 'pip install "lstmlab[dashboard]"'
HOST = "127.0.0.1"


class DashboardError(RuntimeError):
    """The dashboard cannot start; ``str(err)`` is one line."""


def metric_name(metric: str, split: str) -> str:
    """The name the dashboard shows for a study's objective value."""
    return f"{split} {metric} (best)"


def curve(records: list[dict[str, Any]], key: str) -> dict[int, float]:
    """``{epoch: value of key}`` over a run's metrics records (the last one of an epoch;
    non-finite values left out)."""
    out: dict[int, float] = {}
    for rec in records:
        value = rec.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out[int(rec.get("epoch", 0))] = float(value)
    return out


def publish(trial: Any, run_dir: str | Path, summary: dict[str, Any], metric: str, variant: str):
    """Report a finished run's learning curve as the trial's intermediate values, and record
    its variant and the study's metric name."""
    import optuna

    split = summary.get("eval_split") or "test"
    trial.set_user_attr("variant", variant)
    records = read_metrics(Path(run_dir) / "metrics.jsonl")
    for step, value in sorted(curve(records, f"{split}_{metric}").items()):
        trial.report(value, step)
    study = trial.study
    if study.metric_names is None:
        with warnings.catch_warnings():  # set_metric_names was experimental in Optuna 3
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric_name(metric, split)])


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the page fetches several API routes at once


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass  # one line per request would bury the address


def app(storage: Any):
    """optuna-dashboard's WSGI application on ``storage``."""
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardError(f"the dashboard needs optuna-dashboard: {INSTALL}") from None
    return optuna_dashboard.wsgi(storage)


def serve(storage: Any, study_name: str, *, port: int = 8080, out=None) -> None:
    """Serve the dashboard on 127.0.0.1:``port`` (0: a free port) until Ctrl-C; prints the
    address of the study's page first."""
    out = out or sys.stdout
    application = app(storage)
    try:
        server = make_server(
            HOST, port, application, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
    except OSError as err:
        reason = err.strerror or str(err)
        raise DashboardError(
            f"cannot listen on {HOST}:{port}: {reason} (choose another --port, or 0 for a free one)"
        ) from None
    study_id = storage.get_study_id_from_name(study_name)
    root = f"http://{HOST}:{server.server_port}/dashboard/"
    print(f"optuna-dashboard for study {study_name!r}: {root}studies/{study_id}", file=out)
    print(f"  all studies of this storage: {root}  (Ctrl-C stops it)", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=out, flush=True)
    finally:
        server.server_close()


def main(handle: Any, port: int, usage_error) -> int:
    """``lstmlab study dashboard DIR [--port P]`` on an open ``StudyHandle``."""
    from lstmlab.studies.storage import open_storage

    if not 0 <= port <= 65535:
        raise usage_error(f"--port must be 0..65535 (0: a free port), got {port}")

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both stop it cleanly (a shell starts a background job with SIGINT
    # ignored, so it is set here too)
    before = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve(open_storage(handle.storage_url, handle.root), handle.name, port=port)
    except DashboardError as err:
        raise usage_error(f"lstmlab study dashboard: {err}") from None
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    return 0
