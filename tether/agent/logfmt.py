"""Structured ``key=value`` log lines (STYLE "Logging": one line per event, no secrets).

The line format and the quoting of values are tetherd's too (:mod:`tether.protocol.logfmt`).

Every agent log line is ``event=<name>`` followed by fields. A process may host hundreds of
simulated agents (the benchmark does), so each :class:`EventLog` carries the fields that
say *which* agent speaks (``agent_id=...``) and prefixes them to every line.

Nothing here formats a token: callers never pass one, and :class:`EventLog` has no way to
know a secret, so the rule is enforced at the call sites (``client.py``, ``cli.py``).
"""

from __future__ import annotations

import logging

from tether.protocol.logfmt import LogfmtFormatter, kv, quote

__all__ = ["LOGGER", "EventLog", "LogfmtFormatter", "kv", "quote"]

LOGGER = logging.getLogger("tether.agent")


class EventLog:
    """A logger bound to context fields (e.g. ``agent_id``) that formats lazily."""

    __slots__ = ("_context", "_logger")

    def __init__(self, logger: logging.Logger = LOGGER, **context: object) -> None:
        self._logger = logger
        self._context = tuple(context.items())

    def bind(self, **context: object) -> EventLog:
        """A copy with more context fields (later fields win on a clash)."""
        merged = dict(self._context)
        merged.update(context)
        return EventLog(self._logger, **merged)

    def _log(self, level: int, event: str, fields: dict[str, object], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, kv(event, (*self._context, *fields.items())), exc_info=exc_info)

    def debug(self, event: str, **fields: object) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: object) -> None:
        """Log at ERROR with the current exception's traceback (folded into one line)."""
        self._log(logging.ERROR, event, fields, exc_info=True)
