"""Shared pieces for the training tests (the tiny run itself lives in ``tests/runkit.py``)."""

from __future__ import annotations

import pytest
from runkit import TINY


@pytest.fixture
def tiny_overrides():
    return dict(TINY)
