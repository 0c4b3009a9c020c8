"""tetherd's administrative commands, run as a user would."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tether.daemon.store.schema import APPLICATION_ID, LATEST, MIGRATIONS

BIN = Path(sys.executable).parent


def tetherd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tetherd"), *args], capture_output=True, text=True, timeout=60)


def test_init_prints_credentials_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = tetherd("init", "--data-dir", str(data), "--json")
    assert out.returncode == 0, out.stderr
    creds = json.loads(out.stdout)
    assert creds["admin_token"].startswith("tta_")
    assert len(creds["enroll_key"]) == 29 and creds["enroll_key"].count("-") == 4
    assert creds["url"] == "ws://127.0.0.1:8765"
    assert (data / "tether.sqlite").exists() and (data / "tetherd.toml").exists()
    again = tetherd("init", "--data-dir", str(data), "--json")
    assert again.returncode == 1 and "already initialised" in again.stderr


def test_the_bootstrap_key_can_be_bounded_from_the_start(tmp_path: Path) -> None:
    """15.14: ``init --key-uses N --key-expires-in 7d`` bounds the first enrollment key."""
    data = tmp_path / "data"
    before = time.time()
    out = tetherd("init", "--data-dir", str(data), "--key-uses", "2", "--key-expires-in", "7d", "--json")
    assert out.returncode == 0, out.stderr
    row = sqlite3.connect(data / "tether.sqlite").execute(
        "SELECT uses_left, expires_at, allow_requested_tags FROM enroll_keys").fetchall()
    assert len(row) == 1 and row[0][0] == 2 and row[0][2] == 0
    assert before + 7 * 86_400 <= row[0][1] <= time.time() + 7 * 86_400
    text = tetherd("init", "--data-dir", str(tmp_path / "other"))
    assert "Revoke the enrollment key once your agents are enrolled" in text.stdout
    for bad, words in ((["--key-expires-in", "soon"], "invalid duration 'soon'"), (["--key-uses", "0"], "it must be 1 or more")):
        refused = tetherd("init", "--data-dir", str(tmp_path / "bad"), *bad)
        assert refused.returncode == 2 and words in refused.stderr


def test_migrate_dry_run_is_the_default(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dry = tetherd("migrate", "--data-dir", str(data))
    assert dry.returncode == 0 and "would create" in dry.stdout
    assert not (data / "tether.sqlite").exists()
    applied = tetherd("migrate", "--data-dir", str(data), "--no-dry-run")
    assert applied.returncode == 0 and "applying migration 1" in applied.stdout
    assert "applying migration 2: polling runs" in applied.stdout
    assert "applying migration 3: LimaCharlie selectors" in applied.stdout
    assert "applying migration 4: polling sequences started by another task's run" in applied.stdout
    version = sqlite3.connect(data / "tether.sqlite").execute("PRAGMA user_version").fetchone()[0]
    assert "applying migration 6: agents bound to their TLS client certificate" in applied.stdout
    assert "applying migration 7: alerts, deduplicated" in applied.stdout
    assert "applying migration 8: automation hooks" in applied.stdout
    assert "applying migration 9: agents replaced by a new agent from another machine UUID" in applied.stdout
    assert "applying migration 10: tasks not pushed before their time" in applied.stdout
    assert "applying migration 11: agent state reports" in applied.stdout
    assert "applying migration 12: agents' configuration" in applied.stdout
    assert version == LATEST == len(MIGRATIONS)
    assert "up to date" in tetherd("migrate", "--data-dir", str(data)).stdout


def test_a_version_1_database_keeps_its_tasks_through_migration_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tether.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(f"BEGIN; {MIGRATIONS[0][1]}; PRAGMA user_version = 1;"
                       f" PRAGMA application_id = {APPLICATION_ID}; COMMIT;")
    conn.execute("INSERT INTO agents (id, token_hash, enrolled_at) VALUES ('a1', x'00', 1)")
    conn.execute("INSERT INTO tasks (command, args, target_kind, target, priority, ttl, created_at, expires_at)"
                 " VALUES ('os_version', x'80', 'agent', 'a1', 1, 60, 1, 61)")
    conn.execute("INSERT INTO deliveries (task_id, agent_id, state, priority, updated_at) VALUES (1, 'a1', 'queued', 1, 1)")
    conn.close()
    dry = tetherd("migrate", "--data-dir", str(data))
    assert "would apply migration 2" in dry.stdout and "migration 1:" not in dry.stdout
    applied = tetherd("migrate", "--data-dir", str(data), "--no-dry-run")
    assert applied.returncode == 0, applied.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert conn.execute("SELECT state, run, next_run_at FROM deliveries").fetchall() == [("queued", 1, None)]
    assert conn.execute("SELECT hide_polling_output, schedule_id, selector, investigation_id FROM tasks").fetchall() \
        == [(0, None, None, "")]
    conn.close()


def test_migrate_shows_pending_on_an_old_database_without_changing_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / "tether.sqlite").close()  # an empty file, schema version 0
    dry = tetherd("migrate", "--data-dir", str(data))
    assert "would apply migration 1" in dry.stdout and "dry run" in dry.stdout
    assert sqlite3.connect(data / "tether.sqlite").execute("PRAGMA user_version").fetchone()[0] == 0


def test_foreign_database_is_refused_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tether.sqlite"
    db.write_bytes(b"not sqlite" * 1000)
    before = db.read_bytes()
    out = tetherd("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0")
    assert out.returncode == 1 and "not a SQLite database" in out.stderr and "Traceback" not in out.stderr
    assert db.read_bytes() == before


def test_bad_config_is_refused_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "tetherd.toml").write_text("windwo = 5\n")
    out = tetherd("serve", "--data-dir", str(data))
    assert out.returncode == 2 and "did you mean `window`" in out.stderr


def test_key_and_token_create(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = tetherd("key", "create", "--data-dir", str(data), "--tag", "web", "--uses", "3", "--json")
    assert key.returncode == 0 and json.loads(key.stdout)["tags"] == ["web"]
    assert json.loads(key.stdout)["uses_left"] == 3 and len(json.loads(key.stdout)["key"]) == 29
    token = tetherd("token", "create", "--data-dir", str(data), "--role", "viewer", "--json")
    assert json.loads(token.stdout)["role"] == "viewer" and json.loads(token.stdout)["token"].startswith("tta_")
    bad = tetherd("key", "create", "--data-dir", str(data), "--uses", "0")
    assert bad.returncode == 2 and "invalid number '0': it must be 1 or more" in bad.stderr
    bad = tetherd("key", "create", "--data-dir", str(data), "--tag", "a,b")
    assert bad.returncode == 2 and "invalid tag 'a,b': a tag is 1-64 characters" in bad.stderr
    many = [arg for i in range(65) for arg in ("--tag", f"t{i}")]
    bad = tetherd("key", "create", "--data-dir", str(data), *many)
    assert bad.returncode == 2 and "that is 65 tags; an agent carries at most 64" in bad.stderr


def test_help_explains_every_command() -> None:
    for cmd in ("serve", "init", "migrate"):
        out = tetherd(cmd, "--help")
        assert out.returncode == 0 and "--data-dir" in out.stdout
