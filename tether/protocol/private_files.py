"""Who may own tetherd's data directory and an agent's state directory, and the files in them.

Both hold secrets: tetherd's database holds credential digests and every task's args, an
agent's journal holds its token. A directory or file there that another user owns, or that
every user may write, may have been planted to read or change them (issue 15.9: a WAL file
created in advance by another local user gave them a root agent's token). So tetherd and the
agent refuse such a directory or file, and make what they own private: 0700 for the
directory, 0600 for files.

The rule is pure (the caller passes what ``os.stat`` said, or ``os.lstat`` and ``os.chmod``
themselves), so tetherd and the agent share it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def _uid(uid: int) -> str:
    return f"uid {uid}"


def refusal(path: str, *, mode: int, owner: int, uid: int, name_of: Callable[[int], str] = _uid) -> str | None:
    """Why ``path`` (its ``st_mode`` and ``st_uid``) may not be used by user ``uid``, in one
    line that says what to do; ``None`` when it may."""
    what = "directory" if stat.S_ISDIR(mode) else "file"
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return f"{path} is not a regular file or directory; refusing to use it"
    if owner != uid:
        return (f"{what} {path} belongs to {name_of(owner)}, not to {name_of(uid)} who runs this; "
                f"run as {name_of(owner)}, or remove it if you did not make it")
    if mode & stat.S_IWOTH:
        return (f"{what} {path} is writable by every user (mode {stat.S_IMODE(mode):04o}); anyone may have "
                "changed it: remove it, or check it and chmod o-w")
    return None


def private_mode(mode: int) -> int | None:
    """The mode to set on a directory or file this user owns so only they can use it, or
    ``None`` when it is private already."""
    wanted = DIRECTORY_MODE if stat.S_ISDIR(mode) else stat.S_IMODE(mode) & FILE_MODE
    return None if stat.S_IMODE(mode) == wanted else wanted


class NotPrivate(ValueError):
    """A directory or file that may not be used; the message says which and what to do."""


def make_private(directory: str, names: Iterable[str], *, uid: int, lstat: Callable[[str], os.stat_result],
                 chmod: Callable[[str, int], None], name_of: Callable[[int], str] = _uid) -> None:
    """Check ``directory`` and each of the files ``names`` in it that exists by the rule of
    :func:`refusal` (raise :class:`NotPrivate`), and make private what is this user's.

    ``lstat`` and ``chmod`` are ``os.lstat`` and ``os.chmod`` (passed in: this package does
    no I/O of its own); ``lstat`` raising ``FileNotFoundError`` means the file is absent."""
    for path in (directory, *(os.path.join(directory, name) for name in names)):
        try:
            st = lstat(path)
        except FileNotFoundError:
            continue
        problem = refusal(path, mode=st.st_mode, owner=st.st_uid, uid=uid, name_of=name_of)
        if problem:
            raise NotPrivate(problem)
        mode = private_mode(st.st_mode)
        if mode is not None:
            chmod(path, mode)
