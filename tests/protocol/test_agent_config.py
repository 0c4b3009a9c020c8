"""Agents' configuration (``protocol/agent_config.py``): which keys and values are taken,
how layers make an agent's configuration, and its content address."""

from __future__ import annotations

import hashlib

import pytest

from tether.protocol import ErrorCode
from tether.protocol.agent_config import (
    DEFAULTS,
    EMPTY_HASH,
    MAX_KEYS,
    ConfigError,
    canonical,
    check_key,
    check_settings,
    check_value,
    config_hash,
    desired,
    differences,
    effective,
    origins,
)


@pytest.mark.parametrize(("key", "value", "kept"), [
    ("state_interval", 60, 60.0),
    ("state_interval", 90.5, 90.5),
    ("state_interval", "5m", 300.0),
    ("state_interval", "1h30m", 5400.0),
    ("log_level", "debug", "debug"),
    ("app.mode", "strict", "strict"),
    ("app.retries", 3, 3),
    ("app.ratio", 0.5, 0.5),
    ("app.enabled", False, False),
    ("app.x-y_z.1", "", ""),
])
def test_values_taken(key: str, value: object, kept: object) -> None:
    assert check_value(check_key(key), value) == kept
    assert type(check_value(key, value)) is type(kept)


@pytest.mark.parametrize(("key", "message"), [
    ("state_intrval", "unknown configuration key 'state_intrval' (did you mean 'state_interval'?)"),
    ("App.mode", "unknown configuration key 'App.mode': the keys are state_interval, log_level and app.NAME"),
    ("app.", "unknown configuration key 'app.'"),
    ("app." + "x" * 64, "unknown configuration key"),
    (3, "unknown configuration key 3"),
])
def test_unknown_keys_are_refused_naming_the_near_one(key: object, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_key(key)
    assert refused.value.code is ErrorCode.INVALID_CONFIG and refused.value.message.startswith(message)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("state_interval", "soon", "state_interval must be a duration from 10 s to 604800 s (e.g. 300 or 5m), not 'soon'"),
    ("state_interval", 5, "state_interval must be a duration from 10 s"),
    ("state_interval", "8d", "state_interval must be a duration"),
    ("state_interval", True, "state_interval must be a duration"),
    ("state_interval", None, "state_interval must be a duration"),
    ("log_level", "loud", "log_level must be one of debug, info, warning, error, not 'loud'"),
    ("app.mode", [1], "app.mode must be text (at most 1024 characters), a whole number, a finite number or "
                      "true/false, not [1]"),
    ("app.mode", "x" * 1025, "app.mode must be text"),
    ("app.mode", float("nan"), "app.mode must be text"),
    ("app.mode", 2**63, "app.mode must be text"),
    ("app.mode", None, "app.mode must be text"),
    ("app.mode", {"k": "v" * 100}, "app.mode must be text (at most 1024 characters), a whole number, a finite number or true/false, not a dict"),
])
def test_values_of_the_wrong_type_are_refused_saying_what_is_taken(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_value(key, value)
    assert refused.value.message.startswith(message)


def test_settings_are_checked_whole_and_bounded() -> None:
    assert check_settings({"state_interval": "1m", "app.a": 1}) == {"state_interval": 60.0, "app.a": 1}
    with pytest.raises(ConfigError, match="at most 64 keys, not 65"):
        check_settings({f"app.k{i}": i for i in range(MAX_KEYS + 1)})
    with pytest.raises(ConfigError, match="unknown configuration key 'nope'"):
        check_settings({"app.a": 1, "nope": 2})


def test_layers_defaults_then_tags_alphabetically_then_the_agent() -> None:
    tags = {"web": {"state_interval": 60.0, "app.mode": "web"}, "db": {"app.mode": "db", "log_level": "debug"},
            "other": {"app.unrelated": 1}}
    assert desired(tags, ["web", "db"], {}) == {"app.mode": "web", "log_level": "debug", "state_interval": 60.0}
    assert desired(tags, ["web", "db"], {"app.mode": "mine", "state_interval": 300.0}) == {
        "app.mode": "mine", "log_level": "debug"}  # the agent's own 300 s is the default: not a difference
    assert origins(tags, ["web", "db"], {"app.mode": "mine"}) == {
        "app.mode": "agent", "log_level": "tag:db", "state_interval": "tag:web"}
    assert desired({}, [], {}) == {} and differences(DEFAULTS) == {}
    assert effective({"app.x": 1}) == {**DEFAULTS, "app.x": 1}


def test_the_hash_is_the_content_whatever_the_order() -> None:
    one, two = {"b": 1, "a": "é"}, {"a": "é", "b": 1}
    assert canonical(one) == canonical(two) == '{"a":"é","b":1}'.encode()
    assert config_hash(one) == config_hash(two) == hashlib.sha256(canonical(one)).hexdigest()
    assert EMPTY_HASH == hashlib.sha256(b"{}").hexdigest() != config_hash({"a": 1})
