"""Schema versions, applied with ``PRAGMA user_version``.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``. ``tetherd migrate``
shows (dry run, the default) or applies (``--no-dry-run``) the pending ones; ``tetherd
serve`` applies them at start on a new or older database.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "create the initial schema (agents, tags, credentials, tasks, deliveries)",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            token_hash BLOB NOT NULL,
            machine_uuid TEXT NOT NULL DEFAULT '',
            hostname TEXT NOT NULL DEFAULT '',
            platform TEXT NOT NULL DEFAULT '',
            agent_version TEXT NOT NULL DEFAULT '',
            commands BLOB,
            enrolled_at REAL NOT NULL,
            last_seen REAL
        );
        CREATE INDEX agents_machine ON agents (machine_uuid);
        CREATE TABLE agent_tags (
            agent_id TEXT NOT NULL REFERENCES agents (id),
            tag TEXT NOT NULL,
            PRIMARY KEY (agent_id, tag)
        ) WITHOUT ROWID;
        CREATE INDEX agent_tags_by_tag ON agent_tags (tag, agent_id);
        CREATE TABLE admin_tokens (
            id INTEGER PRIMARY KEY,
            token_hash BLOB NOT NULL UNIQUE,
            role TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE TABLE enroll_keys (
            id INTEGER PRIMARY KEY,
            key_hash BLOB NOT NULL UNIQUE,
            tags BLOB NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            uses_left INTEGER,
            revoked_at REAL
        );
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            command TEXT NOT NULL,
            args BLOB NOT NULL,
            target_kind TEXT NOT NULL CHECK (target_kind IN ('agent', 'tag', 'all')),
            target TEXT NOT NULL,
            priority INTEGER NOT NULL,
            ttl INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'active'
        );
        CREATE INDEX tasks_active ON tasks (state, target_kind, target);
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            task_id INTEGER NOT NULL REFERENCES tasks (id),
            agent_id TEXT NOT NULL REFERENCES agents (id),
            state TEXT NOT NULL,
            priority INTEGER NOT NULL,
            run INTEGER NOT NULL DEFAULT 1,
            updated_at REAL NOT NULL,
            sent_at REAL,
            acked_at REAL,
            started_at REAL,
            finished_at REAL,
            progress TEXT NOT NULL DEFAULT '',
            result BLOB,
            error TEXT NOT NULL DEFAULT '',
            UNIQUE (task_id, agent_id)
        );
        CREATE INDEX deliveries_pending ON deliveries (agent_id, state, priority DESC, task_id, id);
        """,
    ),
]

LATEST = len(MIGRATIONS)
APPLICATION_ID = 0x74657468  # "teth": marks the file as ours (PRAGMA application_id)
