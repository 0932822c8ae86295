"""Evaluation reads a split in chunks bounded by what a row costs per step, the recurrent
state included (a character model's 1,000 chunks of 200 steps once took 1.2 GB, issue 22), and
the chunking does not change the metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lstmlab.training import build
from lstmlab.training.config import resolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_cli_tasks import text_file  # noqa: E402


def built_text(tmp_path, blocks: int = 16):
    over = {"task.name": "text", "task.options.path": str(text_file(tmp_path))}
    over.update({"task.options.chunk": "40", "model.blocks": str(blocks)})
    return build.build_all(resolve([], over))


def test_the_chunk_counts_the_recurrent_state(tmp_path):
    b = built_text(tmp_path, blocks=16)
    V = b.task.input_size
    assert build.eval_width(b.model, b.task) == V + V + 6 * 16


def test_chunking_leaves_the_metrics_alone(tmp_path, monkeypatch):
    b = built_text(tmp_path)
    whole = b.evaluate(b.model)
    seen = []
    original = build.DeviceSplit.chunks

    def spy(self, size=build.EVAL_CHUNK):
        seen.append(size)
        return original(self, size)

    monkeypatch.setattr(build.DeviceSplit, "chunks", spy)
    monkeypatch.setattr(build, "EVAL_ELEMENTS", 3 * 40 * build.eval_width(b.model, b.task))
    chunked = b.evaluate(b.model)
    assert seen == [3] and len(b.eval_data) > 3
    assert chunked == pytest.approx(whole, rel=1e-5)
