"""Who waits for what to change: consoles watching a task (``tetherctl wait``), and the
selector tasks that agents' new facts are checked against.

Both are fed by :meth:`~.operations.Operations.apply` from committed effects only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .clock import Clock
from .effects import Change, Progressed

T = TypeVar("T")


class Watchers:
    """Callbacks for every committed state change of a task's deliveries (and, for those
    watching live, every progress report: :meth:`watch` with ``progress``)."""

    def __init__(self) -> None:
        self._by_task: dict[int, set[Callable[[Change], None]]] = {}
        self._progress: dict[int, set[Callable[[Progressed], None]]] = {}

    def __len__(self) -> int:
        return len(self._by_task)

    def watch(self, task_id: int, notify: Callable[[Change], None],
              progress: Callable[[Progressed], None] | None = None) -> Callable[[], None]:
        """Call ``notify`` for every committed change of the task's deliveries (and
        ``progress`` for every progress report); returns unwatch."""
        self._by_task.setdefault(task_id, set()).add(notify)
        if progress is not None:
            self._progress.setdefault(task_id, set()).add(progress)

        def unwatch() -> None:
            _discard(self._by_task, task_id, notify)
            if progress is not None:
                _discard(self._progress, task_id, progress)

        return unwatch

    def progressed(self, reports: list[Progressed]) -> None:
        by_task = self._progress
        if not by_task:  # the usual case: nobody watches progress live
            return
        for report in reports:
            watchers = by_task.get(report.task_id)
            if watchers:
                for notify in list(watchers):
                    notify(report)

    def notify(self, changes: list[Change]) -> None:
        by_task = self._by_task
        if not by_task:  # the usual case: one dict check for a whole report
            return
        for change in changes:
            watchers = by_task.get(change.task_id)
            if watchers:
                for notify in list(watchers):
                    notify(change)


def _discard(table: dict[int, set[T]], task_id: int, callback: T) -> None:
    watchers = table.get(task_id)
    if watchers is not None:
        watchers.discard(callback)
        if not watchers:
            del table[task_id]


class SelectorTasks:
    """The active selector tasks (LimaCharlie) and when their ttl ends: while there is one,
    an agent's hello is checked against them; while there is none, that costs the connect
    path one dict check."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._until: dict[int, float] = {}

    def add(self, task_id: int, expires_at: float) -> None:
        self._until[task_id] = expires_at

    def discard(self, task_id: int) -> None:
        self._until.pop(task_id, None)

    def active(self) -> bool:
        """Whether an agent's new facts must be checked against selector tasks."""
        until = self._until
        if not until:
            return False
        now = self.clock.time()
        for task_id in [t for t, end in until.items() if end <= now]:
            del until[task_id]
        return bool(until)
