"""What a handler's return value means for its run: done with an output, failed with an
error, or a schedule result (its next run asked for).

Read as Cortex XSOAR's ``return_results`` reads it (CommonServerPython ``return_results``,
``CommandResults.to_context``):

* a :class:`~tether.agent.polling.ScheduledCommand` -> a schedule result; its
  ``partial_result`` is the run's output;
* an XSOAR ``CommandResults`` (:mod:`tether.agent.xsoar`) -> its entry is the output; with
  ``scheduled_command`` it is a schedule result; with ``entry_type`` ``EntryType.ERROR`` (4)
  the run fails with its readable output (or its contents);
* an entry dict whose ``Type`` is 4 (``entryTypes['error']``, what ``return_error`` writes
  in XSOAR) -> the run fails with its ``Contents``;
* a list -> each item read as above, the list of their outputs is the run's output; an
  error item fails the run; an item with a schedule schedules the next run;
* anything else -> the output, which must be JSON-serialisable.

A ``ScheduledCommand`` anywhere else in the output (inside a dict, or inside a list in a
list) cannot be honoured: the run fails saying so, rather than reporting the object as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from tether.protocol import Schedule, pack
from tether.protocol.frames import NIL

from .polling import ScheduledCommand

_NOT_JSON = (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError)
ERROR_ENTRY = 4
"""XSOAR ``EntryType.ERROR`` / ``entryTypes['error']``."""


@dataclass(slots=True)
class Outcome:
    """How a run ended, ready for its ``result`` frame."""

    ok: bool
    output: msgspec.Raw = field(default_factory=lambda: NIL)
    error: str = ""
    schedule: Schedule | None = None
    more: list[tuple[msgspec.Raw, Schedule]] = field(default_factory=list)
    """Further schedules of the same run (a list of results carrying several, as XSOAR's
    Gmail integration returns): each starts a polling sequence of its own."""


class _Refused(Exception):
    pass


def _raw(value: Any, what: str) -> msgspec.Raw:
    """``value`` as the MessagePack of what a console will see (see :func:`_json`)."""
    return msgspec.Raw(_json(value, what, packed=True))


def _json(value: Any, what: str, *, packed: bool = False) -> Any:
    """``value`` normalised through JSON (what a console will see), refusing a
    ``ScheduledCommand`` or a ``CommandResults`` hidden inside it."""

    def reject(obj: Any) -> Any:
        if isinstance(obj, ScheduledCommand) or (hasattr(obj, "scheduled_command") and hasattr(obj, "to_context")):
            raise _Refused(f"{what} holds a {type(obj).__name__} where it cannot be honoured: return it as the "
                           "command's result, or as an item of the list it returns")
        raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")

    if _holds_schedule(value):
        reject(ScheduledCommand.__new__(ScheduledCommand))
    try:
        normalised = msgspec.json.decode(msgspec.json.encode(value, enc_hook=reject))
        blob = pack(normalised)  # also refuses an integer JSON takes but MessagePack does not (beyond 64 bits)
        return blob if packed else normalised
    except _Refused:
        raise
    except _NOT_JSON as exc:
        verb = "are" if what.endswith("args") else "is"
        raise _Refused(f"{what} {verb} not JSON-serialisable ({type(value).__name__}): {exc}") from None


def _holds_schedule(value: Any, depth: int = 0) -> bool:
    """Whether a ``ScheduledCommand`` (a dataclass, which JSON would encode as data) hides in
    ``value``; containers only, as deep as an output may go."""
    if isinstance(value, ScheduledCommand):
        return True
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(_holds_schedule(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_schedule(v, depth + 1) for v in value)
    return False


def _schedule(scheduled: ScheduledCommand, run_args: dict[str, Any], poll_message: str = "") -> Schedule:
    args = run_args if scheduled.args is None else scheduled.args
    timeout = scheduled.timeout_in_seconds
    return Schedule(
        command=scheduled.command, next_run_in_seconds=float(scheduled.next_run_in_seconds),
        args=_json(args, "ScheduledCommand args"), timeout_in_seconds=None if not timeout else float(timeout),
        poll_message=scheduled.poll_message or poll_message, items_remaining=int(scheduled.items_remaining or 0),
    )


def _is_results(value: Any) -> bool:
    return hasattr(value, "to_context") and hasattr(value, "scheduled_command")


def _error_text(entry: dict[str, Any]) -> str:
    text = entry.get("HumanReadable") or entry.get("Contents")
    return text if isinstance(text, str) else msgspec.json.encode(text).decode()


def _entries(value: Any) -> Any:
    """A partial result as data: ``CommandResults`` (XSOAR's ``PollResult.partial_result``)
    become their entries, in a list too."""
    if _is_results(value):
        return value.to_context()
    if isinstance(value, list):
        return [_entries(item) for item in value]
    return value


def _item(value: Any, run_args: dict[str, Any]) -> tuple[Any, str | None, ScheduledCommand | None]:
    """One result: (its output, an error, its schedule)."""
    if isinstance(value, ScheduledCommand):
        return _entries(value.partial_result), None, value
    if _is_results(value):
        entry = value.to_context()
        if entry.get("Type") == ERROR_ENTRY:
            return entry, _error_text(entry), None
        return entry, None, value.scheduled_command
    if isinstance(value, dict) and value.get("Type") == ERROR_ENTRY:
        return value, _error_text(value), None
    return value, None, None


def interpret(value: Any, run_args: dict[str, Any]) -> Outcome:
    """The outcome of a run whose handler returned ``value``; ``run_args`` are this run's
    args as delivered (the next run's when a schedule names none)."""
    try:
        items = value if isinstance(value, list) else [value]
        outputs: list[Any] = []
        schedules: list[tuple[Any, ScheduledCommand]] = []
        for item in items:
            output, error, scheduled = _item(item, run_args)
            if error is not None:
                return Outcome(ok=False, error=error)
            outputs.append(output)
            if scheduled is not None:
                schedules.append((output, scheduled))
        output = outputs if isinstance(value, list) else outputs[0]
        if not schedules:
            return Outcome(ok=True, output=_raw(output, "return value"))
        if isinstance(value, list):  # the list, less the entries of the other sequences: this one's
            others = {id(out) for out, _ in schedules[1:]}
            output = [out for out in outputs if id(out) not in others]
        first = _schedule(schedules[0][1], run_args)
        more = [(_raw(out, "partial_result"), _schedule(s, run_args)) for out, s in schedules[1:]]
        return Outcome(ok=True, output=_raw(output, "partial_result"), schedule=first,
                       more=more)
    except _Refused as exc:
        return Outcome(ok=False, error=str(exc))
