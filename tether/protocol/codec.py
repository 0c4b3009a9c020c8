"""Encoding and decoding of frames, one encoder and decoder per direction, built once.

Binary WebSocket messages are MessagePack, text messages are JSON; both decode to the same
Structs. Decoding failures become :class:`ProtocolError` with a registry code
(1100 malformed, 1101 unknown tag, 1102 bad field), never a bare exception.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import ErrorCode, ProtocolError
from .frames import FROM_DAEMON, TO_DAEMON, Batch, Enroll, Error, Frame, FromDaemon, Hello, ToDaemon

_mp_enc = msgspec.msgpack.Encoder()
_js_enc = msgspec.json.Encoder()
_mp_any = msgspec.msgpack.Decoder()
_js_any = msgspec.json.Decoder()

_DECODERS: dict[tuple[str, bool], Any] = {
    ("first", True): msgspec.msgpack.Decoder(Hello | Enroll),
    ("first", False): msgspec.json.Decoder(Hello | Enroll),
    ("to_daemon", True): msgspec.msgpack.Decoder(ToDaemon),
    ("to_daemon", False): msgspec.json.Decoder(ToDaemon),
    ("from_daemon", True): msgspec.msgpack.Decoder(FromDaemon),
    ("from_daemon", False): msgspec.json.Decoder(FromDaemon),
}


def _decode(direction: str, data: bytes | str, binary: bool | None = None) -> Frame:
    if binary is None:
        binary = isinstance(data, bytes | bytearray | memoryview)
    try:
        frame: Frame = _DECODERS[direction, binary].decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.endswith("at `$.t`") or "missing required field `t`" in text:
            raise ProtocolError(ErrorCode.UNKNOWN_FRAME, f"unknown frame type: {text}") from None
        raise ProtocolError(ErrorCode.INVALID_FRAME, f"invalid frame: {text}") from None
    except (msgspec.DecodeError, UnicodeEncodeError) as exc:  # lone surrogates in a str
        kind = "MessagePack" if binary else "JSON"
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"malformed {kind} frame: {exc}") from None
    except RecursionError:  # msgspec's decoders recurse per level of nesting
        kind = "MessagePack" if binary else "JSON"
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"malformed {kind} frame: nested too deeply") from None
    return frame


def decode_to_daemon(data: bytes | str) -> Frame:
    """Decode a frame a peer sent to the daemon."""
    return _decode("to_daemon", data)


def decode_first(data: bytes | str) -> Hello | Enroll:
    """Decode the first frame of a connection, which only a ``hello`` or an ``enroll`` may
    be: any other is refused from its tag (1101) before its fields are decoded, so a peer
    with no credential never has a request's params or a result's output decoded."""
    frame = _decode("first", data)
    assert isinstance(frame, Hello | Enroll)
    return frame


def decode_from_daemon(data: bytes | str) -> Frame:
    """Decode a frame the daemon sent."""
    return _decode("from_daemon", data)


def unbatch(batch: Batch, binary: bool, *, to_daemon: bool) -> list[Frame | ProtocolError]:
    """The frames of a ``batch``, in order; one that cannot be decoded, or that a batch may
    not hold (a batch, hello or enroll), is its :class:`ProtocolError` in its place, so the
    others are still applied."""
    direction = "to_daemon" if to_daemon else "from_daemon"
    out: list[Frame | ProtocolError] = []
    for raw in batch.frames:
        try:
            frame = _decode(direction, bytes(raw), binary)
        except ProtocolError as exc:
            out.append(exc)
            continue
        if isinstance(frame, Batch | Hello | Enroll):
            out.append(ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"a batch cannot hold a {frame.__struct_config__.tag}"))
        else:
            out.append(frame)
    return out


def encode_batch(codec: Codec, blobs: list[bytes]) -> bytes:
    """Frames already encoded in ``codec``, as one ``batch`` message (each copied once)."""
    return codec.encode(Batch(frames=[msgspec.Raw(b) for b in blobs]))


_RAW_DEFAULTS = frozenset(
    bytes(f.default)
    for cls in (*TO_DAEMON, *FROM_DAEMON)
    for f in msgspec.structs.fields(cls)
    if isinstance(f.default, msgspec.Raw)
)
"""The defaults of ``Raw`` fields (``Task.args``, ``Result.output``) are MessagePack, also
in a JSON frame that omits the field; no JSON text is one of these bytes."""


def _is_raw_default(raw: msgspec.Raw | bytes) -> bool:
    return bytes(raw) in _RAW_DEFAULTS


class Codec:
    """The encoding one session speaks: MessagePack (``binary=True``) or JSON."""

    __slots__ = ("binary",)

    def __init__(self, binary: bool) -> None:
        self.binary = binary

    def __repr__(self) -> str:
        return f"Codec(binary={self.binary})"

    def encode(self, frame: Frame) -> bytes:
        """Encode a frame; send it as a binary message if ``binary``, else as text."""
        return _mp_enc.encode(frame) if self.binary else _js_enc.encode(frame)

    def raw(self, value: Any) -> msgspec.Raw:
        """Pre-encode a payload value for a ``Raw`` field of this codec's frames."""
        return msgspec.Raw(self.encode_value(value))

    def encode_value(self, value: Any) -> bytes:
        return _mp_enc.encode(value) if self.binary else _js_enc.encode(value)

    def decode_value(self, raw: msgspec.Raw | bytes) -> Any:
        """Decode a ``Raw`` field that arrived in this codec's encoding."""
        return _mp_any.decode(raw) if self.binary or _is_raw_default(raw) else _js_any.decode(raw)


MAX_ERROR_MESSAGE = 1000
"""Characters of an error message sent to a peer: one that quotes hostile input (a 1 MB
method name) is cut, so the answer fits any client's frame limit."""


def error_frame(exc: ProtocolError, retry_after: float | None = None) -> Error:
    message = exc.message
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 1] + "…"
    return Error(
        code=int(exc.code), name=exc.code.slug, message=message, ref=exc.ref,
        retry_after=retry_after,
    )


MSGPACK = Codec(binary=True)
JSON = Codec(binary=False)


def to_msgpack(raw: msgspec.Raw | bytes, codec: Codec) -> bytes:
    """Normalise a raw payload to MessagePack, the form the daemon stores."""
    if codec.binary or _is_raw_default(raw):
        return bytes(raw)
    return _mp_enc.encode(_js_any.decode(raw))


def from_msgpack(blob: bytes, codec: Codec) -> msgspec.Raw:
    """A stored MessagePack payload as a ``Raw`` field for a frame in ``codec``."""
    if codec.binary:
        return msgspec.Raw(blob)
    return msgspec.Raw(_js_enc.encode(_mp_any.decode(blob)))


def unpack(blob: bytes | None) -> Any:
    """Decode a stored MessagePack payload (``None`` stays ``None``)."""
    return None if blob is None else _mp_any.decode(blob)


def pack(value: Any) -> bytes:
    return _mp_enc.encode(value)
