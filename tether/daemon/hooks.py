"""Automation hooks (issue 20, after Check Point's SmartTasks), attached to the operations core.

* Before-triggers (``before-task``, ``before-enroll``) are :attr:`Operations.gate
  <tether.daemon.operations.Operations.gate>`, awaited where the operation starts, before
  anything is written: the enabled hooks of the trigger run at once, each within its timeout
  (so one adds at most its timeout), and a veto (``{"result": "failure", "message": ...}``),
  or a failure or timeout of a ``fail-closed`` hook, refuses the operation with the hook's
  message. Each run is recorded before the answer.
* After-triggers observe :attr:`Operations.after <tether.daemon.operations.Operations.after>`:
  an operation that has hooks queues one run per hook in the store's outbox (one write, in
  the group commit after the operation's, which an answered operation waits for before it
  answers); one without costs a dict lookup. The outbox is
  delivered at least once by :meth:`Hooks.run`: a run leaves it only when its end is
  recorded, so what was queued before a crash runs after the restart. A failure is retried
  with exponential backoff for ``hook_retry_for`` seconds; while a hook fails, only the runs
  under way are tried until its backoff ends (a down target is probed, not hammered), and
  at most ``hook_concurrency`` runs of one hook are under way: a slow target holds up no
  other hook, and nothing here blocks the event loop. Every attempt is recorded.

Payloads are JSON objects (:mod:`tether.protocol.hooks`: ``version``, ``trigger``,
``hook``, ``at``, ``who`` and the trigger's own keys, then the hook's custom data).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
from pathlib import Path
from typing import Any

import msgspec

from ..protocol.console import TaskView
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.hooks import PAYLOAD_VERSION, TRIGGERS, HookRunView, HookView, verdict
from ..protocol.lifecycle import TERMINAL, DeliveryState
from .hook_actions import Answer, Smtp, email_message, post, run_script, send_email
from .operations import ACTOR, Happened, Operations
from .store import NewTask, StoreError
from .store.hook_records import HookRecord, OutboxIn, OutboxRow, RunRecord

log = logging.getLogger("tether.hooks")

AFTER = {"task.create": "after-task", "agent.enroll": "after-enroll", "agent.online": "agent-online",
         "agent.offline": "agent-offline", "timer.schedule": "after-schedule-fired", "alert.record": "alert",
         "config_drift": "config-drift"}
"""The after-trigger each operation fires (``after-task-done`` is read from delivery changes)."""
BEFORE = {"task.create": "before-task", "agent.enroll": "before-enroll"}
"""The before-trigger awaited where each operation starts."""

RETRY_MAX = 60.0
"""The longest wait between two attempts of a failing hook (seconds): 1, 2, 4 ... 60."""
IN_FLIGHT = 64
"""After-hook runs under way at once, over all hooks."""
CHECK_EVERY = 1.0
"""Seconds between looks at the outbox while it holds runs waiting for a retry."""
DONE_LISTED = 1000
"""Deliveries listed in an ``after-task-done`` payload (all are counted)."""
DEFAULT_BODY = "{trigger} ({hook}) at {at}\n\n{payload}\n"


def _task(task: NewTask) -> dict[str, Any]:
    target = {"kind": task.target_kind, "value": task.target}
    if task.selector is not None:
        target = {"kind": "selector", "value": task.selector}
    return {"command": task.command, "args": task.args, "target": target, "priority": task.priority,
            "ttl": task.ttl, "investigation_id": task.investigation_id}


def _task_done(view: TaskView) -> dict[str, Any]:
    counts = collections.Counter(d.state for d in view.deliveries)
    return {"task_id": view.task_id, "command": view.command, "args": view.args, "target": view.target,
            "state": view.state, "created_at": view.created_at, "counts": dict(counts),
            "deliveries": [{"agent_id": d.agent_id, "state": d.state, "error": d.error, "finished_at": d.finished_at}
                           for d in view.deliveries[:DONE_LISTED]]}


SAMPLES: dict[str, dict[str, Any]] = {
    "task": {"task_id": 0, "command": "os_version", "args": {}, "target": {"kind": "all", "value": ""},
             "priority": 1, "ttl": 604800, "investigation_id": "", "deliveries": 0},
    "agent": {"agent_id": "00000000-sample", "hostname": "sample-host", "platform": "linux", "tags": ["sample"]},
    "schedule": {"schedule_id": 0},
    "alert": {"alert_id": 0, "kind": "integrity", "name": "sample alert", "severity": "medium", "count": 1},
    "config": {"desired": {"scan_interval": 3600}, "desired_sha256": "0" * 64, "reported_sha256": "1" * 64},
    "replaced": {"agent_id": "00000000-replaced"},
}
"""What ``tetherctl hooks test`` sends, by payload key (with ``"sample": true``)."""


def view(hook: HookRecord, pending: int = 0, last: RunRecord | None = None) -> HookView:
    """A hook as shown: never its secret."""
    return HookView(name=hook.name, trigger=hook.trigger, action=hook.action, target=hook.target,  # type: ignore[arg-type]
                    enabled=hook.enabled, timeout=hook.timeout, on_timeout=hook.on_timeout,
                    description=hook.description, tags=hook.tags, data=hook.data, fingerprint=hook.fingerprint,
                    secret_set=bool(hook.secret), subject=hook.subject, body=hook.body, created_at=hook.created_at,
                    pending=pending, last_run=None if last is None else run_view(last))


def run_view(run: RunRecord) -> HookRunView:
    return HookRunView(hook=run.hook, trigger=run.trigger, started_at=run.started_at, duration=run.duration,
                       outcome=run.outcome, message=run.message, attempt=run.attempt, test=run.test)  # type: ignore[arg-type]


class Hooks:
    """The hooks of one tetherd: attached to ``operations`` when made; :meth:`load` at start,
    :meth:`run` (in tetherd's task group) delivers the outbox until cancelled."""

    def __init__(self, operations: Operations, *, scripts: Path, smtp: Smtp | None = None, concurrency: int = 4,
                 outbox_max: int = 100_000, retry_for: float = 86_400.0) -> None:
        self.operations = operations
        self.store = operations.store
        self.clock = operations.clock
        self.scripts = scripts
        self.smtp = smtp
        self.concurrency = concurrency
        self.outbox_max = outbox_max
        self.retry_for = retry_for
        self.hooks: dict[str, HookRecord] = {}
        self._enabled: dict[str, list[HookRecord]] = {}
        """Enabled hooks by trigger; a trigger without one has no key."""
        self.pending = 0
        """Runs in the outbox (queued, not yet ended)."""
        self.dropped = 0
        """Runs not queued because the outbox was full."""
        self._backlog_told = False
        self._inflight: dict[int, str] = {}
        self._per_hook: collections.Counter[str] = collections.Counter()
        self._failing: dict[str, tuple[float, int]] = {}
        """Hooks failing now: (not tried again before, consecutive failures)."""
        self._done_checks: set[int] = set()
        self._wake = asyncio.Event()
        self._http: Any = None
        operations.after.append(self.observe)
        operations.gate = self.gate
        operations.hooks = self

    async def load(self) -> None:
        for hook in await self.store.list_hooks():
            self._put(hook)
        self.pending = sum((await self.store.hook_pending()).values())

    def _put(self, hook: HookRecord) -> None:
        self.hooks[hook.name] = hook
        self._index()

    def _index(self) -> None:
        enabled: dict[str, list[HookRecord]] = {}
        for hook in self.hooks.values():
            if hook.enabled:
                enabled.setdefault(hook.trigger, []).append(hook)
        self._enabled = enabled

    # -- after-triggers: queued -----------------------------------------------------------------

    def observe(self, happened: Happened) -> asyncio.Future[Any] | None:
        """Called by the operations core after every operation: queue its hooks' runs. Returns
        the outbox write (or ``None``): an answered operation answers once its runs are kept."""
        queued: list[asyncio.Future[Any]] = []
        operation = happened.operation
        if operation.startswith("hook."):
            self._hook_changed(happened)
            return None
        trigger = AFTER.get(operation)
        if trigger is not None:
            hooks = self._enabled.get(trigger)
            if hooks:
                for own in self._after_payloads(trigger, happened):
                    self._queue(trigger, hooks, own, queued=queued)
            if operation == "agent.enroll" and happened.effects.result.replaces:
                replacing = self._enabled.get("agent-replaced")
                if replacing:
                    enrolled = happened.effects.result
                    self._queue("agent-replaced", replacing, {
                        "agent": {**happened.subject, "agent_id": enrolled.agent_id, "tags": enrolled.tags},
                        "replaced": {"agent_id": enrolled.replaces}}, queued=queued)
        if happened.effects.changes and "after-task-done" in self._enabled:
            for change in happened.effects.changes:
                if change.new in TERMINAL:
                    self._done_checks.add(change.task_id)
            self._wake.set()
        return asyncio.gather(*queued, return_exceptions=True) if queued else None

    def _hook_changed(self, happened: Happened) -> None:
        if happened.operation == "hook.rm":
            self.hooks.pop(happened.subject, None)
            self._failing.pop(happened.subject, None)
            self._index()
            self.pending = max(0, self.pending - happened.effects.result)
        else:
            self._put(happened.effects.result)
            self._wake.set()

    def _after_payloads(self, trigger: str, happened: Happened) -> list[dict[str, Any]]:
        """The trigger's own keys, once per thing that happened (an alert report may hold several)."""
        subject, result = happened.subject, happened.effects.result
        if trigger == "after-task":
            return [{"task": {"task_id": result, **_task(subject), "deliveries": len(happened.effects.items)}}]
        if trigger == "after-enroll":
            return [{"agent": {**subject, "agent_id": result.agent_id, "tags": result.tags, "status": result.status,
                               "clone_of": result.clone_of}}]
        if trigger == "after-schedule-fired":
            if result is None:
                return []
            return [{"schedule": {"schedule_id": subject},
                     "task": {"task_id": result, "deliveries": len(happened.effects.items)}}]
        if trigger == "config-drift":
            return [{"agent": {"agent_id": subject},
                     "config": {"desired": result.desired, "desired_sha256": result.desired_hash,
                                "reported_sha256": result.reported_hash}}]
        if trigger == "alert":  # new distinct alerts only: a repeat is counted, not told
            return [{"agent": {"agent_id": a.agent_id},
                     "alert": {"alert_id": a.alert_id, "kind": a.kind, "name": a.name, "severity": a.severity,
                               "count": a.count}} for a in result if a.new]
        return [{"agent": dict(subject)}]  # agent-online, agent-offline

    def _payload(self, trigger: str, hook: HookRecord, own: dict[str, Any], who: str) -> dict[str, Any]:
        return {"version": PAYLOAD_VERSION, "trigger": trigger, "hook": hook.name, "at": self.clock.time(),
                "who": who, **own, **hook.data}

    def _queue(self, trigger: str, hooks: list[HookRecord], own: dict[str, Any], dedup: str | None = None,
               queued: list[asyncio.Future[Any]] | None = None) -> None:
        who = ACTOR.get()
        if self.pending + len(hooks) > self.outbox_max:
            self.dropped += len(hooks)
            log.error("event=hook_outbox_full trigger=%s dropped=%d pending=%d max=%d", trigger, len(hooks),
                      self.pending, self.outbox_max)
            return
        rows = [OutboxIn(h.name, trigger, json.dumps(self._payload(trigger, h, own, who)).encode(), dedup)
                for h in hooks]
        try:
            fut = self.store.queue_hook_runs(rows, self.clock.time())
        except StoreError as exc:  # closed: tetherd is stopping
            log.error("event=hook_queue_failed trigger=%s error=%r", trigger, exc)
            return
        self.pending += len(rows)
        if self.pending > self.outbox_max // 10 and not self._backlog_told:
            self._backlog_told = True
            log.warning("event=hook_outbox_backlog pending=%d max=%d", self.pending, self.outbox_max)
        fut.add_done_callback(lambda f: self._queued(f, len(rows), trigger))
        if queued is not None:
            queued.append(fut)

    def _queued(self, fut: asyncio.Future[Any], count: int, trigger: str) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.pending -= count
            log.error("event=hook_queue_failed trigger=%s error=%r", trigger, None if fut.cancelled() else
                      fut.exception())
            return
        self.pending -= count - fut.result().result  # a dedup key pending already was not queued again
        self._wake.set()

    async def _check_done(self) -> None:
        """``after-task-done``: the tasks some of whose deliveries ended, read once each."""
        while self._done_checks:
            task_id = self._done_checks.pop()
            hooks = self._enabled.get("after-task-done")
            if not hooks:
                self._done_checks.clear()
                return
            try:
                task = await self.store.get_task(task_id, now=self.clock.time())
            except StoreError as exc:
                log.warning("event=hook_read_failed task_id=%d error=%r", task_id, exc)
                continue
            if task is not None and task.deliveries and all(DeliveryState(d.state) in TERMINAL
                                                             for d in task.deliveries):
                self._queue("after-task-done", hooks, {"task": _task_done(task)}, dedup=f"task:{task_id}")

    # -- before-triggers: inline ----------------------------------------------------------------

    async def gate(self, operation: str, subject: Any) -> None:
        """Run the operation's before-hooks; refuse it (VETOED, ENROLL_VETOED) if one says so."""
        trigger = BEFORE.get(operation)
        hooks = self._enabled.get(trigger or "")
        if not hooks or trigger is None:
            return
        own = {"task": _task(subject)} if trigger == "before-task" else {"agent": dict(subject)}
        who = ACTOR.get()
        vetoes = await asyncio.gather(*(self._before(trigger, h, self._payload(trigger, h, own, who)) for h in hooks))
        for hook, message in zip(hooks, vetoes, strict=True):
            if message is not None:
                code = ErrorCode.VETOED if trigger == "before-task" else ErrorCode.ENROLL_VETOED
                raise ProtocolError(code, f"refused by hook {hook.name!r}: {message}")

    async def _before(self, trigger: str, hook: HookRecord, payload: dict[str, Any], *,
                      test: bool = False) -> str | None:
        """Run one before-hook and record it; the veto's message, or None to go on."""
        run = await self._attempt(hook, trigger, json.dumps(payload).encode(), payload, before=True, test=test)
        veto = None
        if run.outcome == "vetoed":
            veto = run.message or "vetoed (no message)"
        elif run.outcome != "ok" and hook.on_timeout == "fail-closed":
            veto = f"{run.message} (the hook is fail-closed)"
        # A refused operation waits for its record (the operator may look at it at once); one
        # let through does not: its own write, submitted after, commits after the record.
        await self._record(run, wait=veto is not None)
        return veto

    async def _record(self, run: RunRecord, *, wait: bool = True) -> None:
        try:
            fut = self.store.record_hook_run(run)
        except StoreError as exc:
            log.warning("event=hook_run_unrecorded hook=%s error=%r", run.hook, exc)
            return
        if not wait:
            fut.add_done_callback(lambda f: None if f.cancelled() or f.exception() is None else log.warning(
                "event=hook_run_unrecorded hook=%s error=%r", run.hook, f.exception()))
            return
        try:
            await fut
        except StoreError as exc:
            log.warning("event=hook_run_unrecorded hook=%s error=%r", run.hook, exc)

    # -- running one -----------------------------------------------------------------------------

    async def _attempt(self, hook: HookRecord, trigger: str, body: bytes, payload: dict[str, Any], *,
                       before: bool, attempt: int = 1, test: bool = False) -> RunRecord:
        started, t0 = self.clock.time(), self.clock.monotonic()
        try:
            async with asyncio.timeout(hook.timeout + 1.0):  # each action keeps its timeout; this is a backstop
                answer = await self._act(hook, body, payload)
        except TimeoutError:
            answer = Answer("timeout", f"no answer within {hook.timeout:g} s")
        outcome, message = answer.outcome, answer.message
        if before and outcome == "ok" and hook.action != "email":
            said = verdict(answer.body)
            if said is not None and said[0]:
                outcome, message = "vetoed", said[1]
        log.log(logging.INFO if outcome in ("ok", "vetoed") else logging.WARNING,
                "event=hook_run hook=%s trigger=%s outcome=%s attempt=%d message=%r", hook.name, trigger, outcome,
                attempt, message)
        return RunRecord(hook=hook.name, trigger=trigger, started_at=started, duration=self.clock.monotonic() - t0,
                         outcome=outcome, message=message, attempt=attempt, test=test)

    async def _act(self, hook: HookRecord, body: bytes, payload: dict[str, Any]) -> Answer:
        if hook.action == "script":
            return await run_script(self.scripts, hook.target, body, hook.timeout)
        if hook.action == "web":
            if self._http is None:
                import aiohttp
                self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT))
            return await post(self._http, hook.target, body, fingerprint=hook.fingerprint, secret=hook.secret,
                              seconds=hook.timeout, now=self.clock.time())
        fields = {**payload, "payload": json.dumps(payload, indent=2)}
        message = email_message(self.smtp or Smtp("", 0, ""), hook.target.split(","),
                                hook.subject or "tether {trigger}: {hook}", hook.body or DEFAULT_BODY, fields)
        return await send_email(self.smtp, message, hook.timeout)

    async def test(self, name: str) -> HookRunView:
        """Fire the hook now with a sample payload of its trigger; its run, recorded."""
        hook = self.hooks.get(name)
        if hook is None:
            raise ProtocolError(ErrorCode.UNKNOWN_HOOK, f"no hook named {name!r} (see: tetherctl hooks list)")
        trigger = TRIGGERS[hook.trigger]
        own = {key: SAMPLES[key] for key in trigger.keys}
        payload = {**self._payload(hook.trigger, hook, own, ACTOR.get()), "sample": True}
        run = await self._attempt(hook, hook.trigger, json.dumps(payload).encode(), payload, before=trigger.before,
                                  test=True)
        await self._record(run)
        return run_view(run)

    # -- the outbox ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver the outbox until cancelled (tetherd's task group owns this)."""
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    self._wake.clear()
                    if self._done_checks:
                        await self._check_done()
                    await self._start_due(tg)
                    await self._idle()
        finally:
            if self._http is not None:
                await self._http.close()

    async def _idle(self) -> None:
        """Until something is queued or ends, or a retry may be due."""
        handle = None
        if self.pending > len(self._inflight):
            retry = min((until for until, _ in self._failing.values()), default=float("inf"))
            when = min(self.clock.time() + CHECK_EVERY, retry)
            handle = self.clock.call_at(when, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            if handle is not None:
                handle.cancel()

    async def _start_due(self, tg: asyncio.TaskGroup) -> None:
        free = IN_FLIGHT - len(self._inflight)
        if free <= 0 or self.pending <= len(self._inflight):
            return
        now = self.clock.time()
        skip = [name for name, (until, _) in self._failing.items() if until > now]
        skip += [name for name, n in self._per_hook.items() if n >= self.concurrency]
        try:
            rows = await self.store.due_hook_runs(now, free, skip_ids=list(self._inflight), skip_hooks=skip)
        except StoreError as exc:
            log.warning("event=hook_outbox_read_failed error=%r", exc)
            return
        for row in rows:
            if self._per_hook[row.hook] >= self.concurrency or row.id in self._inflight:
                continue
            self._inflight[row.id] = row.hook
            self._per_hook[row.hook] += 1
            tg.create_task(self._deliver(row), name=f"hook-{row.hook}")

    async def _deliver(self, row: OutboxRow) -> None:
        hook = self.hooks.get(row.hook)
        ended = True
        try:
            if hook is None:  # removed meanwhile: its outbox rows went with it
                return
            run = await self._attempt(hook, row.trigger, row.payload, json.loads(row.payload), before=False,
                                      attempt=row.attempts + 1)
            retry_at = None
            if run.outcome == "ok":
                self._failing.pop(hook.name, None)
            else:
                failures = self._failing.get(hook.name, (0.0, 0))[1] + 1
                delay = min(RETRY_MAX, 2.0 ** (failures - 1)) * random.uniform(0.8, 1.0)
                retry_at = self.clock.time() + delay
                self._failing[hook.name] = (retry_at, failures)
                if retry_at - row.queued_at > self.retry_for:
                    retry_at = None
                    run = msgspec.structs.replace(run, message=f"{run.message}; given up after {run.attempt} "
                                                               f"attempts over {self.retry_for:g} s")
                    log.error("event=hook_given_up hook=%s trigger=%s attempts=%d", hook.name, row.trigger,
                              run.attempt)
            try:
                await self.store.end_hook_run(row.id, run, retry_at)
            except StoreError as exc:  # still queued: tried again
                log.warning("event=hook_run_unrecorded hook=%s error=%r", hook.name, exc)
                ended = False
            else:
                ended = retry_at is None
        finally:
            del self._inflight[row.id]
            self._per_hook[row.hook] -= 1
            if self._per_hook[row.hook] <= 0:
                del self._per_hook[row.hook]
            if ended and hook is not None:
                self.pending -= 1
                if self.pending <= self.outbox_max // 20:
                    self._backlog_told = False
            self._wake.set()
