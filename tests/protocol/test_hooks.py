"""tether.protocol.hooks: a hook's checks (what tetherctl and tetherd both refuse), the web
signature, a before-hook's verdict and the email templates."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from tether.protocol.errors import ErrorCode, ProtocolError
from tether.protocol.hooks import (
    TRIGGERS,
    HookAdd,
    HookFingerprint,
    HookName,
    HookRuns,
    normal_fingerprint,
    render,
    signature,
    verdict,
)
from tether.protocol.methods import parse_params

FP = "ab" * 32


def add(**kw: Any) -> HookAdd:
    fields: dict[str, Any] = {"name": "audit", "trigger": "after-task", "url": "https://127.0.0.1:8443/x"}
    fields.update(kw)
    hook = parse_params("hook.add", fields)
    assert isinstance(hook, HookAdd)
    return hook


def refused(**kw: Any) -> str:
    with pytest.raises(ProtocolError) as err:
        add(**kw)
    assert err.value.code is ErrorCode.INVALID_PARAMS
    return err.value.message


def test_a_good_hook_of_each_action() -> None:
    assert add().action == "web"
    assert add(url=None, script="check-task.sh").action == "script"
    assert add(url=None, email=["ops@example.com"], subject="s", body="b").action == "email"
    assert add(fingerprint=FP.upper(), secret="s", data={"ticket": 1}, tags=["x"], timeout=60).timeout == 60


@pytest.mark.parametrize(("kw", "message"), [
    ({"name": "a b"}, "invalid hook name 'a b'"),
    ({"name": "x" * 65}, "invalid hook name"),
    ({"trigger": "after-lunch"}, "unknown trigger 'after-lunch' (known: before-task, after-task"),
    ({"script": "x"}, "give exactly one action: script, url or email"),
    ({"url": None}, "give exactly one action"),
    ({"url": None, "script": "../x"}, "not a path"),
    ({"url": None, "script": "a/b"}, "not a path"),
    ({"url": None, "script": "a..b"}, "not a path"),
    ({"url": "http://127.0.0.1/"}, "must start with https://"),
    ({"url": "https://"}, "invalid URL 'https://'"),
    ({"url": "https://h:99999/"}, "invalid URL"),
    ({"url": "https://h/a b"}, "invalid URL"),
    ({"url": None, "script": "x", "secret": "s"}, "fingerprint and secret are for a web hook"),
    ({"fingerprint": "12:34"}, "invalid fingerprint '12:34'"),
    ({"url": None, "email": []}, "sends to 1-20 addresses"),
    ({"url": None, "email": ["nobody"]}, "invalid email address 'nobody'"),
    ({"subject": "s"}, "subject and body are for an email hook"),
    ({"timeout": 0}, "timeout must be more than 0 and at most 60"),
    ({"timeout": 61}, "at most 60"),
    ({"data": [1]}, "custom data must be a JSON object, not list"),
    ({"data": {"n": 2**64}}, "params hold an integer beyond 64 bits at `$.data.n`"),
    ({"data": {"k": "x" * 20_000}}, "custom data is larger than 16384 bytes"),
    ({"data": {"task": 1, "who": 2}}, "custom data key(s) 'task', 'who' collide with the after-task payload's"),
    ({"tags": ["bad tag"]}, "tag"),
    ({"description": "d" * 1025}, "description is 1025 characters long; at most 1024"),
    ({"url": None, "email": ["a@b.c"], "body": "b" * 16_385}, "body is 16385 characters long"),
])
def test_bad_hooks_are_refused_by_name(kw: dict[str, Any], message: str) -> None:
    assert message in refused(**kw)


def test_custom_data_is_checked_as_a_json_value_when_made_directly() -> None:
    hook = HookAdd(name="a", trigger="after-task", script="x", data={"n": 2**64})
    with pytest.raises(ProtocolError, match="custom data holds an integer beyond 64 bits"):
        hook.check()


def test_the_other_params() -> None:
    assert isinstance(parse_params("hook.get", {"name": "A"}), HookName)
    assert isinstance(parse_params("hook.runs", {"name": "A", "limit": 5}), HookRuns)
    assert isinstance(parse_params("hook.fingerprint", {"url": "https://h:1"}), HookFingerprint)
    for method, params in (("hook.get", {"name": "a/b"}), ("hook.runs", {"name": "a", "limit": 0}),
                           ("hook.fingerprint", {"url": "http://h"})):
        with pytest.raises(ProtocolError):
            parse_params(method, params)


def test_fingerprints_are_normalised() -> None:
    assert normal_fingerprint(":".join(["AB"] * 32)) == FP


def test_every_trigger_says_if_it_may_veto() -> None:
    assert [t for t in TRIGGERS.values() if t.before] == [TRIGGERS["before-task"], TRIGGERS["before-enroll"]]


def test_the_signature_is_an_hmac_of_the_timestamp_then_the_body() -> None:
    expected = hmac.new(b"k", b"1700000000" + b'{"a":1}', hashlib.sha256).hexdigest()
    assert signature("k", "1700000000", b'{"a":1}') == expected


@pytest.mark.parametrize(("answer", "said"), [
    (b'{"result": "failure", "message": "no"}', (True, "no")),
    (b'checking...\n{"result": "failure", "message": "no"}\n', (True, "no")),
    (b'{"result": "success"}', (False, "")),
    (b'{"result": "failure", "message": {"why": 1}}', (True, '{"why": 1}')),
    (b"plain text", None),
    (b"[1, 2]", None),
    (b"", None),
])
def test_a_verdict_is_read_from_the_answer(answer: bytes, said: tuple[bool, str] | None) -> None:
    assert verdict(answer) == said


def test_templates_take_payload_values_and_nothing_else() -> None:
    payload = {"task": {"task_id": 7, "command": "os_version", "args": {"a": 1}}, "who": "x"}
    assert render("task {task.task_id} ({task.command}) {task.args} by {who}", payload) == \
        'task 7 (os_version) {"a": 1} by x'
    assert render("{missing} {task.nope} {who.deeper} {task.__class__}", payload) == \
        "{missing} {task.nope} {who.deeper} {task.__class__}"
