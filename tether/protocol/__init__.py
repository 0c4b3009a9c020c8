"""The tether wire protocol: frames, codec, error registry and the lifecycle tables.

Sans-I/O: nothing here touches a socket, a clock or an event loop, and nothing here
imports the daemon or the agent.
"""

from .codec import JSON, MSGPACK, Codec, decode_from_daemon, decode_to_daemon, pack, unpack
from .errors import ErrorCode, ProtocolError
from .frames import (
    PROTOCOL_VERSION,
    Ack,
    Cancel,
    Committed,
    Enroll,
    Enrolled,
    Error,
    Event,
    Frame,
    Hello,
    Progress,
    Request,
    Response,
    Result,
    Schedule,
    Task,
    Welcome,
    run_refs,
    split_refs,
)
from .lifecycle import DeliveryState, IllegalTransition

__all__ = [
    "JSON", "MSGPACK", "PROTOCOL_VERSION", "Ack", "Cancel", "Codec", "Committed",
    "DeliveryState", "Enroll", "Enrolled", "Error", "ErrorCode", "Event", "Frame", "Hello",
    "IllegalTransition", "Progress", "ProtocolError", "Request", "Response", "Result", "Schedule", "Task",
    "Welcome", "decode_from_daemon", "decode_to_daemon", "pack", "run_refs", "split_refs", "unpack",
]
