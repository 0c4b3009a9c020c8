"""Fixtures shared by the daemon tests; what they put in a store is in ``store_data.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.daemon.store.sqlite import SQLiteStore


@pytest.fixture(params=["file", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """The store contract runs against every backend: a SQLite file and SQLite in memory."""
    s = SQLiteStore(tmp_path / "t.sqlite" if request.param == "file" else ":memory:")
    await s.open()
    yield s
    await s.close()
