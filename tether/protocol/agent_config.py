"""Agents' configuration (Armadito "AVConfig" and "Scheduler"): its keys, the layers it is
made of, and its content address.

An agent's **desired** configuration is layered: the defaults (:data:`DEFAULTS`), then each
tag the agent carries (in the tags' alphabetical order: a later tag wins a key two of them
set), then the agent's own settings. Only what differs from the defaults is the
configuration (:func:`desired`): an agent nobody configured has the empty one. Its
**hash** (:func:`config_hash`) is the SHA-256 of its canonical JSON: the same settings give
the same hash on every machine, so tetherd stores each distinct configuration once, and
an agent whose reported configuration hashes otherwise than its desired one has drifted.

Keys: ``state_interval`` (seconds between two state reports, :mod:`.agent_state`),
``log_level`` (the agent's log level), and ``app.NAME`` for the agent's own code (given to
its ``@agent.on_config`` handlers): text, a whole number, a number or true/false. A key or
value outside these is refused when it is set (:class:`ConfigError`), never when it is
pushed: an operator learns at once, and an agent is never sent what it cannot apply.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .agent_state import DEFAULT_STATE_INTERVAL, MIN_STATE_INTERVAL
from .errors import ErrorCode, ProtocolError
from .polling import parse_duration

MAX_STATE_INTERVAL = 7 * 86_400.0
"""The longest ``state_interval``: an agent reports at least weekly."""
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_KEYS = 64
"""Keys in one layer, and in one agent's configuration."""
MAX_TEXT = 1024
"""Characters of a text value."""
APP_KEY = re.compile(r"app\.[a-z0-9][a-z0-9_.-]{0,62}")
"""The agent's own keys: ``app.`` and a lower-case name."""

DEFAULTS: dict[str, Any] = {"state_interval": DEFAULT_STATE_INTERVAL, "log_level": "info"}
"""Every built-in key and its default; ``app.*`` keys have none."""


class ConfigError(ProtocolError):
    """A configuration key or value that is refused, saying why (``invalid_config``)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_CONFIG, message)


def check_key(key: object) -> str:
    """``key`` if it is a configuration key; else :class:`ConfigError`, naming the near one."""
    if isinstance(key, str) and (key in DEFAULTS or APP_KEY.fullmatch(key)):
        return key
    near = difflib.get_close_matches(str(key), DEFAULTS, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise ConfigError(f"unknown configuration key {key!r}{hint}: the keys are {', '.join(DEFAULTS)} and "
                      "app.NAME (lower-case letters, digits, '_', '.', '-')")


def check_value(key: str, value: object) -> Any:
    """``value`` as ``key`` keeps it (``state_interval`` in seconds, from a number or a
    duration such as ``5m``); else :class:`ConfigError` saying what ``key`` takes."""
    if key == "state_interval":
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError:
                seconds = None
        if seconds is None or not MIN_STATE_INTERVAL <= seconds <= MAX_STATE_INTERVAL:
            raise ConfigError(f"state_interval must be a duration from {MIN_STATE_INTERVAL:g} s to "
                              f"{MAX_STATE_INTERVAL:g} s (e.g. 300 or 5m), not {value!r}")
        return seconds
    if key == "log_level":
        if value not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
        return value
    if isinstance(value, str) and len(value) <= MAX_TEXT:
        return value
    if isinstance(value, bool) or (isinstance(value, int) and -(2**63) <= value < 2**63):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ConfigError(f"{key} must be text (at most {MAX_TEXT} characters), a whole number, a finite number or "
                      f"true/false, not {_shown(value)}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def check_settings(settings: Mapping[str, object]) -> dict[str, Any]:
    """Every key and value checked (:func:`check_key`, :func:`check_value`), at most
    :data:`MAX_KEYS` of them; the first problem raises :class:`ConfigError`."""
    if len(settings) > MAX_KEYS:
        raise ConfigError(f"a configuration holds at most {MAX_KEYS} keys, not {len(settings)}")
    return {check_key(key): check_value(key, value) for key, value in settings.items()}


def desired(tag_layers: Mapping[str, Mapping[str, Any]], tags: Iterable[str],
            agent_layer: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's configuration: the defaults, then the layer of each of its ``tags`` in
    alphabetical order, then its own; only what differs from the defaults, sorted by key."""
    merged: dict[str, Any] = {}
    for tag in sorted(tags):
        merged.update(tag_layers.get(tag, {}))
    merged.update(agent_layer)
    return differences(merged)


def differences(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without what equals the defaults, sorted by key: what is stored and hashed."""
    return {key: settings[key] for key in sorted(settings) if DEFAULTS.get(key, _NONE) != settings[key]}


_NONE = object()


def origins(tag_layers: Mapping[str, Mapping[str, Any]], tags: Iterable[str],
            agent_layer: Mapping[str, Any]) -> dict[str, str]:
    """Where each key of :func:`desired` comes from: ``tag:T`` or ``agent``."""
    found: dict[str, str] = {}
    for tag in sorted(tags):
        found.update(dict.fromkeys(tag_layers.get(tag, {}), f"tag:{tag}"))
    found.update(dict.fromkeys(agent_layer, "agent"))
    return found


def canonical(settings: Mapping[str, Any]) -> bytes:
    """The bytes a configuration is hashed and stored as: compact JSON, keys sorted."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def config_hash(settings: Mapping[str, Any]) -> str:
    """The configuration's content address: the SHA-256 of :func:`canonical`, in hex."""
    return hashlib.sha256(canonical(settings)).hexdigest()


def effective(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every key an agent runs with: the defaults, then ``settings``."""
    return {**DEFAULTS, **settings}


EMPTY_HASH = config_hash({})
"""The hash of an agent nobody configured."""
