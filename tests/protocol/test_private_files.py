"""The rule for tetherd's data directory and an agent's state directory (issue 15.9)."""

from __future__ import annotations

import os
import stat

import pytest

from tether.protocol.private_files import NotPrivate, make_private, private_mode, refusal

DIR, FILE, FIFO = stat.S_IFDIR, stat.S_IFREG, stat.S_IFIFO


@pytest.mark.parametrize(("mode", "owner", "words"), [
    (DIR | 0o700, 0, None),
    (FILE | 0o644, 0, None),
    (DIR | 0o755, 5, "belongs to uid 5, not to uid 0"),
    (FILE | 0o666, 0, "writable by every user (mode 0666)"),
    (DIR | 0o1777, 0, "directory /x is writable by every user"),
    (FIFO | 0o600, 0, "not a regular file or directory"),
])
def test_refusal(mode: int, owner: int, words: str | None) -> None:
    problem = refusal("/x", mode=mode, owner=owner, uid=0)
    assert problem == words if words is None else words in (problem or "")


@pytest.mark.parametrize(("mode", "wanted"), [
    (DIR | 0o755, 0o700), (DIR | 0o700, None), (FILE | 0o644, 0o600), (FILE | 0o600, None), (FILE | 0o400, None),
])
def test_private_mode(mode: int, wanted: int | None) -> None:
    assert private_mode(mode) == wanted


def fake_stat(mode: int, uid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


def test_make_private_checks_the_directory_and_the_files_that_exist() -> None:
    tree = {"/d": fake_stat(DIR | 0o755), "/d/db": fake_stat(FILE | 0o644), "/d/ok": fake_stat(FILE | 0o600)}
    changed: list[tuple[str, int]] = []

    def lstat(path: str) -> os.stat_result:
        if path not in tree:
            raise FileNotFoundError(path)
        return tree[path]

    make_private("/d", ["db", "ok", "absent"], uid=0, lstat=lstat, chmod=lambda p, m: changed.append((p, m)))
    assert changed == [("/d", 0o700), ("/d/db", 0o600)]
    tree["/d/db-wal"] = fake_stat(FILE | 0o600, uid=65534)
    with pytest.raises(NotPrivate, match="/d/db-wal belongs to nobody"):
        make_private("/d", ["db-wal"], uid=0, lstat=lstat, chmod=lambda p, m: None,
                     name_of=lambda uid: "nobody" if uid else "root")
