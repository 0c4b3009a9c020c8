"""Frames through the codec: round trips in both encodings, error codes, fuzzing.

Field values come from hypothesis strategies derived from the Structs themselves
(``msgspec.inspect``), so a frame or field added later is covered without editing this file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.protocol import (
    JSON,
    MSGPACK,
    Codec,
    ErrorCode,
    ProtocolError,
    decode_from_daemon,
    decode_to_daemon,
)
from tether.protocol.codec import MAX_ERROR_MESSAGE, error_frame, from_msgpack, pack, to_msgpack, unpack
from tether.protocol.frames import FROM_DAEMON, TO_DAEMON, Ack, Batch, Error, Frame, Result, Task

ALL_FRAMES = tuple(dict.fromkeys((*TO_DAEMON, *FROM_DAEMON)))
ONE_WAY = tuple(cls for cls in ALL_FRAMES if (cls in TO_DAEMON) != (cls in FROM_DAEMON))
"""Every frame but ``batch``, the one that goes both ways."""
CODECS = {"msgpack": MSGPACK, "json": JSON}

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INT64 | FLOATS | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
"""Values both encodings carry unchanged (no NaN: it is not JSON)."""


def strategy(t: mi.Type, codec: Codec) -> st.SearchStrategy[Any]:
    """Values of a msgspec type, Raw fields pre-encoded in ``codec``."""
    match t:
        case mi.IntType(ge=None, le=None):
            return INT64
        case mi.IntType(ge=ge, le=le):  # a bounded one (a state report's sizes)
            return st.integers(min_value=ge, max_value=le)
        case mi.FloatType(ge=None, le=None):
            return FLOATS
        case mi.FloatType(ge=ge, le=le):  # a bounded one (a progress report's percent)
            return st.floats(min_value=ge, max_value=le)
        case mi.StrType(min_length=None, max_length=None):
            return st.text()
        case mi.StrType(min_length=least, max_length=most):  # a bounded one (an alert's fields)
            return st.text(min_size=least or 0, max_size=min(most or 16, 16))
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.LiteralType(values=values):
            return st.sampled_from(values)
        case mi.UnionType(types=types):
            return st.one_of([strategy(x, codec) for x in types])
        case mi.ListType(item_type=item):
            return st.lists(strategy(item, codec), max_size=4)
        case mi.DictType(key_type=mi.StrType(), value_type=value):
            return st.dictionaries(st.text(), strategy(value, codec), max_size=4)
        case mi.AnyType():
            return JSON_VALUES
        case mi.RawType():
            return JSON_VALUES.map(codec.raw)
        case mi.StructType(cls=nested) if not issubclass(nested, Frame):
            return structs(nested, codec)
    raise NotImplementedError(f"no strategy for {t!r}: extend tests/protocol/test_codec.py")


def structs(cls: type[msgspec.Struct], codec: Codec) -> st.SearchStrategy[Any]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in info.fields:
        value = strategy(f.type, codec)
        # Optional fields: sometimes left at their default, so omission is exercised too.
        fields[f.name] = value if f.required else st.one_of(st.just(msgspec.NODEFAULT), value)

    def build(kw: dict[str, Any]) -> Any:
        try:
            return cls(**{k: v for k, v in kw.items() if v is not msgspec.NODEFAULT})
        except ValueError:  # a cross-field rule (__post_init__), e.g. runs beside delivery_ids
            return None

    return st.fixed_dictionaries(fields).map(build).filter(lambda frame: frame is not None)


def frames(cls: type[Frame], codec: Codec) -> st.SearchStrategy[Frame]:
    return structs(cls, codec)


def wire(codec: Codec, frame: Frame) -> bytes | str:
    """What a WebSocket library hands over: bytes for binary messages, str for text."""
    data = codec.encode(frame)
    return data if codec.binary else data.decode()


def encode_obj(codec: Codec, obj: Any) -> bytes | str:
    return msgspec.msgpack.encode(obj) if codec.binary else json.dumps(obj)


def decoder(cls: type[Frame]) -> Any:
    return decode_to_daemon if cls in TO_DAEMON else decode_from_daemon


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("codec_name", CODECS)
@pytest.mark.parametrize("cls", ALL_FRAMES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_frame_round_trips(cls: type[Frame], codec_name: str, data: st.DataObject) -> None:
    codec = CODECS[codec_name]
    frame = data.draw(frames(cls, codec))
    assert decoder(cls)(wire(codec, frame)) == frame


@pytest.mark.parametrize("codec_name", CODECS)
@pytest.mark.parametrize("cls", ONE_WAY, ids=lambda c: c.__name__)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_a_frame_sent_the_wrong_way_is_an_unknown_frame(cls: type[Frame], codec_name: str,
                                                         data: st.DataObject) -> None:
    codec = CODECS[codec_name]
    frame = data.draw(frames(cls, codec))
    wrong_way = decode_from_daemon if cls in TO_DAEMON else decode_to_daemon
    with pytest.raises(ProtocolError) as caught:
        wrong_way(wire(codec, frame))
    assert caught.value.code is ErrorCode.UNKNOWN_FRAME


def test_tags_are_unique_and_directions_disjoint() -> None:
    tags = [cls.__struct_config__.tag for cls in ALL_FRAMES]
    assert len(tags) == len(set(tags))
    assert set(TO_DAEMON) & set(FROM_DAEMON) == {Batch}


def test_defaults_are_omitted_on_the_wire() -> None:
    assert json.loads(JSON.encode(Task(delivery_id=1, task_id=2, command="x"))) == {
        "t": "task", "delivery_id": 1, "task_id": 2, "command": "x"}


def test_unknown_fields_are_ignored() -> None:
    """Schema evolution: a newer peer's extra fields do not break an older one."""
    for codec in CODECS.values():
        data = encode_obj(codec, {"t": "ack", "delivery_ids": [1], "from_the_future": {"x": 1}})
        assert decode_to_daemon(data) == Ack(delivery_ids=[1])


# -- decoding errors -----------------------------------------------------------------------


@pytest.mark.parametrize("codec_name", CODECS)
@pytest.mark.parametrize(
    ("obj", "code"),
    [
        ({"t": "no-such-frame"}, ErrorCode.UNKNOWN_FRAME),
        ({"delivery_ids": [1]}, ErrorCode.UNKNOWN_FRAME),
        ({"t": 7, "delivery_ids": [1]}, ErrorCode.UNKNOWN_FRAME),
        ({"t": "ack"}, ErrorCode.INVALID_FRAME),
        ({"t": "ack", "delivery_ids": "1,2"}, ErrorCode.INVALID_FRAME),
        ({"t": "ack", "delivery_ids": ["one"]}, ErrorCode.INVALID_FRAME),
        ({"t": "hello", "role": "root", "version": 1, "token": ""}, ErrorCode.INVALID_FRAME),
        ({"t": "req", "id": 1, "method": "x", "params": [1]}, ErrorCode.INVALID_FRAME),
        ([{"t": "ack", "delivery_ids": [1]}], ErrorCode.INVALID_FRAME),
        ("ack", ErrorCode.INVALID_FRAME),
    ],
)
def test_decoding_errors_map_to_registry_codes(codec_name: str, obj: Any, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_to_daemon(encode_obj(CODECS[codec_name], obj))
    assert caught.value.code is code
    assert "Traceback" not in caught.value.message


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x81\xa1t", b"\x81\xa1t\xa3ac", "", "{", '{"t": ', '{"t" "ack"}', "nope", "\ud800"],
)
def test_malformed_frames_are_1100(data: bytes | str) -> None:
    for decode in (decode_to_daemon, decode_from_daemon):
        with pytest.raises(ProtocolError) as caught:
            decode(data)
        assert caught.value.code is ErrorCode.MALFORMED_FRAME
        assert ("MessagePack" if isinstance(data, bytes) else "JSON") in caught.value.message


@pytest.mark.parametrize("codec_name", CODECS)
@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_value_nested_past_the_decoders_recursion_limit_is_malformed(codec_name: str, depth: int) -> None:
    """Was a RecursionError out of the decoder: tetherd ended the session (4500, a traceback
    logged) instead of answering 1100."""
    codec = CODECS[codec_name]
    for decode, frame in ((decode_to_daemon, {"t": "req", "id": 1, "method": "m", "params": {"a": None}}),
                          (decode_from_daemon, {"t": "res", "id": 1, "result": {"a": None}})):
        data: bytes | str
        if codec.binary:
            before, _, after = msgspec.msgpack.encode(frame).partition(b"\xa1a\xc0")  # "a": nil
            data = before + b"\xa1a" + b"\x91" * depth + b"\x90" + after
        else:
            start, _, end = json.dumps(frame).partition('"a": null')
            data = start + '"a": ' + "[" * depth + "]" * depth + end
        with pytest.raises(ProtocolError) as caught:
            decode(data)
        assert caught.value.code is ErrorCode.MALFORMED_FRAME
        assert caught.value.message == f"malformed {'MessagePack' if codec.binary else 'JSON'} frame: nested too deeply"


def test_json_bytes_are_taken_for_messagepack() -> None:
    """The encoding follows the WebSocket message type: bytes are binary, so MessagePack."""
    with pytest.raises(ProtocolError) as caught:
        decode_to_daemon(JSON.encode(Ack(delivery_ids=[1])))
    assert caught.value.code is ErrorCode.INVALID_FRAME


KNOWN_TAGS = [cls.__struct_config__.tag for cls in ALL_FRAMES]
FUZZ_OBJECTS = st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6) | st.builds(
    lambda tag, rest: {**rest, "t": tag},
    st.sampled_from(KNOWN_TAGS),
    st.dictionaries(st.sampled_from(["id", "delivery_ids", "delivery_id", "role", "version", "token",
                                     "ok", "output", "args", "params", "code", "name"]), JSON_VALUES),
)


_FUZZED: list[int] = []


def test_fuzzed_input_raises_only_protocol_errors(fault_log: Callable[..., None]) -> None:
    _FUZZED.clear()
    _fuzz_decoders()
    assert len(_FUZZED) >= 100
    fault_log("Hostile input", "random bytes, text, MessagePack and JSON of random objects given to both frame "
              "decoders (hypothesis)", len(_FUZZED) * 2, "a frame or a registered 1100-1102 error, never "
              "another exception")


@settings(max_examples=300, deadline=None)
@given(data=st.binary() | st.text() | FUZZ_OBJECTS.map(msgspec.msgpack.encode) | FUZZ_OBJECTS.map(json.dumps))
def _fuzz_decoders(data: bytes | str) -> None:
    _FUZZED.append(1)
    for decode in (decode_to_daemon, decode_from_daemon):
        try:
            frame = decode(data)
        except ProtocolError as exc:
            assert exc.code in {ErrorCode.MALFORMED_FRAME, ErrorCode.UNKNOWN_FRAME, ErrorCode.INVALID_FRAME}
        else:
            assert isinstance(frame, Frame)


# -- payloads and helpers ------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(value=JSON_VALUES)
def test_payloads_normalise_to_msgpack_and_back(value: Any) -> None:
    for codec in CODECS.values():
        raw = codec.raw(value)
        assert codec.decode_value(raw) == value
        blob = to_msgpack(raw, codec)
        assert unpack(blob) == value
        assert codec.decode_value(from_msgpack(blob, codec)) == value
    assert unpack(pack(value)) == value


def test_omitted_raw_fields_of_a_json_frame_decode_as_their_defaults() -> None:
    """A JSON peer may omit ``output``/``args``; the default is MessagePack, not JSON text."""
    result = decode_to_daemon(JSON.encode(Result(delivery_id=1, ok=False, error="boom")).decode())
    assert isinstance(result, Result)
    assert JSON.decode_value(result.output) is None
    assert unpack(to_msgpack(result.output, JSON)) is None
    task = decode_from_daemon(JSON.encode(Task(delivery_id=1, task_id=1, command="x")).decode())
    assert isinstance(task, Task)
    assert JSON.decode_value(task.args) == {}


def test_unpack_none_is_none() -> None:
    assert unpack(None) is None


def test_an_error_message_quoting_huge_input_is_cut() -> None:
    frame = error_frame(ProtocolError(ErrorCode.UNKNOWN_METHOD, "unknown method " + "x" * 1_000_000))
    assert len(frame.message) == MAX_ERROR_MESSAGE and frame.message.endswith("…")
    assert frame.message.startswith("unknown method xxx")
    assert error_frame(ProtocolError(ErrorCode.UNKNOWN_METHOD, "short")).message == "short"


def test_error_frames_carry_code_name_ref_and_retry_after() -> None:
    exc = ProtocolError(ErrorCode.TOO_MANY_SESSIONS, "busy, come back later", ref=9)
    assert error_frame(exc, retry_after=2.5) == Error(
        code=4029, name="too_many_sessions", message="busy, come back later", ref=9, retry_after=2.5)
    for codec in CODECS.values():
        sent = codec.encode(error_frame(exc))
        assert decode_from_daemon(sent if codec.binary else sent.decode()) == error_frame(exc)


def test_codec_repr() -> None:
    assert repr(MSGPACK) == "Codec(binary=True)"
    assert repr(JSON) == "Codec(binary=False)"


# -- runs (polling) ------------------------------------------------------------------------


def test_run_refs_pair_ids_with_their_runs() -> None:
    from tether.protocol import run_refs, split_refs

    assert run_refs([4, 5], []) == [(4, 1), (5, 1)]
    assert run_refs([4, 5], [2, 1]) == [(4, 2), (5, 1)]
    assert split_refs([(4, 1), (5, 1)]) == ([4, 5], [])  # all run 1: runs left out, as old peers send
    assert split_refs([(4, 3), (5, 1)]) == ([4, 5], [3, 1])


@pytest.mark.parametrize("codec_name", CODECS)
def test_runs_that_do_not_match_the_ids_are_an_invalid_frame(codec_name: str) -> None:
    codec = CODECS[codec_name]
    data = encode_obj(codec, {"t": "ack", "delivery_ids": [1, 2], "runs": [2]})
    with pytest.raises(ProtocolError) as caught:
        decode_to_daemon(data)
    assert caught.value.code is ErrorCode.INVALID_FRAME
    assert "must be empty or name the run of every delivery id" in caught.value.message
    assert decode_to_daemon(encode_obj(codec, {"t": "ack", "delivery_ids": [1, 2], "runs": [2, 3]})) == \
        Ack(delivery_ids=[1, 2], runs=[2, 3])


# -- batches -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec_name", CODECS)
def test_a_batch_carries_frames_in_order_and_flags_the_bad_ones_in_place(codec_name: str) -> None:
    from tether.protocol.codec import encode_batch, unbatch
    from tether.protocol.frames import Batch, Hello, Progress

    codec = CODECS[codec_name]
    frames = [Ack(delivery_ids=[1, 2]), Progress(delivery_id=1), Result(delivery_id=1, ok=True, run=2)]
    blobs = [codec.encode(f) for f in frames]
    garbage = encode_obj(codec, {"t": "nope"})
    garbage = garbage if isinstance(garbage, bytes) else garbage.encode()
    nested = codec.encode(Batch(frames=[]))
    hello = codec.encode(Hello(role="agent", version=1))
    message = encode_batch(codec, [blobs[0], garbage, blobs[1], nested, hello, blobs[2]])
    batch = decode_to_daemon(message if codec.binary else message.decode())
    assert isinstance(batch, Batch) and len(batch.frames) == 6
    out = unbatch(batch, codec.binary, to_daemon=True)
    assert out[0] == frames[0] and out[2] == frames[1] and out[5] == frames[2]
    assert isinstance(out[1], ProtocolError) and out[1].code is ErrorCode.UNKNOWN_FRAME
    assert [e.code for e in (out[3], out[4]) if isinstance(e, ProtocolError)] == [ErrorCode.UNEXPECTED_FRAME] * 2
    tasks = [Task(delivery_id=i, task_id=i, command="echo", args=codec.raw({"i": i})) for i in range(3)]
    pushed_message = encode_batch(codec, [codec.encode(t) for t in tasks])
    pushed = decode_from_daemon(pushed_message if codec.binary else pushed_message.decode())
    assert isinstance(pushed, Batch)
    assert unbatch(pushed, codec.binary, to_daemon=False) == tasks
