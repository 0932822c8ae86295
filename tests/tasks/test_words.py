"""Word-level language modelling: tokens, the capped vocabulary, the stream layout, perplexity,
the model's word embedding and carried state, and training from the CLI with the state
carried across chunks (resumable to the same parameters)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lstmlab import SequenceModel
from lstmlab.cli import main
from lstmlab.tasks import DataError, make, names
from lstmlab.tasks.words import Perplexity, Vocabulary, index_tokens, tokenize
from lstmlab.training.checkpoint import load_checkpoint

WORDS = "the cat sat on a mat and dog ran far away .".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(300)]
    path = tmp_path_factory.mktemp("words") / "tiny.txt"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def ptb_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ptb")
    for name, text in (
        ("train", " the cat <unk> on the mat \n a dog ran <unk> \n" * 20),
        ("valid", " the dog sat \n"),
        ("test", " a cat ran far \n"),
    ):
        (d / f"ptb.{name}.txt").write_text(text)
    return d


def test_tokenize_plain_and_ptb():
    assert tokenize("O'er the hills, I'll go!\n\nNext") == [
        "o'er", "the", "hills", ",", "i'll", "go", "!", "<eos>", "next", "<eos>",
    ]  # fmt: skip
    assert tokenize(" a <unk> b \n c\n", "ptb") == ["a", "<unk>", "b", "<eos>", "c", "<eos>"]


def test_vocabulary_keeps_the_most_frequent_and_maps_the_rest_to_unk():
    tokens, (train, test) = index_tokens(
        [["b", "a", "a", "c", "<unk>", "b", "d"], ["a", "z", "d", "c"]]
    )
    vocab, remap = Vocabulary.build(tokens, train, 3)
    assert vocab.words == ("<unk>", "b", "a")  # b and a twice (b seen first), then c, d once
    assert remap[test].tolist() == [2, 0, 0, 0]
    assert remap[train].tolist() == [1, 2, 2, 0, 0, 1, 0]


def test_stream_layout_carries_each_stream_chunk_to_chunk(corpus):
    task = make("words", path=str(corpus), vocab_size=20, chunk=7, streams=3)
    S, tr = 3, task.train
    assert task.info["streams"] == S and task.output_size == task.input_size == 14
    x = tr.features[..., 0].long()
    n_chunks = len(tr) // S
    for s in range(S):  # stream s read chunk after chunk is one contiguous text
        inp = torch.cat([x[j * S + s, : tr.lengths[j * S + s]] for j in range(n_chunks)])
        tgt = torch.cat([tr.targets[j * S + s, : tr.lengths[j * S + s]] for j in range(n_chunks)])
        assert torch.equal(inp[1:], tgt[:-1])
    assert int(tr.lengths[:S].min()) == 7 and len(set(tr.lengths[-S:].tolist())) == 1
    # held-out rows: every word after the first predicted once
    te = task.test
    assert int(te.lengths.sum()) == task.info["words"]["test"] - 1
    assert task.info["eval_chunk"] == 70
    short = make("words", path=str(corpus), vocab_size=20, chunk=7, streams=3, eval_words=50)
    assert short.info["words"]["test"] == 50 and int(short.test.lengths.sum()) == 49
    assert len(short.train) == len(tr)  # the training text is whole


def test_ptb_format(ptb_dir):
    task = make("ptb_words", path=str(ptb_dir), vocab_size=100, chunk=4, streams=2)
    assert "ptb" in task.info["source"]
    vocab = task.info["vocab"]
    assert vocab[0] == "<unk>" and vocab.count("<unk>") == 1 and "<eos>" in vocab
    # the corpus' own <unk> tokens are index 0
    assert task.info["unk_fraction"]["train"] == pytest.approx(2 / 12)
    assert "ptb_words" in names() and "words" in names()


def test_lstmlab_tasks_lists_the_word_tasks(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "words" in out and "ptb_words" in out and "perplexity" in out


def test_perplexity_of_uniform_predictions_is_the_vocabulary_size(corpus):
    task = make("words", path=str(corpus), vocab_size=10, chunk=5, streams=2)
    b = task.test.batch()
    uniform = torch.full((*b.targets.shape, 10), 0.1)
    m = task.evaluate(uniform, b)
    assert m["perplexity"] == pytest.approx(10.0) and isinstance(task.scorer, Perplexity)
    assert m["nll_per_word"] == pytest.approx(math.log(10))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(vocab_size=1), "vocab_size must be an integer >= 2"),
        (dict(chunk=0), "chunk must be"),
        (
            dict(chunk=5000, streams=1),
            r"fewer than one chunk per stream \(streams=1 × chunk=5000\)",
        ),
        (dict(format="xml"), "format must be"),
    ],
)
def test_bad_options(corpus, options, message):
    with pytest.raises((ValueError, DataError), match=message):
        make("words", path=str(corpus), **options)


def test_embedding_and_carried_state_continue_a_sequence():
    """Two chunks, the second started from the first's final state, give the outputs of the
    whole sequence at once: what carrying the state across chunks relies on."""
    m = SequenceModel(9, 6, 9, output="softmax", embedding="auto", seed=1, dtype=torch.float64,
                      variant="G-LSTM", groups=2, proj_size=4, peepholes=False)  # fmt: skip
    assert m.embed.weight.shape == (10, 4) and m.embed.weight[9].abs().sum() == 0
    idx = torch.randint(0, 9, (3, 10, 1), generator=torch.Generator().manual_seed(2))
    x = idx.double()
    whole = m(x)
    first = m(x[:, :6])
    second = m(x[:, 6:], initial_state=m.final_state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-12)
    # padding (-1) looks up the zero row
    padded = torch.cat([x[:1, :4], -torch.ones(1, 6, 1, dtype=torch.float64)], 1)
    out = m(padded, torch.tensor([4]))
    torch.testing.assert_close(out[:, :4], whole[:1, :4], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="symbol indices"):
        m(torch.zeros(1, 3, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match="embedding must be"):
        SequenceModel(9, 6, 9, embedding=0)


def _flags(corpus, optimizer="adam", iters="6", **extra):
    flags = {
        "task.options": f"{{path = '{corpus}', vocab_size = 12, chunk = 6, streams = 4}}",
        "model.variant": "F-LSTM",
        "model.blocks": "8",
        "model.cells_per_block": "1",
        "model.options": "{factorization_rank = 3, proj_size = 4, peepholes = false}",
        "optimizer.name": optimizer,
        "optimizer.batch_size": "4",
        "optimizer.lr": "0.01",
        "stop.max_iterations": iters,
        "eval_every": "3",
        "precision": "float32",
        **extra,
    }
    return [x for k, v in flags.items() for x in (f"--{k}", v)]


def test_train_from_the_cli_carries_the_state_and_resumes_exactly(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        main(
            [
                "train",
                "words",
                "--run-dir",
                str(a),
                "--progress",
                "none",
                *_flags(corpus, iters="8"),
            ]
        )
        == 0
    )
    summary = json.loads((a / "summary.json").read_text())
    assert summary["final"]["perplexity"] < 12  # better than uniform over the vocabulary
    ckpt = load_checkpoint(a / "checkpoint.safetensors")
    h, c = ckpt["train_state"]["carried"]
    assert h.shape == (1, 4, 4) and c.shape == (1, 4, 8) and h.abs().sum() > 0
    # 5 iterations, then resumed to 8: the carried state survives the checkpoint
    assert (
        main(
            [
                "train",
                "words",
                "--run-dir",
                str(b),
                "--progress",
                "none",
                *_flags(corpus, iters="5"),
            ]
        )
        == 0
    )
    assert main(["resume", str(b), "--progress", "none", "--stop.max_iterations", "8"]) == 0
    pa, pb = ckpt["model"], load_checkpoint(b / "checkpoint.safetensors")["model"]
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_objective_on_a_stream_batch_continues_the_previous_chunk(corpus):
    """``loop.stream_batch`` hands the carried state to the objective, whose loss on chunk 1 is
    then the loss of chunk 1 read right after chunk 0 in one pass."""
    from lstmlab.data import Batch
    from lstmlab.objective import Objective
    from lstmlab.training.loop import stream_batch

    task = make("words", path=str(corpus), vocab_size=12, chunk=6, streams=4)
    m = SequenceModel(hidden_size=5, seed=3, dtype=torch.float64, variant="F-LSTM",
                      factorization_rank=2, **task.model_kwargs())  # fmt: skip
    b0 = stream_batch(task.train, 4, 0, None).to(dtype=torch.float64)
    assert b0.initial_state is None
    Objective(m, b0).loss()
    b1 = stream_batch(task.train, 4, 1, m.final_state).to(dtype=torch.float64)
    assert b1.initial_state is not None
    carried = Objective(m, b1).loss()
    both = torch.cat([b0.inputs, b1.inputs], 1)
    logits = m(both)[:, 6:]
    expected = float(m.loss(logits, Batch(b1.inputs, b1.targets, b1.lengths)).detach())
    assert carried == pytest.approx(expected, rel=1e-12)
    zero = Objective(m, Batch(b1.inputs, b1.targets, b1.lengths)).loss()  # from a zero state
    assert abs(zero - expected) > 1e-8


def test_batch_methods_start_every_chunk_from_zero(corpus, tmp_path):
    run = tmp_path / "lbfgs"
    flags = _flags(corpus, optimizer="lbfgs", iters="2", **{"optimizer.lr": "1"})
    assert main(["train", "words", "--run-dir", str(run), "--progress", "none", *flags]) == 0
    assert load_checkpoint(run / "checkpoint.safetensors")["train_state"]["carried"] is None


def test_cli_errors_name_the_argument(corpus, tmp_path, capsys):
    bad = _flags(corpus, **{"optimizer.batch_size": "3"})
    assert main(["train", "words", "--run-dir", str(tmp_path / "x"), *bad]) == 2
    assert "optimizer.batch_size" in capsys.readouterr().err
    bad = _flags(corpus, **{"task.options": f"{{path = '{corpus}', vocab_size = 1}}"})
    assert main(["train", "words", "--run-dir", str(tmp_path / "y"), *bad]) == 2
    assert "vocab_size must be an integer >= 2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_loop_starts_each_chunk_from_the_previous_final_state(corpus):
    """``loop.train`` with ``carry_state``: the chunks come in stream order, chunk j starts
    from the state the model ended chunk j − 1 in, and an epoch starts from zero."""
    from lstmlab.objective import Objective
    from lstmlab.optim import SGD
    from lstmlab.training.loop import train
    from lstmlab.training.state import TrainState
    from lstmlab.training.stopping import StoppingRule

    task = make("words", path=str(corpus), vocab_size=12, chunk=40, streams=4)
    n_batches = len(task.train) // 4
    m = SequenceModel(hidden_size=5, seed=3, **task.model_kwargs())
    seen = []

    def make_objective(model, batch):
        seen.append((batch, model.final_state))
        return Objective(model, batch)

    class Log:
        def write(self, record):
            pass

    train(m, SGD(lr=0.1), task.train, lambda model: {"loss": 0.0},
          StoppingRule(metric="loss", max_iterations=n_batches + 2), Log(), state=TrainState(),
          make_objective=make_objective, batch_size=4, seed=0, carry_state=True)  # fmt: skip
    assert len(seen) == n_batches + 2
    for j, (batch, before) in enumerate(seen):
        rows = torch.arange(4) + 4 * (j % n_batches)
        assert torch.equal(batch.inputs, task.train.batch(rows).inputs)
        if j % n_batches == 0:
            assert batch.initial_state is None
        else:
            assert all(torch.equal(a, b) for a, b in zip(batch.initial_state, before, strict=True))
