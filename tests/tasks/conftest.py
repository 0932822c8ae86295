from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch, request):
    """Tests never touch the user's cache; slow real-corpus tests share one session cache."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("LSTMLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
