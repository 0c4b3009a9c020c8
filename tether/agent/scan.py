"""The built-in ``scan`` command: walk paths, hash files (SHA-256), report matches against a
hash list (Armadito's on-demand scan).

It runs in a worker thread (hashing blocks) and promises:

* progress (percent of the bytes to hash, files done of the total, the current path) at
  most once a second, also in the middle of a large file
  (:data:`PROGRESS_EVERY`), whatever the number of files: a scan of 100,000 files costs
  tetherd one progress frame a second, not one per file;
* an untask stops it within a second: ``ctx.cancelled`` is looked at between files, between
  directory entries and between 1 MiB blocks of a file;
* every match is in the result, with its path, hash and size; with ``alert`` (the default)
  each match is also raised as an alert (kind ``scan``, :meth:`Context.alert`).

Args (a JSON object; ``tetherctl task "scan /etc /usr --hashes H1,H2" --agent A``):
``paths`` (a list or one path; the command line's positionals too), ``hashes`` (SHA-256
hex strings: a list or comma-separated), ``include`` / ``exclude`` (globs matched against a
file's name and against its whole path; a list or comma-separated; an excluded directory
is not entered), ``max_size`` (bytes, or with a K/M/G suffix: bigger files are skipped),
``alert`` (false: no alerts).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any

from .sdk import Context, ErrorResult

PROGRESS_EVERY = 1.0
"""Seconds between two progress reports of one scan, at least."""

BLOCK = 1 << 20
"""Bytes read at a time; cancellation is looked at between blocks."""

MAX_ERRORS = 20
"""Unreadable files named in the result (all of them are counted)."""

MAX_MESSAGE_PATH = 200
"""Characters of the current path in a progress message (its end is kept)."""

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SIZE = re.compile(r"(\d+)\s*([KMG]?)i?B?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _strings(value: Any, what: str) -> list[str]:
    """A list of strings from a list, or from one comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    raise ErrorResult(f"scan: {what} must be a string or a list of strings, not {value!r}")


def _size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        return int(m.group(1)) * _UNITS[m.group(2).upper()]
    raise ErrorResult(f"scan: max_size must be a number of bytes (or with K, M, G), not {value!r}")


class ScanArgs:
    """The scan's args, checked before anything is read (a bad one fails the run, saying so)."""

    def __init__(self, args: dict[str, Any]) -> None:
        paths = _strings(args.get("paths", args.get("path")), "paths") + _strings(args.get("argv"), "argv")
        if not paths:
            raise ErrorResult("scan: give the paths to scan (scan /etc /usr, or --paths /etc,/usr)")
        self.paths = paths
        hashes = _strings(args.get("hashes"), "hashes")
        for h in hashes:
            if not _SHA256.fullmatch(h):
                raise ErrorResult(f"scan: {h!r} is not a SHA-256 (64 hex digits)")
        self.hashes = {h.lower() for h in hashes}
        self.include = _strings(args.get("include"), "include")
        self.exclude = _strings(args.get("exclude"), "exclude")
        self.max_size = _size(args.get("max_size"))
        alert = args.get("alert", True)
        if isinstance(alert, str) and alert.lower() in ("true", "false"):  # from a command line
            alert = alert.lower() == "true"
        if not isinstance(alert, bool):
            raise ErrorResult(f"scan: alert must be true or false, not {alert!r}")
        self.alert = alert

    def excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(path, g) for g in self.exclude)

    def included(self, path: str) -> bool:
        if not self.include:
            return True
        name = os.path.basename(path)
        return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(path, g) for g in self.include)


class Cancelled(Exception):
    """The run was cancelled (untask): the scan stops where it is."""


class Scan:
    """One scan's walk, hashing and counts (see the module docstring)."""

    def __init__(self, args: ScanArgs, ctx: Context | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.args = args
        self.ctx = ctx
        self.clock = clock
        self.files: list[tuple[str, int]] = []
        self.skipped_large = 0
        self.excluded = 0
        self.unreadable = 0
        self.errors: list[str] = []
        self.matches: list[dict[str, Any]] = []
        self.bytes = 0
        """Bytes hashed so far; the percent is of :attr:`total_bytes` (a large file moves it too)."""
        self.total_bytes = 0
        self.done = 0
        self._last_progress = float("-inf")

    def _check_cancelled(self) -> None:
        if self.ctx is not None and self.ctx.is_cancelled():
            raise Cancelled

    def _error(self, path: str, exc: OSError) -> None:
        self.unreadable += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{path}: {exc.strerror or exc}")

    def _walk(self, root: str) -> Iterator[tuple[str, int]]:
        """Regular files under ``root`` (or ``root`` itself), with their size; symbolic links
        are not followed (a link loop, or a link out of the scanned tree)."""
        try:
            st = os.lstat(root)
        except OSError as exc:
            self._error(root, exc)
            return
        if stat.S_ISREG(st.st_mode):
            yield root, st.st_size
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        stack = [root]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        self._check_cancelled()
                        path = entry.path
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                if self.args.excluded(path):
                                    self.excluded += 1
                                else:
                                    stack.append(path)
                            elif entry.is_file(follow_symlinks=False):
                                yield path, entry.stat(follow_symlinks=False).st_size
                        except OSError as exc:
                            self._error(path, exc)
            except OSError as exc:
                self._error(directory, exc)

    def collect(self) -> None:
        """The files to hash (the first pass: it gives the total the percent is of)."""
        seen: set[str] = set()
        for root in self.args.paths:
            for path, size in self._walk(os.path.abspath(root)):
                if path in seen:
                    continue
                seen.add(path)
                if self.args.excluded(path) or not self.args.included(path):
                    self.excluded += 1
                elif self.args.max_size is not None and size > self.args.max_size:
                    self.skipped_large += 1
                else:
                    self.files.append((path, size))
                self._maybe_progress(path, counting=True)

    def _hash(self, path: str) -> str | None:
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while block := f.read(BLOCK):
                    digest.update(block)
                    self.bytes += len(block)
                    self._check_cancelled()
                    self._maybe_progress(path)
        except OSError as exc:
            self._error(path, exc)
            return None
        return digest.hexdigest()

    def hash_all(self) -> None:
        self.total_bytes = sum(size for _, size in self.files)
        for path, size in self.files:
            self._check_cancelled()
            self._maybe_progress(path)
            sha256 = self._hash(path)
            self.done += 1
            if sha256 is not None and sha256 in self.args.hashes:
                self.matches.append({"path": path, "sha256": sha256, "size": size})
                if self.args.alert and self.ctx is not None:
                    self.ctx.alert_threadsafe(kind="scan", name="hash match", path=path, hash=sha256,
                                              message=f"{path} matches a scanned-for SHA-256")

    def _maybe_progress(self, path: str, *, counting: bool = False) -> None:
        now = self.clock()
        if now - self._last_progress < PROGRESS_EVERY or self.ctx is None:
            return
        self._last_progress = now
        shown = path if len(path) <= MAX_MESSAGE_PATH else "..." + path[-(MAX_MESSAGE_PATH - 3):]
        if counting:
            self.ctx.progress_threadsafe(0.0, f"counting: {len(self.files)} files found {shown}")
            return
        total = len(self.files)
        total_bytes = self.total_bytes
        percent = 100.0 * self.bytes / total_bytes if total_bytes else 100.0 * self.done / max(total, 1)
        self.ctx.progress_threadsafe(min(percent, 100.0), f"{self.done}/{total} files {shown}")

    def result(self, started: float) -> dict[str, Any]:
        return {
            "files": self.done, "bytes": self.bytes, "matches": self.matches,
            "skipped": {"too_large": self.skipped_large, "excluded": self.excluded, "unreadable": self.unreadable},
            "errors": self.errors, "seconds": round(self.clock() - started, 3),
        }


def scan(args: dict[str, Any], *, ctx: Context) -> dict[str, Any] | None:
    """The ``scan`` command (a sync handler: run in a worker thread)."""
    run = Scan(ScanArgs(args), ctx)
    started = run.clock()
    try:
        run.collect()
        run.hash_all()
    except Cancelled:
        return None  # discarded: the run is cancelled
    return run.result(started)
