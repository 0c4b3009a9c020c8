"""tetherd's data directory and the agent's state directory, as an operator meets them:
one tetherd per data directory (issue 16.1), credentials never lost to a busy port (16.4),
one-line errors for a directory that cannot be used (16.7), directories and files private
to their user and refused when planted by another (15.9), the absolute data directory in
the listening line (16.16). Real processes throughout."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from harness import BIN, AgentProc, Tetherd

NOBODY = 65534
ROOT_ONLY = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                               reason="making a file another user owns takes root (chown)")


def tetherd(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tetherd"), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tether-agent"), *args], capture_output=True, text=True, timeout=60)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# -- one tetherd per data directory (16.1) -------------------------------------------------


def test_a_second_tetherd_on_the_same_data_directory_exits_2_naming_the_first(tetherd: Tetherd) -> None:
    assert tetherd.proc is not None
    pid = tetherd.proc.pid
    for args in (["serve", "--listen", "127.0.0.1:0"], ["init"], ["migrate", "--no-dry-run"]):
        second = subprocess.run([str(BIN / "tetherd"), *args, "--data-dir", str(tetherd.data_dir)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, (args, second.stderr)
        line = one_line(second.stderr)
        assert f"pid {pid}" in line and str(tetherd.data_dir) in line, line
    # Read-only commands and the credential commands still work beside it.
    assert subprocess.run([str(BIN / "tetherd"), "migrate", "--data-dir", str(tetherd.data_dir)],
                          capture_output=True, timeout=60).returncode == 0
    assert tetherd.ctl("agents")[0] == 0  # the first one is untouched


def test_the_lock_dies_with_its_process(tetherd: Tetherd) -> None:
    tetherd.kill(signal.SIGKILL)
    tetherd.start()  # same data directory, at once
    assert tetherd.ctl("agents")[0] == 0


# -- a busy port loses no credentials (16.4) -----------------------------------------------


def test_a_first_start_on_a_busy_port_keeps_the_credentials_for_the_next(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        first = tetherd("serve", "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}")
    assert first.returncode == 2
    line = one_line(first.stderr)
    assert "already in use" in line and "--listen HOST:PORT" in line, line
    assert "admin token" not in first.stdout
    init = tetherd("init", "--data-dir", str(tmp_path / "data"), "--json")
    assert init.returncode == 0, init.stderr
    assert init.stdout.count("tta_") == 1  # made now, and shown


# -- bad --data-dir / --state-dir: one line, exit 2 (16.7) ----------------------------------


def bad_dirs(tmp_path: Path) -> list[tuple[str, str]]:
    (tmp_path / "a-file").write_text("not a directory")
    return [(str(tmp_path / "a-file"), "is not a directory"),
            (str(tmp_path / "a-file" / "below"), "Not a directory"),
            ("/proc/tether-data", "cannot create")]


@pytest.mark.parametrize("command", [["serve", "--listen", "127.0.0.1:0"], ["init"], ["migrate", "--no-dry-run"],
                                     ["key", "create"], ["token", "create"]])
def test_a_bad_data_dir_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    for path, words in bad_dirs(tmp_path):
        out = tetherd(*command, "--data-dir", path)
        assert out.returncode == 2, (command, path, out.stderr)
        line = one_line(out.stderr)
        assert path in line and words in line, line


@pytest.mark.parametrize("command", [["enroll", "--server", "ws://127.0.0.1:9", "--key", "K"], ["status"], ["run"]])
def test_a_bad_state_dir_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    for path, words in bad_dirs(tmp_path):
        if command[0] != "enroll" and ("below" in path or "proc" in path):
            continue  # a state directory that does not exist is "not enrolled" for run and status
        out = agent_cli(*command, "--state-dir", path)
        assert out.returncode == 2, (command, path, out.stderr)
        line = one_line(out.stderr)
        assert path in line and words in line, line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may use any directory whatever its mode")
def test_a_directory_without_permission_is_one_line_and_exit_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    out = tetherd("init", "--data-dir", str(locked))
    assert out.returncode == 2 and "permission" in one_line(out.stderr)
    out = agent_cli("enroll", "--server", "ws://127.0.0.1:9", "--key", "K", "--state-dir", str(locked))
    assert out.returncode == 2 and "permission" in one_line(out.stderr)


# -- private directories and files (15.9) --------------------------------------------------


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in [directory, *directory.iterdir()]}


def test_tetherd_and_the_agent_create_everything_private(tetherd: Tetherd, tmp_path: Path) -> None:
    agent = AgentProc("a", tmp_path, tetherd, dict(os.environ))
    agent.enroll()
    agent.start()
    for directory in (tetherd.data_dir, agent.state_dir):
        found = modes(directory)
        assert found.pop(directory.name) == 0o700, directory
        assert found and set(found.values()) == {0o600}, found
    agent.kill()


@ROOT_ONLY
def test_a_wal_file_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert tetherd("init", "--data-dir", str(data)).returncode == 0
    wal = data / "tether.sqlite-wal"
    wal.unlink(missing_ok=True)
    wal.touch()
    os.chown(wal, NOBODY, NOBODY)
    out = tetherd("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0")
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert str(wal) in line and "uid 65534" in line, line


@ROOT_ONLY
def test_an_agent_journal_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    for name in ("journal.sqlite", "journal.sqlite-wal"):
        (state / name).touch()
        os.chown(state / name, NOBODY, NOBODY)
    out = agent_cli("enroll", "--server", "ws://127.0.0.1:9", "--key", "K", "--state-dir", str(state))
    assert out.returncode == 2 and "uid 65534" in one_line(out.stderr)


def test_a_directory_every_user_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    out = tetherd("init", "--data-dir", str(shared))
    assert out.returncode == 2 and "writable by every user" in one_line(out.stderr)
    out = agent_cli("enroll", "--server", "ws://127.0.0.1:9", "--key", "K", "--state-dir", str(shared))
    assert out.returncode == 2 and "writable by every user" in one_line(out.stderr)


def test_files_an_older_tetherd_left_readable_are_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert tetherd("init", "--data-dir", str(data)).returncode == 0
    data.chmod(0o755)
    for name in ("tether.sqlite", "tetherd.toml"):
        (data / name).chmod(0o644)
    assert tetherd("migrate", "--data-dir", str(data), "--no-dry-run").returncode == 0
    assert set(modes(data).values()) <= {0o700, 0o600}
    sqlite3.connect(data / "tether.sqlite").close()


# -- where the data is (16.16) -------------------------------------------------------------


def test_the_listening_line_names_the_absolute_data_directory(tmp_path: Path, env: dict[str, str]) -> None:
    proc = subprocess.Popen([str(BIN / "tetherd"), "serve", "--listen", "127.0.0.1:0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "event=listening" in line, line
        assert re.search(r"data_dir=(\S+)", line).group(1) == str(tmp_path / "tether-data")  # type: ignore[union-attr]
        assert proc.stdout is not None and str(tmp_path / "tether-data") in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
