"""tetherd's data directory: one tetherd per directory, private to the user that runs it.

* :func:`prepare` checks (and creates) the directory before anything is read from or
  written to it: a path that is a file, cannot be created, belongs to another user or is
  writable by every user is refused with one line (tetherd exits 2). What this user owns is
  made private (directory 0700, files 0600; tetherd also runs with umask 077).
* :func:`lock` takes an exclusive ``flock`` on ``tetherd.lock`` in it, held until the
  process ends (a SIGKILL releases it too). A second ``serve``, ``init`` or
  ``migrate --no-dry-run`` on the same directory is refused naming the PID holding it: two
  daemons on one database split the fleet (a task created through one stays queued while
  its agent is online on the other). ``key create`` and ``token create`` do not take it:
  they work beside a running tetherd (SQLite WAL).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO

from tether.protocol.private_files import DIRECTORY_MODE, NotPrivate, make_private

LOCK_FILE = "tetherd.lock"
CREDENTIALS_FILE = "initial-credentials"
FILES = ("tether.sqlite", "tether.sqlite-wal", "tether.sqlite-shm", "tether.sqlite-journal", "tetherd.toml",
         LOCK_FILE, CREDENTIALS_FILE)
"""Every file tetherd keeps in its data directory."""


class DataDirError(Exception):
    """The data directory cannot be used; the message names it and says why (exit 2)."""


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def prepare(path: Path, *, create: bool = True) -> Path:
    """The data directory as an absolute path, checked (see the module doc) and, with
    ``create``, created if missing. Without ``create`` a missing directory is returned as is."""
    path = Path(os.path.abspath(path))
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
        elif not path.exists():
            return path
    except FileExistsError:
        raise DataDirError(f"data directory {path} is not a directory (--data-dir or TETHER_DATA_DIR)") from None
    except OSError as exc:
        raise DataDirError(f"cannot create data directory {path}: {exc.strerror or exc}") from None
    try:
        if not path.is_dir():
            raise DataDirError(f"data directory {path} is not a directory (--data-dir or TETHER_DATA_DIR)")
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise DataDirError(f"no permission to use data directory {path}: it must be readable and writable "
                               "by the user that runs tetherd")
        if hasattr(os, "geteuid"):  # POSIX: owners and modes mean something
            make_private(str(path), FILES, uid=os.geteuid(), lstat=os.lstat, chmod=os.chmod, name_of=_user)
    except NotPrivate as exc:
        raise DataDirError(str(exc)) from None
    except OSError as exc:
        raise DataDirError(f"cannot use data directory {path}: {exc.strerror or exc}") from None
    return path


def lock(data_dir: Path, command: str) -> IO[str] | None:
    """Take the data directory's lock for ``command`` (``serve``, ``init``, ``migrate``),
    held until the returned file is closed, or raise :class:`DataDirError` naming the process that holds it. ``None`` where there are
    no advisory locks (not POSIX)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = data_dir / LOCK_FILE
    try:
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    except OSError as exc:
        raise DataDirError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = handle.read().strip()
        handle.close()
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise DataDirError(f"cannot lock {path}: {exc.strerror or exc}") from None
        who = f"another process ({holder})" if holder else "another tetherd"
        raise DataDirError(f"{who} is using data directory {data_dir}; stop it first, or give "
                           f"`tetherd {command}` another --data-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, tetherd {command}\n")
    handle.flush()
    return handle
