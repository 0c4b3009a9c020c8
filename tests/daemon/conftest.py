"""Fixtures shared by the daemon tests; what they put in a store is in ``store_data.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.daemon.store import Store
from tether.daemon.store.memory import MemoryStore
from tether.daemon.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The store contract runs against every backend: SQLite (a file) and the in-memory one."""
    s: Store = SQLiteStore(tmp_path / "t.sqlite") if request.param == "sqlite" else MemoryStore()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """For what only SQLite does: group commits, its file, its query plans."""
    s = SQLiteStore(tmp_path / "t.sqlite")
    await s.open()
    yield s
    await s.close()
