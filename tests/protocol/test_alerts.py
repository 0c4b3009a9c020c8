"""Alerts on the wire: the required fields and the bounds, refused with the field named; the
checksum (which fields make two alerts one)."""

from __future__ import annotations

import msgspec
import pytest

from tether.protocol.alerts import (
    DEFAULT_CHECKSUM,
    MAX_DETAILS_BYTES,
    MAX_NAME,
    AlertBody,
    alert_problem,
    check_checksum_fields,
    checksum,
    parse_alert,
)
from tether.protocol.codec import MSGPACK, decode_to_daemon
from tether.protocol.errors import ProtocolError
from tether.protocol.frames import Alert, progress_parts, progress_text


def test_an_alert_needs_a_kind_and_a_name() -> None:
    with pytest.raises(ValueError, match="invalid alert: Object missing required field `name`"):
        parse_alert({"kind": "scan"})
    with pytest.raises(ValueError, match=r"length >= 1 - at `\$.kind`"):
        parse_alert({"kind": "", "name": "x"})
    with pytest.raises(ValueError, match="unknown field 'nme'"):
        parse_alert({"kind": "scan", "nme": "x"})
    with pytest.raises(ValueError, match="Expected `object`"):
        parse_alert(["scan"])
    assert parse_alert({"kind": "scan", "name": "x", "severity": "high"}).severity == "high"


def test_an_oversized_alert_is_refused_naming_what_is_too_big() -> None:
    with pytest.raises(ValueError, match=r"length <= 256 - at `\$.name`"):
        parse_alert({"kind": "scan", "name": "n" * (MAX_NAME + 1)})
    with pytest.raises(ValueError, match=f"details take .* bytes; at most {MAX_DETAILS_BYTES}"):
        parse_alert({"kind": "scan", "name": "x", "details": {"blob": "x" * MAX_DETAILS_BYTES}})
    assert alert_problem(AlertBody(kind="k", name="n", details={"n": float("nan")})) is not None
    assert alert_problem(AlertBody(kind="k", name="n", details={"ok": 1})) is None


def test_the_daemon_refuses_an_alert_frame_missing_a_field_before_it_is_built() -> None:
    frame = MSGPACK.encode(Alert(id=1, alert=AlertBody(kind="k", name="n")))
    assert isinstance(decode_to_daemon(frame), Alert)
    bad = msgspec.msgpack.encode({"t": "alert", "id": 1, "alert": {"kind": "k"}})
    with pytest.raises(ProtocolError, match="missing required field `name`"):
        decode_to_daemon(bad)


def test_the_checksum_is_over_the_fields_named() -> None:
    a = AlertBody(kind="scan", name="eicar", path="/a", message="one")
    b = AlertBody(kind="scan", name="eicar", path="/a", message="two")
    assert checksum("x", a) == checksum("x", b)  # message is not a default field
    assert checksum("x", a) != checksum("y", a)
    assert checksum("x", a, ("kind", "name")) == checksum("y", AlertBody(kind="scan", name="eicar"), ("kind", "name"))
    # values cannot slide from one field into the next
    assert checksum("x", AlertBody(kind="ab", name="c")) != checksum("x", AlertBody(kind="a", name="bc"))


def test_checksum_fields_are_checked() -> None:
    assert check_checksum_fields([*DEFAULT_CHECKSUM, "kind"]) == DEFAULT_CHECKSUM
    with pytest.raises(ValueError, match="unknown alert field 'hsah'"):
        check_checksum_fields(["kind", "hsah"])
    with pytest.raises(ValueError, match="must include kind or name"):
        check_checksum_fields(["agent", "path"])


def test_progress_text_reads_back() -> None:
    assert progress_text(45.4, "4/9 files /x") == "45% 4/9 files /x"
    assert progress_parts("45% 4/9 files /x") == (45.0, "4/9 files /x")
    assert progress_text(100, "") == "100%" and progress_parts("100%") == (100.0, "")
    assert progress_parts("counting") == (None, "counting") and progress_text(None, " x ") == "x"
