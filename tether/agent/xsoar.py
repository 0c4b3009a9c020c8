"""Cortex XSOAR's polling subset of ``CommonServerPython``, so an integration's polling
commands run on a tether agent with one import line changed::

    import demistomock as demisto                     # these two lines ...
    from CommonServerPython import *
    from tether.agent.xsoar import *                  # ... become this one

The reference is ``Packs/Base/Scripts/CommonServerPython/CommonServerPython.py`` in the
public ``demisto/content`` repository; each name below cites the function it follows.
Provided: :func:`polling_function`, :class:`PollResult`, :class:`ScheduledCommand`,
:class:`CommandResults`, :class:`EntryType` / ``entryTypes``, :class:`EntryFormat` /
``formats``, :func:`argToBoolean`, :func:`arg_to_number`, :func:`argToList`, :func:`batch`,
:func:`return_error`, :class:`DemistoException`, :func:`get_schedule_metadata` and the
``demisto`` object (``args()``, ``getArg()``, ``command()``, ``params()``, ``debug()``,
``info()``, ``error()``, ``callingContext``), which answers for the run under way through a
context variable: each run of each delivery sees its own.

What a handler returns is read as XSOAR's ``return_results`` would (see
:mod:`tether.agent.outcome`): a ``CommandResults`` is the run's entry, one with
``scheduled_command`` schedules the next run, a list of results is the run's output (each
result in it with a schedule starts a polling sequence of its own), and an error entry
(``entry_type=EntryType.ERROR``, ``entryTypes['error']``, :func:`return_error`) fails the run.

Where tether differs, and why, is in the README ("Porting an XSOAR integration").
"""

from __future__ import annotations

import datetime as _datetime
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Set, Union, cast  # noqa: UP035 -- re-exported, as CommonServerPython does

from .polling import PollResult, ScheduledCommand, polling_function
from .sdk import CURRENT_RUN, Context, ErrorResult, argToBoolean

__all__ = [  # the polling subset, helpers its commands use, and what CommonServerPython's star import brings
    "Any",
    "CommandResults",
    "DemistoException",
    "Dict",
    "EntryFormat",
    "EntryType",
    "List",
    "Optional",
    "PollResult",
    "ScheduledCommand",
    "Set",
    "Union",
    "argToBoolean",
    "argToList",
    "arg_to_number",
    "assign_params",
    "batch",
    "cast",
    "datetime",
    "demisto",
    "dict_safe_get",
    "entryTypes",
    "formats",
    "get_schedule_metadata",
    "json",
    "os",
    "polling_function",
    "re",
    "remove_empty_elements",
    "return_error",
    "string_to_table_header",
    "sys",
    "tableToMarkdown",
    "time",
    "timedelta",
    "traceback",
]

_log = logging.getLogger("tether.agent.xsoar")


class EntryType:
    """CommonServerPython ``EntryType``: the type of a war-room entry."""

    NOTE = 1
    DOWNLOAD_AGENT = 2
    FILE = 3
    ERROR = 4
    PINNED = 5
    USER_MANAGEMENT = 6
    IMAGE = 7
    PLAYGROUND_ERROR = 8
    ENTRY_INFO_FILE = 9
    VIDEO_FILE = 10
    WARNING = 11
    STATIC_VIDEO_FILE = 12
    MAP_ENTRY_TYPE = 15
    WIDGET = 17
    EXECUTION_METRICS = 19


entryTypes = {
    "note": 1, "downloadAgent": 2, "file": 3, "error": 4, "pinned": 5, "userManagement": 6, "image": 7,
    "playgroundError": 8, "entryInfoFile": 9, "warning": 11, "map": 15, "debug": 16, "widget": 17,
}
"""CommonServerPython ``entryTypes``."""


class EntryFormat:
    """CommonServerPython ``EntryFormat``."""

    HTML = "html"
    TABLE = "table"
    JSON = "json"
    TEXT = "text"
    DBOT_RESPONSE = "dbotCommandResponse"
    MARKDOWN = "markdown"


formats = {"html": "html", "table": "table", "json": "json", "text": "text", "dbotResponse": "dbotCommandResponse",
           "markdown": "markdown"}
"""CommonServerPython ``formats``."""


class DemistoException(Exception):
    """CommonServerPython ``DemistoException(message, exception=None, res=None, *args)``:
    ``str()`` is the message."""

    def __init__(self, message: object, exception: BaseException | None = None, res: Any = None, *args: Any) -> None:
        self.res = res
        self.message = message
        self.exception = exception
        super().__init__(message, exception, *args)

    def __str__(self) -> str:
        return str(self.message)


def arg_to_number(arg: Any, arg_name: str | None = None, required: bool = False) -> int | None:
    """CommonServerPython ``arg_to_number``: ``None``/``""`` -> ``None`` (or ``ValueError``
    if ``required``); a string of digits or a float's text -> ``int`` (truncated); an int as
    is; anything else is a ``ValueError``."""
    if arg is None or arg == "":
        if required is True:
            raise ValueError(f'Missing "{arg_name}"' if arg_name else "Missing required argument")
        return None
    if isinstance(arg, str):
        if arg.isdigit():
            return int(arg)
        try:
            return int(float(arg))
        except Exception:
            raise ValueError(f'Invalid number: "{arg_name}"="{arg}"' if arg_name
                             else f'"{arg}" is not a valid number') from None
    if isinstance(arg, int):
        return arg
    raise ValueError(f'Invalid number: "{arg_name}"="{arg}"' if arg_name else f'"{arg}" is not a valid number')


def argToList(arg: Any, separator: str = ",", transform: Callable[[Any], Any] | None = None) -> list[Any]:
    """CommonServerPython ``argToList``: a list as is, ``"[...]"`` as JSON, ``"a,b"`` split
    and stripped, any other value in a list of one; nothing -> ``[]``."""
    if not arg:
        result: list[Any] = []
    elif isinstance(arg, list):
        result = arg
    elif isinstance(arg, str):
        if arg[0] == "[" and arg[-1] == "]":
            try:
                result = json.loads(arg)
            except ValueError:
                result = [s.strip() for s in arg.split(separator)]
        else:
            result = [s.strip() for s in arg.split(separator)]
    else:
        result = [arg]
    return [transform(s) for s in result] if transform else result


def batch(iterable: list[Any], batch_size: int = 1) -> Iterator[list[Any]]:
    """CommonServerPython ``batch``: slices of ``batch_size`` (Gmail's search of all
    mailboxes splits its accounts with it before scheduling one run per slice)."""
    current, rest = iterable[:batch_size], iterable[batch_size:]
    while current:
        yield current
        current, rest = rest[:batch_size], rest[batch_size:]


def dict_safe_get(dict_object: Any, keys: list[Any], default_return_value: Any = None, return_type: Any = None,
                  raise_return_type: bool = True) -> Any:
    """CommonServerPython ``dict_safe_get``: a nested lookup that gives the default where a
    key or index is missing; with ``return_type``, a value of another type raises
    ``TypeError`` (or gives the default)."""
    value = dict_object
    for key in keys:
        try:
            value = value[key]
        except (KeyError, TypeError, IndexError, AttributeError):
            value = default_return_value
            break
    if return_type and not isinstance(value, return_type):
        if raise_return_type:
            raise TypeError(f"Safe get Error:\nDetails: Return Type Error Excepted return type {return_type}, but "
                            f"actual type from nested dict/list is {type(value)} with value {value}.\n"
                            f"Query: {keys}\nQueried object: {dict_object}")
        value = default_return_value
    return value


def assign_params(keys_to_ignore: Any = None, values_to_ignore: Any = None, **kwargs: Any) -> dict[str, Any]:
    """CommonServerPython ``assign_params``: the keyword arguments less empty values (None,
    '', [], {}, ()) and ignored keys."""
    ignored_values = (None, "", [], {}, ()) if values_to_ignore is None else values_to_ignore
    ignored_keys = keys_to_ignore or ()
    return {k: v for k, v in kwargs.items() if v not in ignored_values and k not in ignored_keys}


def remove_empty_elements(d: Any) -> Any:
    """CommonServerPython ``remove_empty_elements``: nested dicts and lists without None,
    empty dicts and empty lists."""

    def empty(x: Any) -> bool:
        return x is None or x == {} or x == []

    if isinstance(d, dict):
        return {k: v for k, v in ((k, remove_empty_elements(v)) for k, v in d.items()) if not empty(v)}
    if isinstance(d, list):
        return [v for v in (remove_empty_elements(v) for v in d) if not empty(v)]
    return d


def string_to_table_header(string: str) -> str:
    """CommonServerPython ``string_to_table_header``: ``"snake_case"`` -> ``"Snake Case"``."""
    if isinstance(string, str):
        return " ".join(part.capitalize() for part in string.replace("_", " ").split())
    raise Exception("The key is not a string: {}".format(string))  # noqa: UP032 -- XSOAR's message


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def tableToMarkdown(name: str, t: Any, headers: Any = None, headerTransform: Callable[[str], str] | None = None,
                    removeNull: bool = False, metadata: str | None = None, url_keys: Any = None,
                    date_fields: Any = None, json_transform_mapping: Any = None, is_auto_json_transform: bool = False,
                    sort_headers: bool = True) -> str:
    """CommonServerPython ``tableToMarkdown``, for readable outputs: ``### name``, then a
    table of the dicts in ``t`` (one dict: one row; ``headers``: the columns, else the keys of
    the rows, sorted unless ``sort_headers=False``), or ``**No entries.**``. Cells are laid out
    as XSOAR's are (lists joined, dicts as JSON, ``|`` escaped), not byte for byte."""
    rows = [t] if isinstance(t, dict) else list(t or [])
    rows = [r if isinstance(r, dict) else {"": r} for r in rows]
    if headers is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        headers = sorted(seen) if sort_headers else list(seen)
    elif isinstance(headers, str):
        headers = [headers]
    if removeNull:
        headers = [h for h in headers if any(row.get(h) not in (None, "", [], {}) for row in rows)]
    out = f"### {name}\n" if name else ""
    if metadata:
        out += metadata + "\n"
    if not rows or not headers:
        return out + "**No entries.**\n"
    shown = [headerTransform(h) if headerTransform else h for h in headers]
    out += "|" + "|".join(shown) + "|\n" + "|" + "|".join("---" for _ in shown) + "|\n"
    for row in rows:
        out += "| " + " | ".join("" if row.get(h) is None else _cell(row.get(h)) for h in headers) + " |\n"
    return out


class CommandResults:
    """CommonServerPython ``CommandResults``: one war-room entry. ``scheduled_command``
    makes it a schedule result (the next run is scheduled, this is the run's entry);
    ``entry_type=EntryType.ERROR`` makes it an error (the run fails with ``readable_output``).
    Indicators, relationships, timelines and execution metrics are kept but not rendered:
    tether has no indicator store."""

    def __init__(self, outputs_prefix: str | None = None, outputs_key_field: str | list[str] | None = None,
                 outputs: Any = None, indicators: Any = None, readable_output: str | None = None,
                 raw_response: Any = None, indicators_timeline: Any = None, indicator: Any = None,
                 ignore_auto_extract: bool = False, mark_as_note: bool = False, tags: list[str] | None = None,
                 scheduled_command: ScheduledCommand | None = None, relationships: Any = None,
                 entry_type: int | None = None, content_format: str | None = None, execution_metrics: Any = None,
                 replace_existing: bool = False) -> None:
        if raw_response is None:
            raw_response = outputs
        if outputs is not None:
            if not isinstance(outputs, dict) and not outputs_prefix:
                raise ValueError("outputs_prefix is missing")
            if outputs_prefix == ".":
                raise ValueError("outputs_prefix cannot be a period.")
        if indicators and indicator:
            raise ValueError("indicators is DEPRECATED, use only indicator")
        self.outputs_prefix = outputs_prefix
        self.outputs_key_field = outputs_key_field
        self.outputs = outputs
        self.indicators = indicators
        self.indicator = indicator
        self.readable_output = readable_output
        self.raw_response = raw_response
        self.indicators_timeline = indicators_timeline
        self.ignore_auto_extract = ignore_auto_extract
        self.mark_as_note = mark_as_note
        self.tags = tags
        self.scheduled_command = scheduled_command
        self.relationships = relationships
        self.entry_type = EntryType.NOTE if entry_type is None else entry_type
        self.content_format = content_format
        self.execution_metrics = execution_metrics
        self.replace_existing = replace_existing

    def __repr__(self) -> str:
        return f"CommandResults(entry_type={self.entry_type}, readable_output={self.readable_output!r})"

    def to_context(self) -> dict[str, Any]:
        """The entry as JSON-ready data, in ``to_context``'s keys (``Type``, ``Contents``,
        ``HumanReadable``, ``EntryContext`` ...); the schedule is not part of it: tether
        carries it beside the output."""
        context: dict[str, Any] = {}
        if self.outputs is not None and self.outputs != []:
            keys = [self.outputs_key_field] if isinstance(self.outputs_key_field, str) else self.outputs_key_field
            if self.outputs_prefix and self.replace_existing:
                path, _, key = self.outputs_prefix.rpartition(".")
                if not path:
                    raise DemistoException("outputs_prefix must be a nested path to replace an existing key.")
                context[path + "(true)"] = {key: self.outputs}
            elif self.outputs_prefix and keys:
                condition = " && ".join(f"val.{k} && val.{k} == obj.{k}" for k in keys)
                context[f"{self.outputs_prefix}({condition})"] = self.outputs
            elif self.outputs_prefix:
                context[str(self.outputs_prefix)] = self.outputs
            else:
                context.update(self.outputs)
        raw = self.raw_response
        content_format = self.content_format or (
            EntryFormat.TEXT if isinstance(raw, str | bytes | int) else EntryFormat.JSON)
        entry: dict[str, Any] = {
            "Type": self.entry_type, "ContentsFormat": content_format, "Contents": raw,
            "HumanReadable": self.readable_output or None, "EntryContext": context,
        }
        if self.mark_as_note:
            entry["Note"] = True
        if self.tags:
            entry["Tags"] = self.tags
        return entry


def return_error(message: object, error: object = "", outputs: Any = None) -> None:
    """CommonServerPython ``return_error``: an error entry with ``message``, and the end of
    the command (XSOAR exits the script; here the run ends as failed with the message).
    ``error`` is logged."""
    if error:
        _log.error("command_error message=%r error=%r", message, str(error))
    raise ErrorResult(str(message))


def get_schedule_metadata(context: dict[str, Any] | None = None) -> dict[str, Any]:
    """CommonServerPython ``get_schedule_metadata(context)``: for a scheduled run,
    ``is_polling``, ``polling_command``, ``polling_args``, ``times_ran`` (this run's number),
    ``start_date`` and ``end_date`` of the sequence (ISO times); ``{}`` for a run nobody
    scheduled. ``context`` is ``demisto.callingContext`` (or its ``context``); without one,
    the run under way."""
    if context is None:
        context = demisto.callingContext
    parent = (context.get("context") or context).get("ParentEntry") or {} if isinstance(context, dict) else {}
    if not parent:
        return {}
    metadata = {
        "is_polling": bool(parent.get("polling")),
        "polling_command": parent.get("pollingCommand"),
        "polling_args": parent.get("pollingArgs"),
        "times_ran": int(parent.get("timesRan", 0)) + 1,
        "start_date": parent.get("startDate"),
        "end_date": parent.get("endingDate"),
    }
    return {k: v for k, v in metadata.items() if v not in (None, "", [], {})}


def _iso(seconds: float) -> str | None:
    if not seconds:
        return None
    return _datetime.datetime.fromtimestamp(seconds, _datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Demisto:
    """The ``demisto`` object of an integration, for the run under way."""

    @staticmethod
    def _run() -> Context:
        ctx = CURRENT_RUN.get()
        if ctx is None:
            raise DemistoException(
                "demisto.args() is available only while a command runs. At import time (e.g. "
                "polling_function(interval=arg_to_number(demisto.args().get('interval_in_seconds', 30)))), "
                "pass a function of the run's args instead: "
                "interval=lambda args: arg_to_number(args.get('interval_in_seconds', 30))")
        return ctx

    def args(self) -> dict[str, Any]:
        """The args of the run under way (its own dict: a change stays in this run)."""
        return self._run().args

    def getArg(self, name: str) -> Any:
        return self._run().args.get(name)

    def command(self) -> str:
        return self._run().command

    def params(self) -> dict[str, Any]:
        """The integration's instance parameters: tether has none (configure the command's
        own code, e.g. through the agent's environment)."""
        return {}

    @property
    def callingContext(self) -> dict[str, Any]:
        """``{"args": ..., "command": ..., "context": {"ParentEntry": ...}}``: a scheduled run's
        parent entry, as XSOAR gives it to ``get_schedule_metadata``."""
        ctx = CURRENT_RUN.get()
        if ctx is None:
            return {}
        parent: dict[str, Any] = {}
        if ctx.run > 1:
            parent = {"polling": True, "pollingCommand": ctx.command, "pollingArgs": ctx.args,
                      "timesRan": ctx.run - 1, "startDate": _iso(ctx.poll_started_at),
                      "endingDate": _iso(ctx.poll_deadline)}
        return {"args": ctx.args, "command": ctx.command, "context": {"ParentEntry": parent}}

    def _say(self, level: int, message: object) -> None:
        ctx = CURRENT_RUN.get()
        where = "" if ctx is None else f" delivery_id={ctx.delivery_id} run={ctx.run} command={ctx.command}"
        _log.log(level, "event=command_log%s message=%r", where, str(message))

    def debug(self, message: object) -> None:
        self._say(logging.DEBUG, message)

    def info(self, message: object) -> None:
        self._say(logging.INFO, message)

    def error(self, message: object) -> None:
        self._say(logging.ERROR, message)

    def results(self, results: Any) -> None:
        raise DemistoException("demisto.results() is not supported on tether: return the results from the "
                               "command function instead (the agent sends what it returns)")


demisto = _Demisto()
"""The ``demisto`` object (``import demistomock as demisto``): per run, via a context variable."""

