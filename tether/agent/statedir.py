"""The agent's state directory: one running agent per directory, private to its user.

* :func:`prepare` checks (and for ``enroll`` creates) the directory before the journal is
  opened: a path that is a file, cannot be created, belongs to another user or is writable
  by every user is refused with one line (exit 2); so is a journal, WAL or SHM file there
  that another user owns or every user may write (planted to read the agent's token). What
  this user owns is made private (0700, files 0600). The agent sets no process umask: the
  commands it runs create files as their own code says.
* :func:`lock` holds an exclusive ``flock`` on ``agent.lock`` while ``run`` runs: two
  agents on one journal would run the same deliveries.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO

from tether.protocol.private_files import DIRECTORY_MODE, NotPrivate, make_private

from .journal import JOURNAL_FILE

LOCK_FILE = "agent.lock"
FILES = (JOURNAL_FILE, f"{JOURNAL_FILE}-wal", f"{JOURNAL_FILE}-shm", f"{JOURNAL_FILE}-journal", LOCK_FILE)


class StateDirError(Exception):
    """The state directory cannot be used; the message names it and says why (exit 2)."""


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def prepare(state_dir: Path, *, create: bool) -> Path:
    """``state_dir`` checked (see the module doc) and, with ``create``, created if missing;
    without it, a missing directory is returned as is (the caller says "not enrolled")."""
    path = Path(os.path.abspath(state_dir))
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
        elif not path.exists():
            return state_dir
    except FileExistsError:
        raise StateDirError(f"state directory {path} is not a directory (--state-dir)") from None
    except OSError as exc:
        raise StateDirError(f"cannot create state directory {path}: {exc.strerror or exc}") from None
    try:
        if not path.is_dir():
            raise StateDirError(f"state directory {path} is not a directory (--state-dir)")
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise StateDirError(f"no permission to use state directory {path}: it must be readable and writable "
                                "by the user that runs tether-agent")
        if hasattr(os, "geteuid"):  # POSIX: owners and modes mean something
            make_private(str(path), FILES, uid=os.geteuid(), lstat=os.lstat, chmod=os.chmod, name_of=_user)
    except NotPrivate as exc:
        raise StateDirError(str(exc)) from None
    except OSError as exc:
        raise StateDirError(f"cannot use state directory {path}: {exc.strerror or exc}") from None
    return state_dir


def lock(state_dir: Path) -> IO[str] | None:
    """Hold the state directory's lock until the returned file is closed, or raise
    :class:`StateDirError` naming the process that holds it. ``None``: not POSIX, no
    advisory locks (the daemon's 4020 still ends the older of two sessions)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = state_dir / LOCK_FILE
    try:
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    except OSError as exc:
        raise StateDirError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = handle.read().strip()
        handle.close()
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise StateDirError(f"cannot lock {path}: {exc.strerror or exc}") from None
        who = f" ({holder})" if holder else ""
        raise StateDirError(f"another tether-agent{who} is already running with state directory {state_dir}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def holder_pid(state_dir: Path) -> int | None:
    """The pid of the process holding the state directory's lock, as it wrote it (``pid N``)."""
    try:
        text = (state_dir / LOCK_FILE).read_text()
    except OSError:
        return None
    word = text.split()[-1] if text.split() else ""
    return int(word) if text.startswith("pid ") and word.isdigit() else None
