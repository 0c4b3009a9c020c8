"""The error registry: stable codes, two families, names peers can match on."""

from __future__ import annotations

import pytest

from tether.protocol import ErrorCode, ProtocolError

STABLE = {
    "MALFORMED_FRAME": 1100, "UNKNOWN_FRAME": 1101, "INVALID_FRAME": 1102, "UNEXPECTED_FRAME": 1103,
    "UNKNOWN_METHOD": 1200, "INVALID_PARAMS": 1201, "INVALID_ACTION": 1202,
    "UNKNOWN_AGENT": 1300, "UNKNOWN_TAG": 1301, "UNKNOWN_TASK": 1302, "UNKNOWN_COMMAND": 1303,
    "ILLEGAL_TRANSITION": 1304, "UNKNOWN_DELIVERY": 1305, "FORBIDDEN": 1403, "RATE_LIMITED": 1429,
    "INTERNAL": 1500, "STORAGE_UNAVAILABLE": 1503,
    "BAD_HELLO": 4001, "UNSUPPORTED_VERSION": 4002, "HANDSHAKE_TIMEOUT": 4003, "UNAUTHORIZED": 4010,
    "ENROLL_KEY_UNKNOWN": 4011, "ENROLL_KEY_EXPIRED": 4012, "ENROLL_KEY_EXHAUSTED": 4013,
    "REPLACED": 4020, "TOO_MANY_SESSIONS": 4029, "SERVER_ERROR": 4500,
}


def test_codes_never_change_meaning() -> None:
    """New codes may be added; existing ones keep their number (NATS errors.json rule)."""
    current = {code.name: int(code) for code in ErrorCode}
    assert {name: current.get(name) for name in STABLE} == STABLE


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_families(code: ErrorCode) -> None:
    assert 1000 <= code < 2000 or 4000 <= code < 5000, "1xxx request errors or 4xxx session errors"
    assert code.is_session_error is (code >= 4000)
    assert code.slug == code.name.lower()


def test_protocol_error() -> None:
    exc = ProtocolError(ErrorCode.UNKNOWN_TASK, "no task 9", ref=4)
    assert (exc.code, exc.message, exc.ref, str(exc)) == (ErrorCode.UNKNOWN_TASK, "no task 9", 4, "no task 9")
    assert repr(exc) == "ProtocolError(UNKNOWN_TASK, 'no task 9')"
    assert ProtocolError(ErrorCode.INTERNAL, "x").ref is None
