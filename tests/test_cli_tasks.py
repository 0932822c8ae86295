"""Every task `lstmlab tasks` lists trains from the command line (a tiny run each), seed 001's
optimizer presets start from the CLI and resolve as documented, and the real-data defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lstmlab.tasks as tasks
from lstmlab.cli import main
from lstmlab.training.build import build_all, build_optimizer
from lstmlab.training.config import resolve
from lstmlab.training.metrics import read_metrics

MUSIC_LR = 1e-2  # the music preset's Adam step (docs/results.md, presets chosen by measurement)
RUN = ["--progress", "none", "--stop.max_iterations", "2", "--model.blocks", "2"]
LONGLAG = ["--task.options.T", "30", "--task.options.n_train", "40", "--task.options.n_test", "20"]
LBFGS = ["--optimizer.batch_size", "20", "--optimizer.iterations_per_batch", "2"]
SYNTH = ["--task.options.n_train", "30", "--task.options.n_valid", "10", "--task.options.n_test"]
TEXT = ["--task.options.chunk", "40", "--optimizer.batch_size", "8"]


def ptb_dir(root: Path) -> Path:
    """A tiny Penn Treebank character corpus (one sentence a line, `_` between words)."""
    d = root / "ptb"
    d.mkdir(exist_ok=True)
    lines = ["t h e _ c a t _ s a t", "a _ d o g _ r a n _ h o m e", "n o _ 1 2 3 _ N"]
    for split, reps in (("train", 20), ("valid", 4), ("test", 4)):
        (d / f"ptb.char.{split}.txt").write_text("\n".join(lines * reps) + "\n")
    return d


def text_file(root: Path) -> Path:
    path = root / "corpus.txt"
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis"]
    lines = [" ".join(words[(i * k) % 10] for k in range(1, 9)) + f" {i}." for i in range(400)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ptb_words_dir(root: Path) -> Path:
    """A tiny Penn Treebank word corpus (ptb.{train,valid,test}.txt, one sentence a line)."""
    d = root / "ptb_words"
    d.mkdir(exist_ok=True)
    lines = ["the cat sat on the mat", "a dog ran home <unk>", "no N dogs and N cats"]
    for split, reps in (("train", 40), ("valid", 6), ("test", 6)):
        (d / f"ptb.{split}.txt").write_text("\n".join(lines * reps) + "\n")
    return d


def music_file(root: Path) -> Path:
    piece = [[60, 64, 67], [62, 65], [64, 67, 71], [60], [59, 62, 67], [60, 64]] * 2
    path = root / "rolls.json"
    path.write_text(json.dumps({"train": [piece] * 4, "valid": [piece], "test": [piece]}))
    return path


def tiny_args(name: str, root: Path, *, default_corpus: bool = False) -> list[str]:
    """Flags that make `lstmlab train NAME` a run of a second or two."""
    if name == "text" and default_corpus:
        return [*TEXT, "--task.options.max_chars", "2000"]
    if name == "text":
        return [*TEXT, "--task.options.path", str(text_file(root))]
    if name == "ptb":
        return [*TEXT, "--task.options.path", str(ptb_dir(root))]
    if name in ("words", "ptb_words"):
        path = ptb_words_dir(root) if name == "ptb_words" else text_file(root)
        words = ["--task.options.chunk", "10", "--task.options.streams", "4"]
        return [*words, "--optimizer.batch_size", "4", "--task.options.path", str(path)]
    if name == "music":
        return ["--task.options.path", str(music_file(root)), "--optimizer.batch_size", "2"]
    if name == "japanese_vowels":
        return ["--optimizer.batch_size", "30"]
    if name in ("framewise", "ctc"):
        return [*SYNTH, "10", "--optimizer.batch_size", "10"]
    return [*LONGLAG, *LBFGS]


@pytest.mark.parametrize("name", tasks.names())
def test_every_listed_task_trains_from_the_cli(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LSTMLAB_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    argv = ["train", name, "--run-dir", str(run), *RUN]
    argv += tiny_args(name, tmp_path, default_corpus=True)
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "iterations 2" in out and "P_D" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["task"] == name
    if not tasks.takes(name, "seed"):  # a task without a seed says so instead of crashing
        assert "takes no seed" in out and "takes no seed" in summary["task_seed"]


def test_the_seed_reaches_tasks_that_take_one_and_orders_chunks_of_those_that_do_not():
    a = build_all(resolve([], {"task.name": "japanese_vowels", "seed": "1"}))
    b = build_all(resolve([], {"task.name": "japanese_vowels", "seed": "2"}))
    assert len(a.task.valid) == 30  # the preset holds out 30 training cases, by the run seed
    assert a.task.valid.lengths.tolist() != b.task.valid.lengths.tolist()


@pytest.mark.parametrize("task", ["ptb", "ptb_words"])
def test_ptb_without_its_files_dry_runs_but_does_not_train(task, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the dry run shows the resolved config and says what is missing
    assert main(["train", task, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f'name = "{task}"' in out and "[optimizer]" in out
    assert "# task: not built, its data is not given" in out and "--task.options.path" in out
    # a real run refuses with one line, and writes nothing
    assert main(["train", task]) == 2
    err = capsys.readouterr().err.strip()
    assert "task.options: " in err and "--task.options.path" in err
    assert len(err.splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_ptb_needs_all_three_splits(tmp_path, capsys):
    d = ptb_dir(tmp_path)
    (d / "ptb.char.test.txt").unlink()
    assert main(["train", "ptb", "--task.options.path", str(d), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "ptb.char.test.txt" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------
# seed 001's presets


EXPECTED = {
    "sgd-clip": dict(batch=32, kind="SGD"),
    "bgd": dict(batch=3500, kind="SGD"),
    "shf": dict(batch=320, kind="HessianFree", bc=32, lm=(0.99, 1.01)),
    "bhf": dict(batch=14000, kind="HessianFree", bc=3500, lm=(2 / 3, 1.5)),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_presets_resolve_as_documented(name):
    cfg = resolve([], {"task.name": "text", "optimizer.name": name})
    opt = build_optimizer(cfg)
    want = EXPECTED[name]
    assert cfg.optimizer.batch_size == want["batch"]
    assert type(opt).__name__ == want["kind"]
    if want["kind"] == "SGD":
        assert opt.clip_norm == 1.0 and opt.hp("momentum") == 0.0
    else:
        assert opt.curvature_batch == want["bc"]
        assert opt.gradient_batch == want["batch"]
        lm = opt.lm
        assert (lm.decrease, lm.increase) == pytest.approx(want["lm"])
        assert opt.lam == 0.03 and opt.curvature == "gn"


def test_dry_run_shows_what_bhf_resolves_to(capsys, tmp_path):
    corpus = ["--task.options.path", str(text_file(tmp_path))]
    assert main(["train", "text", "--optimizer.name", "bhf", *corpus, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "batch_size = 14000" in out and "curvature_batch = 3500" in out
    assert "B_c = 3500" in out and "λ ×1.5 when ρ < 0.25" in out
    assert "one forward pass of a sequence of 200 steps" in out


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_preset_starts_from_the_cli(name, tmp_path, capsys):
    run = tmp_path / "run"
    small = ["--optimizer.batch_size", "6", *(["--optimizer.options.curvature_batch", "3"] * 0)]
    if EXPECTED[name]["kind"] == "HessianFree":
        small = [
            "--optimizer.batch_size",
            "6",
            "--optimizer.options.curvature_batch",
            "3",
            "--optimizer.options.max_cg",
            "3",
        ]
    argv = ["train", "text", "--optimizer.name", name, "--run-dir", str(run), *RUN]
    argv += [*small, "--task.options.chunk", "40", "--task.options.path", str(text_file(tmp_path))]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["optimizer"] == name and summary["iterations"] == 2
    assert summary["P_D"] > 0 and summary["P_I"] > 0


def test_shf_damping_table_overrides_from_the_cli_key_by_key():
    cfg = resolve([], {"task.name": "text", "optimizer.name": "shf"})
    cfg = resolve(
        [], {"task.name": "text", "optimizer.name": "shf", "optimizer.options.lm.increase": "1.05"}
    )
    lm = build_optimizer(cfg).lm
    assert lm.increase == 1.05 and lm.decrease == 0.99  # the rest of the preset's table stays


@pytest.mark.parametrize(
    "key,value,names",
    [
        ("optimizer.options.lm.increase", "0.5", "optimizer.options.lm"),
        ("optimizer.options.lm.decrease", "2", "optimizer.options.lm"),
        ("optimizer.options.lm.speed", "2", "optimizer.options.lm.speed"),
        ("optimizer.options.lm.low", "-1", "optimizer.options.lm.low"),
        ("optimizer.options.lm.high", "1.5", "optimizer.options.lm.high"),
        ("optimizer.options.lm", "fast", "optimizer.options.lm"),
    ],
)
def test_a_bad_damping_table_is_refused_at_build_time(key, value, names, capsys, tmp_path):
    argv = ["train", "text", "--optimizer.name", "shf", f"--{key}", value, "--dry-run"]
    argv += ["--task.options.path", str(text_file(tmp_path))]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert names in err and len(err.splitlines()) == 1


def test_the_damping_table_can_switch_the_rule_off():
    cfg = resolve(
        [], {"task.name": "text", "optimizer.name": "bhf", "optimizer.options.lm": "false"}
    )
    assert build_optimizer(cfg).lm is None


def test_presets_come_from_config_files_too(tmp_path):
    from lstmlab.training.config import load_toml

    f = tmp_path / "run.toml"
    f.write_text('[optimizer]\nname = "shf"\n[optimizer.options.lm]\nincrease = 1.02\n')
    cfg = resolve([load_toml(f)], {"task.name": "text"})
    opt = build_optimizer(cfg)
    assert cfg.optimizer.batch_size == 320 and opt.curvature_batch == 32
    assert opt.lm.increase == 1.02 and opt.lm.decrease == 0.99


# ------------------------------------------------------------------------------------------
# real-data defaults, evaluation split, cost units


@pytest.mark.parametrize("name", ["text", "ptb", "music", "japanese_vowels"])
def test_real_data_tasks_have_their_own_defaults(name):
    cfg = resolve([], {"task.name": name})
    assert cfg.model.variant == "vanilla" and cfg.model.blocks >= 32 and cfg.model.alpha == 1.0
    assert cfg.precision == "float32" and cfg.optimizer.name == "adam"
    assert cfg.optimizer.batch_size == 100
    assert cfg.optimizer.lr == (MUSIC_LR if name == "music" else 1e-3)  # measured (results.md)
    # evaluated once per epoch (five steps for JapaneseVowels): patience counts epochs
    assert cfg.eval_every == ("epoch" if name != "japanese_vowels" else 5)
    assert cfg.eval_seconds is None and cfg.checkpoint_seconds
    assert cfg.stop.patience and cfg.stop.patience_epochs is None and cfg.stop.max_epochs
    # a user's optimizer still brings its own preset over the task's choice
    assert resolve([], {"task.name": name, "optimizer.name": "bgd"}).optimizer.batch_size == 3500


def test_a_task_presets_optimizer_settings_apply_only_to_its_own_optimizer(tmp_path, capsys):
    """The music preset's Adam step (chosen by measurement) applies over Adam's preset; a flag
    or a config file still wins, and another optimizer brings its own preset."""
    assert resolve([], {"task.name": "music"}).optimizer.lr == MUSIC_LR != 1e-3
    assert resolve([], {"task.name": "music", "optimizer.lr": "5e-4"}).optimizer.lr == 5e-4
    file_layer = {"optimizer": {"lr": 2e-4}}  # what a config file gives
    assert resolve([file_layer], {"task.name": "music"}).optimizer.lr == 2e-4
    bgd = resolve([], {"task.name": "music", "optimizer.name": "bgd"}).optimizer
    assert (bgd.lr, bgd.batch_size) == (1.0, 3500)
    for name in ("lbfgs", "cg", "hf", "sgd"):  # none takes Adam's step (it once leaked)
        other = resolve([], {"task.name": "music", "optimizer.name": name}).optimizer
        alone = resolve([], {"task.name": "text", "optimizer.name": name}).optimizer
        assert other.lr == alone.lr != MUSIC_LR, (name, other.lr)
    assert resolve([], {"task.name": "text"}).optimizer.lr == 1e-3  # Adam's preset there
    # and the command line shows it: per-task --help and --dry-run
    assert main(["train", "music", "--dry-run", "--run-dir", str(tmp_path / "r")]) == 0
    assert f"lr = {MUSIC_LR}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["words", "ptb_words"])
def test_word_models_default_to_torchs_cell(name, tmp_path):
    """Chosen by measurement (docs/results.md): no peepholes, U(±1/√H), as torch.nn.LSTM."""
    over = {"task.name": name, "task.options.path": str(ptb_words_dir(tmp_path))}
    cfg = resolve([], over)
    assert cfg.model.variant == "NP" and cfg.model.options == {"init": "torch"}
    assert cfg.eval_every == "epoch" and cfg.stop.patience == 3
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 4e-3  # chosen by measurement
    small = resolve([], {**over, "task.options.streams": "4", "optimizer.batch_size": "4"})
    lstm = build_all(small).model.rnn.to_torch()  # torch.nn.LSTM can express it
    assert lstm.hidden_size == 200


@pytest.mark.parametrize("name", ["text", "ptb"])
def test_characters_default_to_an_embedding(name, tmp_path):
    """Chosen by measurement (docs/results.md): characters through an embedding table of the
    recurrent width; ``--task.options.embedding false`` gives the one-hot input back."""
    path = ptb_dir(tmp_path) if name == "ptb" else text_file(tmp_path)
    over = {"task.name": name, "task.options.path": str(path), "model.blocks": "6"}
    assert resolve([], over).task.options == {"embedding": "auto", "path": str(path)}
    built = build_all(resolve([], over))
    assert built.model.embed.weight.shape[1] == 6 and built.task.train.one_hot is None
    off = build_all(resolve([], {**over, "task.options.embedding": "false"}))
    assert off.model.embed is None and off.task.train.one_hot == off.task.input_size


def test_text_evaluates_on_valid_and_reads_test_once(tmp_path, capsys, monkeypatch):
    import lstmlab.training.build as build

    reads = []
    original = build.Built.evaluate_test

    def counted(self, model):
        reads.append(1)
        return original(self, model)

    monkeypatch.setattr(build.Built, "evaluate_test", counted)
    run = tmp_path / "run"
    argv = ["train", "text", "--run-dir", str(run), *RUN, *tiny_args("text", tmp_path)]
    argv += ["--eval_every", "1", "--stop.max_iterations", "3"]
    assert main(argv) == 0
    assert "; read once, at the end): " in capsys.readouterr().out
    records = read_metrics(run / "metrics.jsonl")
    assert all("valid_bits_per_char" in r for r in records)
    assert not any(k.startswith("test_") for r in records for k in r)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_split"] == "valid" and "bits_per_char" in summary["test"]
    assert summary["test"] != summary["final"] and reads == [1]


def test_intervals_in_iterations_or_seconds(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "text", "--run-dir", str(run), *RUN, *tiny_args("text", tmp_path)]
    base = ["--stop.max_iterations", "4", "--checkpoint_seconds", "1000"]
    assert main([*argv, *base, "--eval_every", "1000", "--eval_seconds", "1000"]) == 0
    evals = [r["iteration"] for r in read_metrics(run / "metrics.jsonl") if "valid_loss" in r]
    assert evals == [0, 4]  # the initial and the final network only
    run2 = tmp_path / "run2"
    argv[argv.index(str(run))] = str(run2)
    assert main([*argv, *base, "--eval_every", "1000", "--eval_seconds", "1e-9"]) == 0
    evals = [r["iteration"] for r in read_metrics(run2 / "metrics.jsonl") if "valid_loss" in r]
    assert evals == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("chunk", [200, 100, 50])
def test_text_cost_is_counted_in_passes_of_200_steps(chunk, monkeypatch, tmp_path):
    """Seed 001's units: a first-order step on B_g chunks of length T costs P_D = 3·B_g·T/200
    and P_I = 3·T/200, whatever the chunk length."""
    monkeypatch.setenv("LSTMLAB_CACHE_DIR", str(tmp_path / "cache"))
    over = {"task.name": "text", "optimizer.name": "sgd-clip", "model.blocks": "4"}
    over.update({"task.options.chunk": str(chunk), "task.options.path": str(text_file(tmp_path))})
    built = build_all(resolve([], over))
    batch = built.train_data.batch(list(range(32)))
    info = built.optimizer.step(built.make_objective(built.model, batch))
    assert info.cost["p_d"] == pytest.approx(3 * 32 * chunk / 200)
    assert info.cost["p_i"] == pytest.approx(3 * chunk / 200)


@pytest.mark.parametrize("name", tasks.names())
def test_every_listed_task_dry_runs_with_no_options(name, tmp_path, monkeypatch, capsys):
    # what a newcomer types first: the config resolves and is shown, whatever data is present
    monkeypatch.chdir(tmp_path)
    assert main(["train", name, "--dry-run"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f'name = "{name}"' in out and "# dry run: nothing written" in out
    assert list(tmp_path.iterdir()) == []
