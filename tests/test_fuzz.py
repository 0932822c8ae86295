"""Fuzzing the inputs a user controls (issue 16): random config values, random config files and
random data files thrown at ``lstmlab train --dry-run`` and at the loaders. Accepted outcomes:
exit 0, or exit 2 with exactly one line of error -- never a traceback, never another code.

Seeded (hypothesis ``derandomize=True``, no example database) with bounded counts, so the run
is the same every time; ``FUZZ_SCALE`` (environment) multiplies the counts for a longer hunt.
The counts the default run makes are reported in docs/design.md ("Fuzzing").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runkit import tiny_flags

from lstmlab.cli import main
from lstmlab.training.config import RunConfig, flag_specs

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
COUNTS = {"values": 100, "config_files": 50, "data_files": 70}
RAN: dict[str, int] = {}


def fuzz_settings(kind: str):
    return settings(
        max_examples=max(1, int(COUNTS[kind] * SCALE)),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)  # an uncaught exception here *is* the traceback a user would see
    return code, err.getvalue()


OUTCOMES: dict[str, int] = {}


def check_outcome(code: int, err: str, argv) -> None:
    OUTCOMES[f"exit {code}"] = OUTCOMES.get(f"exit {code}", 0) + 1
    assert "Traceback" not in err, argv
    assert code in (0, 2), (code, err, argv)
    if code == 2:
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("note:", "warning:"))]
        assert len(lines) == 1, (err, argv)


# --------------------------------------------------------------------------------- values

# Sizes either small (cheap to build) or absurd (must be refused by the memory check, before
# allocating): the middle range is valid and merely slow, so it is not where bugs hide.
ints = st.one_of(
    st.integers(-3, 70),
    st.integers(10**12, 10**30),
    st.sampled_from([2**31, 2**63, -(2**63), 0]),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-320, 1e308, float("nan"), float("inf"), -float("inf")]),
)
words = st.one_of(
    st.sampled_from(["lbfgs", "lstm", "gru", "1997", "ms2011", "linear", "sigmoid", "seed000"]),
    st.text(max_size=20),
)


def toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), -float("inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


scalars = st.one_of(ints, floats, words, st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("ifoxyz"), inner, max_size=3)
    ),
    max_leaves=6,
)
flag_text = st.one_of(values.map(toml_literal), st.text(max_size=30))

KEYS = [k for k, _, _ in flag_specs(RunConfig) if k != "task.name"] + [
    "task.options.T",
    "task.options.n_train",
    "task.options.n_test",
    "task.options.convention",
    "task.options.output",
    "task.options.rule",
    "task.options.seed",
    "model.options.gate_bias",
    "model.options.init",
    "model.options.num_layers",
    "model.options.bidirectional",
    "optimizer.options.c2",
    "optimizer.options.max_cg",
    "task.options.unknown",
]
TASKS = [
    "multiplication",
    "seed000",
    "adding",
    "xor",
    "temporal_order",
    "permutation",
    "memorization",
    "framewise",
    "ctc",
]  # generated tasks: no corpus to parse


@fuzz_settings("values")
@given(
    task=st.one_of(st.sampled_from(TASKS), st.text(max_size=12)),
    flags=st.lists(st.tuples(st.sampled_from(KEYS), flag_text), min_size=1, max_size=4),
)
def test_random_config_values(task, flags):
    RAN["values"] = RAN.get("values", 0) + 1
    argv = ["train", task, "--dry-run", *tiny_flags()]
    for key, text in flags:
        argv += [f"--{key}", text]
    if task.startswith("-"):
        argv.insert(1, "--")  # a positional that looks like a flag
    check_outcome(*run_cli(argv), argv)


# --------------------------------------------------------------------------------- config files

toml_docs = st.dictionaries(
    st.sampled_from(["seed", "eval_every", "precision", "task", "model", "optimizer", "stop", "x"]),
    st.one_of(
        values,
        st.dictionaries(st.sampled_from([k.split(".")[-1] for k in KEYS]), values, max_size=4),
    ),
    max_size=4,
)


def toml_text(doc: dict) -> str:
    lines, tables = [], []
    for k, v in doc.items():
        if isinstance(v, dict):
            tables.append(
                f"[{k}]\n" + "".join(f"{kk} = {toml_literal(vv)}\n" for kk, vv in v.items())
            )
        else:
            lines.append(f"{k} = {toml_literal(v)}\n")
    return "".join(lines) + "\n".join(tables)


@fuzz_settings("config_files")
@given(content=st.one_of(st.binary(max_size=300), toml_docs.map(lambda d: toml_text(d).encode())))
def test_random_config_files(tmp_path_factory, content):
    RAN["config_files"] = RAN.get("config_files", 0) + 1
    f = tmp_path_factory.mktemp("cfg") / "fuzz.toml"
    f.write_bytes(content)
    argv = ["train", "multiplication", "--config", str(f), "--dry-run", *tiny_flags()]
    check_outcome(*run_cli(argv), argv)


# --------------------------------------------------------------------------------- data files

SONGS = {"train": [[[60, 64], [62]]], "valid": [[[60], [61]]], "test": [[[72], [74]]]}


def mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


valid_files = {
    ".json": json.dumps(SONGS).encode(),
    ".pickle": pickle.dumps(SONGS, protocol=2),
    ".txt": ("To be, or not to be, that is the question.\n" * 20).encode(),
}
data_bytes = st.one_of(
    st.binary(max_size=400),
    st.tuples(
        st.sampled_from(sorted(valid_files)),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    ).map(lambda t: mutate(valid_files[t[0]], t[1])),
)
LOADERS = [
    ("music", "songs.json", {}),
    ("music", "songs.pickle", {}),
    ("text", "corpus.txt", {"task.options.chunk": "20"}),
    ("ptb", "ptb.char.train.txt", {}),
    ("framewise", "data.npz", {}),
    ("ctc", "data.npz", {}),
    ("japanese_vowels", "JapaneseVowels_TRAIN.ts", {}),
]


@fuzz_settings("data_files")
@given(loader=st.sampled_from(LOADERS), content=data_bytes)
def test_random_data_files(tmp_path_factory, loader, content):
    RAN["data_files"] = RAN.get("data_files", 0) + 1
    task, name, extra = loader
    folder = tmp_path_factory.mktemp("data")
    f = folder / name
    f.write_bytes(content)
    path = folder if task in ("japanese_vowels", "ptb") else f
    if task == "japanese_vowels":
        (folder / "JapaneseVowels_TEST.ts").write_bytes(content)
    if task == "ptb":
        for split in ("valid", "test"):
            (folder / f"ptb.char.{split}.txt").write_bytes(content)
    argv = ["train", task, "--dry-run", "--task.options.path", json.dumps(str(path))]
    for k, v in extra.items():
        argv += [f"--{k}", v]
    check_outcome(*run_cli(argv), argv)


def test_zz_report_counts():
    """Print the counts (pytest -s); docs/design.md quotes them."""
    print("fuzz cases run:", RAN, "outcomes:", OUTCOMES)
