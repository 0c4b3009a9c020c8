"""The journal's file format (``PRAGMA user_version``) and how older files are upgraded.

Journals live on endpoints for years and every upgrade of tether-agent must open the file
the previous one left: each schema version has a migration to the next, run in the same
transaction that sets ``user_version``, so a failure leaves the file as it was.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 5
"""``PRAGMA user_version``. 1: keyed by delivery id; 2: keyed by (delivery id, run);
3: the identity names the TLS files of a wss:// daemon; 4: the alert outbox; 5: the
configuration the agent runs with."""

_DELIVERIES = """
CREATE TABLE {name} (
    delivery_id INTEGER NOT NULL,
    run INTEGER NOT NULL DEFAULT 1,
    task_id INTEGER NOT NULL,
    command TEXT NOT NULL,
    args BLOB NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'finished', 'cancelled')),
    result BLOB,            -- encoded Result frame while in the outbox, NULL once confirmed
    confirmed INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (delivery_id, run)
)"""
_INDEXES = """
CREATE INDEX deliveries_open ON deliveries (state) WHERE state IN ('pending', 'running');
CREATE INDEX deliveries_outbox ON deliveries (delivery_id, run) WHERE result IS NOT NULL;
CREATE INDEX deliveries_finished_at ON deliveries (finished_at);
"""
_COLUMNS = ("delivery_id, run, task_id, command, args, priority, state, result, confirmed, "
            "received_at, started_at, finished_at")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    server TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    token TEXT NOT NULL,
    machine_uuid TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    enrolled_at REAL NOT NULL,
    ca_file TEXT NOT NULL DEFAULT '',
    cert_file TEXT NOT NULL DEFAULT '',
    key_file TEXT NOT NULL DEFAULT ''
);
""" + _DELIVERIES.format(name="deliveries") + ";" + _INDEXES

_ALERTS = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: a late ``alerted`` names no newer alert
    frame BLOB NOT NULL     -- the encoded Alert frame, sent until tetherd names it in an ``alerted``
)"""

_CONFIG = """
CREATE TABLE config (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    settings TEXT NOT NULL  -- JSON: what differs from the defaults, as last applied
)"""


def _statements(script: str) -> list[str]:
    return [part for part in script.split(";") if part.strip()]


_TLS_COLUMNS = ("ca_file", "cert_file", "key_file")


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a journal from schema ``version`` to :data:`SCHEMA_VERSION`, inside the
    caller's transaction (a failure leaves the file as it was), one version at a time."""
    if version == 0:  # a new file
        for statement in _statements(_SCHEMA + ";" + _ALERTS + ";" + _CONFIG):
            db.execute(statement)
        return
    if version not in (1, 2, 3, 4):
        raise RuntimeError(f"journal schema {version} is not one this tether-agent can migrate")
    if version == 1:
        # SQLite cannot change a primary key: build the v2 table, copy, drop, rename
        # (sqlite.org/lang_altertable.html, "Making Other Kinds Of Table Schema Changes").
        # v1 rows keep their run (always 1); a v1 tombstone stays at run 1, which blocks
        # every run of its delivery just as a run-0 tombstone does.
        db.execute(_DELIVERIES.format(name="deliveries_v2"))
        db.execute(f"INSERT INTO deliveries_v2 ({_COLUMNS}) SELECT {_COLUMNS} FROM deliveries")
        db.execute("DROP TABLE deliveries")  # its indexes go with it
        db.execute("ALTER TABLE deliveries_v2 RENAME TO deliveries")
        for statement in _statements(_INDEXES):
            db.execute(statement)
    if version <= 2:
        # 2 -> 3: an agent enrolled before knew no TLS files ("": the system's CA store).
        for column in _TLS_COLUMNS:
            db.execute(f"ALTER TABLE identity ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
    if version <= 3:
        # 3 -> 4: the alert outbox, empty.
        db.execute(_ALERTS)
    # 4 -> 5: no configuration applied yet (the defaults).
    db.execute(_CONFIG)
