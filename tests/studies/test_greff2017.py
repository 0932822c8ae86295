"""`lstmlab reproduce greff2017`: its plan, dry run, bad flags, and a tiny real run (slow)."""

from __future__ import annotations

import importlib

import optuna
import pytest

from lstmlab import reproduce
from lstmlab.cli import main
from lstmlab.studies.space import GREFF
from lstmlab.studies.study import TrialSeededSampler

reproduce.load_all()  # the registry in its own order, before this module is imported alone
greff2017 = importlib.import_module("lstmlab.reproduce.greff2017")


def test_plan_keeps_greffs_space_but_the_learning_rate_scale():
    over, space = greff2017.plan("music", quick=False)
    assert space.variants == GREFF.variants
    assert space.params["hidden_size"] == GREFF.params["hidden_size"]
    assert space.params["momentum"] == GREFF.params["momentum"]
    assert (space.params["lr"].low, space.params["lr"].high) == (1e-4, 1.0)
    assert over["optimizer.batch_size"] == 1 and "task.options.max_pieces" not in over
    over, _ = greff2017.plan("music", quick=True, jsb="x.pickle")
    assert over["task.options.path"] == "x.pickle" and "task.options.max_pieces" not in over


def test_dry_run_and_bad_flags(tmp_path, capsys):
    out = str(tmp_path / "g")
    assert main(["reproduce", "greff2017", "--quick", "--dry-run", "--out", out]) == 0
    text = capsys.readouterr().out
    for task in greff2017.TASKS:
        assert f"## {task}: study" in text
    assert not (tmp_path / "g").exists()
    assert main(["reproduce", "greff2017", "--task", "timit", "--out", out]) == 2
    assert "unknown task 'timit'" in capsys.readouterr().err
    assert main(["reproduce", "greff2017", "--trials", "0", "--out", out]) == 2
    assert main(["reproduce", "greff2017", "--jsb", str(tmp_path / "no.pickle")]) == 2


def test_trial_sampling_depends_on_trial_number_only():
    def draws(n, seed):
        study = optuna.create_study(sampler=TrialSeededSampler(seed))
        return [study.ask().suggest_float("lr", 1e-6, 1e-2, log=True) for _ in range(n)]

    assert draws(4, 0) == draws(4, 0)[:4]
    assert draws(3, 0) == draws(5, 0)[:3]
    assert draws(3, 0) != draws(3, 1)
    assert len(set(draws(6, 0))) == 6
    study = optuna.create_study(sampler=TrialSeededSampler(0))
    dealt = [study.ask().suggest_categorical("variant", ["a", "b", "c"]) for _ in range(7)]
    assert dealt == ["a", "b", "c", "a", "b", "c", "a"]  # N per variant, as Greff
    failed = study.ask()
    assert failed.suggest_categorical("variant", ["a", "b", "c"]) == "b"
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    # the deal goes on by number, whatever failed (the failed trial's retry keeps its "b")
    assert study.ask().suggest_categorical("variant", ["a", "b", "c"]) == "c"


@pytest.mark.slow
def test_tiny_reproduction_writes_results(tmp_path):
    tiny = {
        "task.options.n_train": 10,
        "task.options.n_valid": 6,
        "task.options.n_test": 6,
        "stop.max_epochs": 1,
    }
    path = greff2017.reproduce(
        tmp_path, trials=1, quick=True, tasks=["framewise"], overrides=tiny, log=lambda m: None
    )
    text = path.read_text()
    assert "## framewise" in text and "Welch" in text
    assert "](framewise/analysis/variants.png)" in text
    assert (tmp_path / "framewise" / "analysis" / "variants.png").exists()
    # rerun: resumable, nothing new to run
    greff2017.reproduce(
        tmp_path, trials=1, quick=True, tasks=["framewise"], overrides=tiny, log=lambda m: None
    )
    h = optuna.load_study(
        study_name="framewise",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(
                str(tmp_path / "framewise" / "study.journal")
            )
        ),
    )
    assert len(h.trials) == 9
