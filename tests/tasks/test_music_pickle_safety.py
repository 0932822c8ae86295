"""The music loader reads pickles with a restricted unpickler: plain data loads, anything that
names a class or function is refused before it can run (issue 16)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

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
        pytest.param(np.array([60, 61]), id="numpy-array"),
        pytest.param(np.int64(60), id="numpy-scalar"),
        pytest.param(ValueError("x"), id="exception-object"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_any_global_is_refused(tmp_path, obj, protocol):
    f = tmp_path / "g.pkl"
    f.write_bytes(pickle.dumps({**SONGS, "extra": obj}, protocol=protocol))
    with pytest.raises(DataError, match="only plain containers and numbers"):
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
