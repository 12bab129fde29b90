"""Linter test setup: every test gets its own result cache."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own cache folder so runs never see each other's entries."""
    monkeypatch.setenv("TF2TORCH_CACHE_DIR", str(tmp_path_factory.mktemp("lint-cache")))
