"""Schema versions, applied with ``PRAGMA user_version``.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``. ``tetherd migrate``
shows (dry run, the default) or applies (``--no-dry-run``) the pending ones; ``tetherd
serve`` applies them at start on a new or older database.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from . import StoreError

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
    (
        "polling runs and their history, recurring schedules",
        """
        -- A polling delivery's next run: its command and args when a ScheduledCommand changed
        -- them (NULL: the task's), when it falls due, and when the whole sequence times out.
        ALTER TABLE deliveries ADD COLUMN command TEXT;
        ALTER TABLE deliveries ADD COLUMN args BLOB;
        ALTER TABLE deliveries ADD COLUMN next_run_at REAL;
        ALTER TABLE deliveries ADD COLUMN poll_deadline REAL;
        ALTER TABLE deliveries ADD COLUMN poll_timeout REAL;
        -- Who decided a delivery's end: 'agent' (its result) or 'daemon' (ttl, untask, polling timeout).
        ALTER TABLE deliveries ADD COLUMN ended_by TEXT;
        CREATE INDEX deliveries_polling ON deliveries (state, poll_deadline) WHERE poll_deadline IS NOT NULL;
        ALTER TABLE tasks ADD COLUMN hide_polling_output INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE tasks ADD COLUMN schedule_id INTEGER;
        CREATE INDEX tasks_by_schedule ON tasks (schedule_id, id) WHERE schedule_id IS NOT NULL;
        -- One row per run that scheduled another (the last run's outcome is the delivery's).
        CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
            run INTEGER NOT NULL,
            at REAL NOT NULL,
            partial BLOB,
            poll_message TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            next_run_at REAL
        );
        CREATE INDEX history_by_delivery ON history (delivery_id, run);
        CREATE TABLE schedules (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            command TEXT NOT NULL,
            args BLOB NOT NULL,
            target_kind TEXT NOT NULL CHECK (target_kind IN ('agent', 'tag', 'all')),
            target TEXT NOT NULL,
            every REAL,
            cron TEXT,
            timezone TEXT NOT NULL DEFAULT 'UTC',
            ttl INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            hide_polling_output INTEGER NOT NULL DEFAULT 0,
            missed TEXT NOT NULL CHECK (missed IN ('once', 'skip')),
            paused INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            anchor REAL NOT NULL,
            next_fire_at REAL,
            last_fire_at REAL,
            fired INTEGER NOT NULL DEFAULT 0,
            missed_total INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0
        );
        """,
    ),
    (
        "LimaCharlie selectors and investigation ids on tasks",
        """
        -- A selector task (target_kind 'all' with a selector) reaches the agents the selector
        -- matches; NULL for every other task.
        ALTER TABLE tasks ADD COLUMN selector TEXT;
        -- LimaCharlie's context / inv_id, kept with the task and shown with its results.
        ALTER TABLE tasks ADD COLUMN investigation_id TEXT NOT NULL DEFAULT '';
        CREATE INDEX tasks_selecting ON tasks (expires_at) WHERE selector IS NOT NULL AND state = 'active';
        """,
    ),
    (
        "polling sequences started by another task's run, and what each scheduled run asked for",
        """
        -- A polling sequence started by another task's run (XSOAR: a list of results with
        -- several schedules): shown, waited for and cancelled with that task.
        ALTER TABLE tasks ADD COLUMN parent_id INTEGER;
        CREATE INDEX tasks_by_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
        -- What each scheduled run asked for: the next run's command and args, XSOAR's items_remaining.
        ALTER TABLE history ADD COLUMN next_command TEXT;
        ALTER TABLE history ADD COLUMN next_args BLOB;
        ALTER TABLE history ADD COLUMN items_remaining INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        "enrollment: keys that allow requested tags, possible clones, removed and merged agents",
        """
        -- 1: agents enrolling with this key may ask for tags beyond its own (--allow-requested-tags).
        ALTER TABLE enroll_keys ADD COLUMN allow_requested_tags INTEGER NOT NULL DEFAULT 0;
        -- An agent enrolled without proof from the machine UUID of this enrolled one.
        ALTER TABLE agents ADD COLUMN clone_of TEXT;
        -- Removed (agent.rm) or merged into another agent (agent.merge): the row stays for its
        -- deliveries' history, in no target or listing any more (store.sqlite_tasks.LIVE); a
        -- merged agent's id with the token it had logs in as the agent it was merged into.
        ALTER TABLE agents ADD COLUMN removed_at REAL;
        ALTER TABLE agents ADD COLUMN merged_into TEXT;
        """,
    ),
    (
        "agents bound to their TLS client certificate",
        """
        -- SHA-256 of the DER client certificate the agent enrolled (or first logged in) with,
        -- when bind_client_certificates is on: its sessions must show that certificate.
        ALTER TABLE agents ADD COLUMN cert_sha256 BLOB;
        """,
    ),
    (
        "alerts, deduplicated (one row per checksum), and alerts counted over each agent's rate limit",
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            checksum BLOB NOT NULL UNIQUE,      -- SHA-256 over tetherd's alert_checksum fields
            agent_id TEXT NOT NULL,             -- the agent of the latest copy
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            path TEXT NOT NULL DEFAULT '',
            hash TEXT NOT NULL DEFAULT '',
            severity TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            count INTEGER NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            acked_at REAL,
            acked_count INTEGER NOT NULL DEFAULT 0,
            details BLOB,                       -- the latest copy's details (MessagePack), NULL: none
            raised_at REAL,
            delivery_id INTEGER
        );
        CREATE INDEX alerts_last_seen ON alerts (last_seen);
        CREATE INDEX alerts_agent ON alerts (agent_id, last_seen);
        CREATE TABLE alert_drops (
            agent_id TEXT PRIMARY KEY,
            dropped INTEGER NOT NULL,
            last_at REAL NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        "automation hooks: definitions, the after-hooks' outbox, every run (issue 20)",
        """
        CREATE TABLE hooks (
            name TEXT PRIMARY KEY,          -- case-sensitive (BINARY collation)
            spec BLOB NOT NULL,             -- msgpack of store.HookRecord (secret included)
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE hook_outbox (
            id INTEGER PRIMARY KEY,
            hook TEXT NOT NULL,
            trigger TEXT NOT NULL,
            payload BLOB NOT NULL,          -- the JSON the action is given
            dedup TEXT,                     -- a run that must be queued once (after-task-done)
            queued_at REAL NOT NULL,
            next_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX hook_outbox_due ON hook_outbox (next_at);
        CREATE UNIQUE INDEX hook_outbox_once ON hook_outbox (hook, dedup) WHERE dedup IS NOT NULL;
        CREATE TABLE hook_runs (
            id INTEGER PRIMARY KEY,
            hook TEXT NOT NULL,
            trigger TEXT NOT NULL,
            started_at REAL NOT NULL,
            duration REAL NOT NULL,
            outcome TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            attempt INTEGER NOT NULL DEFAULT 1,
            test INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX hook_runs_by_hook ON hook_runs (hook, id);
        """,
    ),
    (
        "agents replaced by a new agent from another machine UUID",
        """
        -- The agent that replaced this one: it proved it was this one from another machine
        -- UUID (re-imaged, cloned), and enrolled as a new agent; this one's token is void.
        ALTER TABLE agents ADD COLUMN replaced_by TEXT;
        """,
    ),
    (
        "tasks not pushed before their time: a delay and a jitter per agent",
        """
        -- Seconds after created_at before a delivery is pushed, plus up to jitter more drawn
        -- per agent; a delivery not yet due is 'delayed', its time in next_run_at.
        ALTER TABLE tasks ADD COLUMN delay REAL NOT NULL DEFAULT 0;
        ALTER TABLE tasks ADD COLUMN jitter REAL NOT NULL DEFAULT 0;
        """,
    ),
    (
        "agent state reports: the latest of each agent and a history of its changes",
        """
        -- The latest state report of each agent (a msgpack AgentState, tether.protocol.agent_state).
        CREATE TABLE agent_state (
            agent_id TEXT PRIMARY KEY REFERENCES agents (id),
            reported_at REAL NOT NULL,
            state BLOB NOT NULL
        ) WITHOUT ROWID;
        -- One row per tracked fact that changed from one report to the next (values msgpack).
        CREATE TABLE agent_state_history (
            id INTEGER PRIMARY KEY,
            agent_id TEXT NOT NULL REFERENCES agents (id),
            at REAL NOT NULL,
            fact TEXT NOT NULL,
            old BLOB,
            new BLOB
        );
        CREATE INDEX agent_state_history_by_agent ON agent_state_history (agent_id, id);
        """,
    ),
    (
        "agents' configuration: layers, content-addressed reported configurations",
        """
        -- What operators set: one row per tag or agent and key (values msgpack); the defaults
        -- are not stored (tether.protocol.agent_config).
        CREATE TABLE config_layers (
            scope TEXT NOT NULL CHECK (scope IN ('tag', 'agent')),
            name TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (scope, name, key)
        ) WITHOUT ROWID;
        -- Each distinct configuration agents reported, once, by the SHA-256 of its canonical JSON.
        CREATE TABLE config_blobs (
            hash TEXT PRIMARY KEY,
            body BLOB NOT NULL
        ) WITHOUT ROWID;
        -- The configuration each agent last reported (its hash), when, and why it did not
        -- apply the last one pushed to it.
        ALTER TABLE agents ADD COLUMN config_hash TEXT;
        ALTER TABLE agents ADD COLUMN config_at REAL;
        ALTER TABLE agents ADD COLUMN config_error TEXT NOT NULL DEFAULT '';
        """,
    ),
]

LATEST = len(MIGRATIONS)
APPLICATION_ID = 0x74657468  # "teth": marks the file as ours (PRAGMA application_id)


def open_checked(path: Path) -> sqlite3.Connection:
    """Open ``path`` as a tether database, refusing foreign or corrupt files untouched."""
    existed = path.exists() and path.stat().st_size > 0
    if existed:
        with path.open("rb") as f:
            header = f.read(16)
        if header != b"SQLite format 3\x00":
            raise StoreError(f"{path} is not a SQLite database; refusing to touch it")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if existed and app_id not in (0, APPLICATION_ID):
            raise StoreError(f"{path} is a SQLite database of another application (id {app_id:#x})")
        if existed and app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(f"{path} is a SQLite database, but not tether's; refusing to touch it")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} cannot be read as a SQLite database: {exc}") from None
    except StoreError:
        conn.close()
        raise
    return conn


def pending_migrations(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > LATEST:
        raise StoreError(f"database schema version {version} is newer than this tetherd ({LATEST})")
    return [(i + 1, MIGRATIONS[i][0]) for i in range(version, LATEST)]


def apply_migrations(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """Apply pending migrations, each atomically with its version bump."""
    done = pending_migrations(conn)
    for version, _ in done:
        script = MIGRATIONS[version - 1][1]
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {version};"
                f" PRAGMA application_id = {APPLICATION_ID}; COMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return done
