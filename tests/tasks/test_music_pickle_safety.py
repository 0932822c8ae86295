"""The music loader reads pickles with a restricted unpickler: plain data loads, anything that
names a class or function is refused before it can run (issue 16)."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch

from lstmlab.tasks import DataError, make

SONGS = {"train": [[[60, 64], [62]]], "valid": [[[60], [61]]], "test": [[[72], [74]]]}


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: creates an empty file and nothing else."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "payload-ran"
    f = tmp_path / "evil.pickle"
    f.write_bytes(pickle.dumps({**SONGS, "train": _Payload(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"io\.open.*convert it to JSON") as err:
        make("music", path=f)
    assert not marker.exists(), "unpickling executed the payload"
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(ValueError("x"), id="exception-object"),
        pytest.param(np.array(["a", "b"]), id="numpy-string-array"),
        pytest.param(np.array([60, None], dtype=object), id="numpy-object-array"),
        pytest.param(np.ma.array([60, 61]), id="numpy-masked-array"),
        pytest.param(np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]), id="numpy-record"),
        pytest.param(np.datetime64("2020-01-01"), id="numpy-datetime"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_any_other_global_is_refused(tmp_path, obj, protocol):
    f = tmp_path / "g.pkl"
    f.write_bytes(pickle.dumps({**SONGS, "extra": obj}, protocol=protocol))
    with pytest.raises(DataError, match="only plain containers and numbers") as err:
        make("music", path=f)
    assert len(str(err.value).splitlines()) == 1


def jsb_like(rng: np.random.Generator) -> dict:
    """What the usual JSB Chorales .pkl holds: train/valid/test lists of pieces, each a list
    of steps, each step the sounding pitches as numpy numbers (floats, ints, or arrays)."""

    def piece(n: int, kind: str):
        steps = []
        for _ in range(n):
            p = sorted(rng.choice(np.arange(36, 82), size=int(rng.integers(0, 5)), replace=False))
            if kind == "float":
                steps.append([np.float64(x) for x in p])
            elif kind == "int":
                steps.append([np.int64(x) for x in p])
            else:
                steps.append(np.array(p, dtype=np.int32))
        return steps

    kinds = ["float", "int", "array"]
    return {
        s: [piece(int(rng.integers(4, 9)), kinds[i % 3]) for i in range(k)]
        for s, k in (("train", 6), ("valid", 3), ("test", 3))
    }


def as_plain(data: dict) -> dict:
    return {
        s: [[[int(x) for x in step] for step in p] for p in pieces] for s, pieces in data.items()
    }


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_scalars_and_arrays_of_a_jsb_pickle_load(tmp_path, protocol):
    data = jsb_like(np.random.default_rng(protocol))
    f = tmp_path / "JSB Chorales.pkl"
    f.write_bytes(pickle.dumps(data, protocol=protocol))
    j = tmp_path / "jsb.json"
    j.write_text(json.dumps(as_plain(data)))
    a, b = make("music", path=f), make("music", path=j)
    for split in ("train", "valid", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.features, y.features) and torch.equal(x.targets, y.targets)
    assert a.train.features.sum() > 0


def test_numpy_values_come_back_exactly():
    from lstmlab.tasks.music import safe_unpickle

    data = {
        "f": np.float64(60.5),
        "i": np.int64(-3),
        "u8": np.uint8(200),
        "b": np.bool_(True),
        "be": np.arange(6, dtype=">f4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "empty": np.zeros((0, 3)),
        "c": np.array([1 + 2j]),
    }
    for protocol in range(6):
        out = safe_unpickle(pickle.dumps(data, protocol=protocol))
        for k, v in data.items():
            assert type(out[k]) is type(v) and np.asarray(out[k]).dtype == np.asarray(v).dtype, k
            assert np.array_equal(out[k], v), k


def test_numpy_1_spellings_load():
    """A pickle written by numpy 1 names ``numpy.core.multiarray``, numpy 2 ``numpy._core``."""
    from lstmlab.tasks.music import safe_unpickle

    new = pickle.dumps({"a": np.array([60, 64]), "s": np.float64(62.0)}, protocol=2)
    assert b"numpy._core.multiarray" in new
    old = new.replace(b"numpy._core.", b"numpy.core.")
    for raw in (new, old):
        out = safe_unpickle(raw)
        assert out["a"].tolist() == [60, 64] and out["s"] == 62.0


@pytest.mark.parametrize(
    "raw, words",
    [
        # numpy.load named directly, any other numpy function
        (b"cnumpy\nload\n(S'x.npy'\ntR.", "numpy.load"),
        (b"cnumpy.core.multiarray\nfromstring\n(S'x'\ntR.", "fromstring"),
        # _reconstruct asked for something that is not numpy.ndarray
        (
            b"cnumpy.core.multiarray\n_reconstruct\n(c__builtin__\nset\n(I0\ntS'b'\ntR.",
            "not a plain ndarray",
        ),
        # a dtype spelled as an object code, and one with fields in its state
        (b"cnumpy\ndtype\n(S'O8'\nI0\nI1\ntR.", "numpy.dtype('O8')"),
        (b"cnumpy\ndtype\n(S'f8'\nI0\nI1\ntR(I3\nS'<'\nNS'a'\nNI-1\nI-1\nI0\ntb.", "structured"),
        # numpy.ndarray called by hand is not callable
        (b"cnumpy\nndarray\n(I3\ntR.", "not callable"),
        # bytes() asked to allocate
        (b"c__builtin__\nbytes\n(I100000000000\ntR.", "bytes with arguments"),
    ],
    ids=["numpy.load", "fromstring", "reconstruct-set", "object-dtype", "fields", "call", "bytes"],
)
def test_crafted_numpy_pickles_are_refused(raw, words):
    from lstmlab.tasks.music import safe_unpickle

    with pytest.raises((pickle.UnpicklingError, TypeError), match=re.escape(words)):
        safe_unpickle(raw)


def test_array_data_of_the_wrong_length_is_refused(tmp_path):
    raw = pickle.dumps({**SONGS, "a": np.array([60, 64])}, protocol=2)
    bad = raw.replace(b"<\x00\x00\x00", b"<\x00\x00", 1)
    assert bad != raw
    f = tmp_path / "bad.pkl"
    f.write_bytes(bad)
    with pytest.raises(DataError, match="cannot be read as pickle"):
        make("music", path=f)


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_plain_data_loads_in_every_protocol(tmp_path, protocol):
    from lstmlab.tasks.music import safe_unpickle

    data = {**SONGS, "meta": {"set": {1, 2}, "frozen": frozenset({3}), "t": (1.5, None, b"x")}}
    assert safe_unpickle(pickle.dumps(data, protocol=protocol)) == data
    f = tmp_path / "songs.pkl"
    f.write_bytes(pickle.dumps(SONGS, protocol=protocol))
    assert len(make("music", path=f).train) == 1


def test_python2_pickle_of_plain_data_loads(tmp_path):
    # what Python 2's cPickle.dumps(SONGS-like dict, 2) writes: __builtin__ spellings allowed
    raw = (
        b"\x80\x02}q\x00(U\x05trainq\x01]q\x02]q\x03(]q\x04K<a]q\x05K=aeaU\x05validq\x06"
        b"h\x02U\x04testq\x07h\x02U\x01sc__builtin__\nset\nq\x08]q\tK\x01a\x85Rq\nu."
    )
    from lstmlab.tasks.music import safe_unpickle

    data = safe_unpickle(raw)
    assert data["train"] == [[[60], [61]]] and data["s"] == {1}
    f = tmp_path / "py2.pickle"
    f.write_bytes(raw)
    assert len(make("music", path=f).train) == 1


def test_nothing_in_the_package_unpickles_untrusted_data():
    """The restricted unpickler is the only unpickling in lstmlab (static check of the source;
    ``torch.load(..., weights_only=True)`` is torch's own restricted unpickler)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "lstmlab"
    risky = re.compile(
        r"pickle\.loads?\(|\.Unpickler\(|torch\.load\((?![^)]*weights_only=True)|allow_pickle\s*=\s*True|"
        r"np\.load\((?![^)]*allow_pickle=False)|numpy\.load\((?![^)]*allow_pickle=False)|"
        r"joblib\.load|dill\.|cloudpickle|shelve\.open|marshal\.loads?"
    )
    hits = []
    for path in root.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if risky.search(line) and "pickle.Unpickler):" not in line:
                hits.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert hits == [], hits
