"""The built-in ``scan``: what it finds, what it skips, how often it reports progress, and
that a cancel stops it between files and between blocks of one file."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import pytest

from tether.agent.scan import BLOCK, PROGRESS_EVERY, Cancelled, Scan, ScanArgs, scan
from tether.agent.sdk import Context, ErrorResult
from tether.protocol.alerts import AlertBody
from tether.protocol.frames import Progress


class InlineLoop:
    """``call_soon_threadsafe`` that calls at once: the scan runs in this thread here."""

    def call_soon_threadsafe(self, f: Any, *args: Any) -> None:
        f(*args)


def make_ctx(progress: list[Progress], alerts: list[AlertBody] | None = None) -> Context:
    return Context(delivery_id=1, task_id=1, command="scan", emit=progress.append,
                   alert=lambda body, d: (alerts if alerts is not None else []).append(body),
                   loop=InlineLoop())  # type: ignore[arg-type]


def tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha", "b.bin": b"beta" * 10, "sub/c.txt": b"gamma", "sub/deep/d.log": b"alpha",
             "skip/e.txt": b"alpha"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_scan_reports_every_file_whose_hash_is_listed(tmp_path: Path) -> None:
    tree(tmp_path)
    alerts: list[AlertBody] = []
    out = scan({"paths": [str(tmp_path)], "hashes": [sha(b"alpha").upper()], "exclude": "skip"},
               ctx=make_ctx([], alerts))
    assert out is not None
    assert sorted(m["path"] for m in out["matches"]) == [str(tmp_path / "a.txt"), str(tmp_path / "sub/deep/d.log")]
    assert {m["sha256"] for m in out["matches"]} == {sha(b"alpha")}
    assert out["files"] == 4 and out["skipped"]["excluded"] == 1  # the skip directory, not entered
    assert [(a.kind, a.name, a.path) for a in alerts] == [("scan", "hash match", m["path"]) for m in out["matches"]]


def test_include_max_size_and_positional_paths(tmp_path: Path) -> None:
    tree(tmp_path)
    out = scan({"argv": [str(tmp_path / "sub"), str(tmp_path / "a.txt")], "include": ["*.txt", "*.log"],
                "max_size": "4", "hashes": sha(b"gamma"), "alert": "false"}, ctx=make_ctx([]))
    assert out is not None
    assert out["files"] == 0 and out["skipped"]["too_large"] == 3
    out = scan({"paths": str(tmp_path), "include": "*.txt", "hashes": sha(b"gamma")}, ctx=make_ctx([]))
    assert out is not None and out["files"] == 3 and [m["size"] for m in out["matches"]] == [5]
    missing = scan({"paths": [str(tmp_path / "nope")]}, ctx=make_ctx([]))
    assert missing is not None and missing["skipped"]["unreadable"] == 1 and "nope" in missing["errors"][0]


@pytest.mark.parametrize(("args", "error"), [
    ({}, "give the paths"),
    ({"paths": "/", "hashes": "abc"}, "is not a SHA-256"),
    ({"paths": "/", "max_size": "big"}, "max_size must be"),
    ({"paths": 5}, "paths must be a string or a list"),
    ({"paths": "/", "alert": "yes"}, "alert must be true or false"),
])
def test_bad_args_fail_the_run_saying_why(args: dict[str, Any], error: str) -> None:
    with pytest.raises(ErrorResult, match=error):
        ScanArgs(args)


def test_progress_goes_at_most_once_a_second_whatever_the_number_of_files(tmp_path: Path) -> None:
    for i in range(300):
        (tmp_path / f"f{i}").write_bytes(b"x")
    progress: list[Progress] = []
    ticks = itertools.count()
    now = [0.0]

    def clock() -> float:  # 0.1 s passes at each reading
        now[0] = next(ticks) * 0.1
        return now[0]

    run = Scan(ScanArgs({"paths": str(tmp_path)}), make_ctx(progress), clock=clock)
    run.collect()
    run.hash_all()
    assert run.done == 300
    # one report per PROGRESS_EVERY of the (fake) time it took, never one per file
    assert 300 > now[0] / PROGRESS_EVERY + 1 >= len(progress) >= now[0] / PROGRESS_EVERY - 1
    last = progress[-1]
    assert last.percent is not None and 90 <= last.percent < 100 and "/300 files" in last.message


def test_a_cancel_stops_the_scan_inside_a_large_file(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"\0" * (BLOCK * 8))
    ctx = make_ctx([])
    run = Scan(ScanArgs({"paths": str(tmp_path)}), ctx)
    run.collect()
    original = run._hash

    def hash_then_cancel(path: str) -> str | None:
        ctx.cancelled.set()
        return original(path)

    run._hash = hash_then_cancel  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        run.hash_all()
    assert run.bytes == BLOCK  # one block read, then it stopped
    cancelled = make_ctx([])
    cancelled.cancelled.set()
    assert scan({"paths": str(tmp_path)}, ctx=cancelled) is None
