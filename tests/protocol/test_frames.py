"""The bounds on what a frame may hold (issue 15, finding 2), and the first frame's decoder."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from tether.protocol import JSON, MSGPACK, ErrorCode, ProtocolError
from tether.protocol.codec import decode_first, decode_from_daemon, decode_to_daemon
from tether.protocol.frames import (
    MAX_BATCH_FRAMES,
    MAX_HOLDING,
    MAX_IDS,
    MAX_NAMES,
    Ack,
    Committed,
    Enroll,
    Hello,
    Progress,
    Request,
    chunked,
    message_weight,
)

CODECS = {"msgpack": MSGPACK, "json": JSON}

BOUNDED: list[tuple[dict[str, Any], str, int, bool]] = [
    ({"t": "batch"}, "frames", MAX_BATCH_FRAMES, True),
    ({"t": "ack"}, "delivery_ids", MAX_IDS, True),
    ({"t": "ack", "delivery_ids": []}, "runs", MAX_IDS, True),
    ({"t": "committed"}, "delivery_ids", MAX_IDS, False),
    ({"t": "hello", "role": "agent", "version": 1}, "holding", MAX_HOLDING, True),
    ({"t": "hello", "role": "agent", "version": 1}, "commands", MAX_NAMES, True),
    ({"t": "hello", "role": "agent", "version": 1}, "features", MAX_NAMES, True),
    ({"t": "enroll", "version": 1, "key": "k"}, "tags", MAX_NAMES, True),
    ({"t": "result", "delivery_id": 1, "ok": True}, "sequels", MAX_NAMES, True),
]


def _item(field: str) -> Any:
    if field in ("commands", "features", "tags"):
        return "x"
    if field == "frames":
        return msgspec.Raw(MSGPACK.encode(Ack(delivery_ids=[])))
    if field == "sequels":
        return {"schedule": {"command": "x", "next_run_in_seconds": 60}, "output": None}
    return 1


@pytest.mark.parametrize("codec_name", CODECS)
@pytest.mark.parametrize(("frame", "field", "bound", "to_daemon"), BOUNDED)
def test_a_list_past_its_bound_is_an_invalid_frame(frame: dict[str, Any], field: str, bound: int, to_daemon: bool,
                                                   codec_name: str) -> None:
    codec = CODECS[codec_name]
    decode = decode_to_daemon if to_daemon else decode_from_daemon
    item = _item(field)
    if field == "frames" and not codec.binary:
        item = msgspec.Raw(JSON.encode(Ack(delivery_ids=[])))
    at_bound = codec.encode_value({**frame, field: [item] * bound})
    if field == "runs":
        at_bound = codec.encode_value({**frame, "delivery_ids": [1] * bound, field: [1] * bound})
    decode(at_bound if codec.binary else at_bound.decode())  # the bound itself is allowed
    over = codec.encode_value({**frame, field: [item] * (bound + 1)})
    with pytest.raises(ProtocolError) as refused:
        decode(over if codec.binary else over.decode())
    assert refused.value.code == ErrorCode.INVALID_FRAME
    assert f"length <= {bound}" in refused.value.message


def test_a_million_ids_are_refused_from_the_messagepack_header() -> None:
    count = 1_000_000
    message = b"\x82\xa1t\xa3ack\xacdelivery_ids\xdd" + count.to_bytes(4, "big") + b"\x01" * count
    started = time.perf_counter()
    with pytest.raises(ProtocolError):
        decode_to_daemon(message)
    assert time.perf_counter() - started < 0.005  # building a million ints takes ~10 ms


def test_message_weight_counts_frames_and_the_ids_they_name() -> None:
    frames: list[Any] = [Ack(delivery_ids=[1, 2, 3]), Committed(delivery_ids=[4]), Progress(delivery_id=5),
                         Hello(role="agent", version=1, holding=[6, 7]),
                         ProtocolError(ErrorCode.MALFORMED_FRAME, "bad")]
    assert message_weight(frames) == 5 + 3 + 1 + 2
    assert message_weight([]) == 0


def test_chunked_keeps_order_and_bounds_each_part() -> None:
    assert chunked(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunked([], 3) == []


@pytest.mark.parametrize("codec_name", CODECS)
def test_the_first_frame_is_a_hello_or_an_enroll(codec_name: str) -> None:
    codec = CODECS[codec_name]

    def wire(frame: Any) -> bytes | str:
        data = codec.encode(frame)
        return data if codec.binary else data.decode()

    assert isinstance(decode_first(wire(Hello(role="console", version=1, token="t"))), Hello)
    assert isinstance(decode_first(wire(Enroll(version=1, key="k"))), Enroll)
    with pytest.raises(ProtocolError) as refused:
        decode_first(wire(Request(id=1, method="agents.list", params={"a": [[]] * 1000})))
    assert refused.value.code == ErrorCode.UNKNOWN_FRAME
    assert "'req'" in refused.value.message
