"""The session core fed messages without sockets (as websockets' ``tests/test_protocol.py``
feeds its protocol bytes): the opening on both sides, what each answer means, the frames of an
open session, features, the window, batches and the close codes."""

from __future__ import annotations

import msgspec
import pytest

from tether.protocol import JSON, MSGPACK, ErrorCode, ProtocolError
from tether.protocol.codec import encode_batch
from tether.protocol.errors import (
    DaemonError,
    RemoteProtocolError,
    RequestRefused,
    SessionClosed,
    code_name,
    is_session_error,
)
from tether.protocol.frames import (
    FEATURES,
    MAX_BATCH_FRAMES,
    MAX_HOLDING,
    MAX_IDS,
    MAX_MESSAGE_WEIGHT,
    PROTOCOL_VERSION,
    Ack,
    Batch,
    Cancel,
    Committed,
    Enroll,
    Enrolled,
    Error,
    Hello,
    Progress,
    Request,
    Task,
    Welcome,
)
from tether.protocol.session import (
    AGENT_FATAL,
    DRAINED,
    AgentWindow,
    ClientSession,
    Inbox,
    State,
    agent_hello,
    batches,
    committed,
    console_hello,
    enroll_request,
    handshake_timeout,
    holding,
    open_session,
    peer_codec,
    refusal,
    unexpected,
    welcome,
)


def hello(held: list[tuple[int, int]] | None = None) -> Hello:
    return agent_hello(token="t0k", agent_id="a-1", hostname="h", platform="linux", machine_uuid="m",
                       agent_version="1.0", commands={"echo", "scan"}, held=held or [])


def error(code: ErrorCode, message: str = "no", **fields: object) -> bytes:
    return MSGPACK.encode(Error(code=int(code), name=code.slug, message=message, **fields))  # type: ignore[arg-type]


def agent_welcome(**fields: object) -> bytes:
    options: dict[str, object] = {"window": 32, "features": ["batch"], "agent_id": "a-1", **fields}
    return MSGPACK.encode(Welcome(version=PROTOCOL_VERSION, role="agent", session_id="s1", server_time=1.0,
                                  **options))  # type: ignore[arg-type]


def opened(first: Hello | None = None, **fields: object) -> ClientSession:
    session = ClientSession(first or hello())
    [frame] = session.receive(agent_welcome(**fields))
    assert isinstance(frame, Welcome) and session.state is State.OPEN
    return session


# -- what a client sends first -------------------------------------------------------------


def test_an_agents_hello_names_its_facts_features_and_the_runs_it_holds() -> None:
    frame = hello([(1, 1), (2, 3)])
    assert (frame.role, frame.version, frame.agent_id, frame.token) == ("agent", PROTOCOL_VERSION, "a-1", "t0k")
    assert frame.commands == ["echo", "scan"] and frame.features == [f for f in FEATURES if f != DRAINED]
    assert (frame.holding, frame.holding_runs) == ([1, 2], [1, 3])
    assert (hello([(1, 1), (2, 1)]).holding_runs) == []  # every run 1: no runs list


def test_only_an_agent_that_leaves_once_its_queue_is_done_asks_to_be_told_so() -> None:
    """``tether-agent once`` announces ``drained``; a persistent agent would only be sent
    frames it has no use for."""
    once = agent_hello(token="t", agent_id="a", hostname="h", platform="p", machine_uuid="u", agent_version="1",
                       commands=[], held=[], once=True)
    assert once.features == list(FEATURES) and DRAINED in once.features
    assert DRAINED not in hello([]).features


def test_a_hello_names_at_most_max_holding_runs_the_first_ones() -> None:
    frame = hello([(d, 1) for d in range(1, MAX_HOLDING + 11)])
    assert len(frame.holding) == MAX_HOLDING and frame.holding[-1] == MAX_HOLDING
    assert MSGPACK.encode(frame)  # a hello the daemon's decoder takes


def test_a_consoles_hello_and_an_enrollment() -> None:
    assert console_hello("adm") == Hello(role="console", version=PROTOCOL_VERSION, token="adm")
    new = enroll_request("KEY", machine_uuid="m", hostname="h", platform="p", tags=["lab"])
    assert (new.key, new.tags, new.agent_id, new.token) == ("KEY", ["lab"], None, "")
    again = enroll_request("KEY", machine_uuid="m", hostname="h", platform="p", proof=("a-1", "t0k"))
    assert (again.agent_id, again.token, again.version) == ("a-1", "t0k", PROTOCOL_VERSION)


def test_the_opening_message_is_the_first_frame_in_the_sessions_codec() -> None:
    assert MSGPACK.decode_value(ClientSession(hello()).opening())["t"] == "hello"
    session = ClientSession(console_hello("adm"), JSON)
    assert msgspec.json.decode(session.opening())["role"] == "console"
    assert repr(session) == "ClientSession(hello, opening)"


# -- what the first answer means -----------------------------------------------------------


def test_a_welcome_opens_the_session_with_the_features_both_speak() -> None:
    session = opened(features=["batch", "from-the-future"])
    assert session.welcome is not None and session.welcome.window == 32
    assert session.features == {"batch"}
    assert opened(features=[]).features == frozenset()  # an older daemon: no batches


def test_an_agent_stops_after_unauthorized_replaced_or_unsupported_version_only() -> None:
    assert set(AGENT_FATAL) == {ErrorCode.UNAUTHORIZED, ErrorCode.REPLACED, ErrorCode.UNSUPPORTED_VERSION}
    for code in (ErrorCode.UNSUPPORTED_VERSION, ErrorCode.REPLACED):
        with pytest.raises(SessionClosed) as refused:
            ClientSession(hello()).receive(error(code, "go away"))
        assert refused.value.hint == AGENT_FATAL[code] and code.slug in str(refused.value)


def test_an_error_answer_is_the_refusal_with_what_to_do_when_retrying_cannot_help() -> None:
    session = ClientSession(hello())
    with pytest.raises(SessionClosed) as refused:
        session.receive(error(ErrorCode.UNAUTHORIZED, "agent id or token not recognised"))
    assert (refused.value.code, refused.value.name, refused.value.message) == (
        4010, "unauthorized", "agent id or token not recognised")
    assert refused.value.hint == AGENT_FATAL[ErrorCode.UNAUTHORIZED]
    assert str(refused.value).startswith("unauthorized (4010): agent id or token not recognised; the daemon")
    assert session.state is State.CLOSED

    shed = ClientSession(hello())
    with pytest.raises(SessionClosed) as busy:
        shed.receive(error(ErrorCode.TOO_MANY_SESSIONS, retry_after=2.5))
    assert (busy.value.code, busy.value.retry_after, busy.value.hint) == (4029, 2.5, "")


def test_a_console_is_given_no_agent_advice() -> None:
    with pytest.raises(SessionClosed) as refused:
        ClientSession(console_hello(""), JSON).receive(
            JSON.encode(Error(code=4010, name="unauthorized", message="x")).decode())
    assert refused.value.hint == "" and str(refused.value) == "unauthorized (4010): x"


@pytest.mark.parametrize(("answer", "code", "message"), [
    (b"\xc1", ErrorCode.MALFORMED_FRAME, "the daemon's answer: malformed MessagePack frame"),
    (MSGPACK.encode_value({"t": "from-the-future"}), ErrorCode.UNKNOWN_FRAME, "the daemon's answer: unknown frame"),
    (MSGPACK.encode(Committed(delivery_ids=[])), ErrorCode.UNEXPECTED_FRAME, "expected welcome, got committed"),
    (MSGPACK.encode(Welcome(version=1, role="console", session_id="s", server_time=0)), ErrorCode.UNEXPECTED_FRAME,
     "expected welcome, got console welcome"),
])
def test_an_answer_that_is_no_answer_fails_the_opening(answer: bytes, code: ErrorCode, message: str) -> None:
    session = ClientSession(hello())
    with pytest.raises(SessionClosed) as failed:
        session.receive(answer)
    assert (failed.value.code, failed.value.name) == (code, code.slug)
    assert failed.value.message.startswith(message) and failed.value.code not in AGENT_FATAL
    assert session.state is State.CLOSED


def test_an_enrollment_ends_with_its_answer() -> None:
    session = ClientSession(enroll_request("KEY", machine_uuid="m", hostname="h", platform="p"))
    [answer] = session.receive(MSGPACK.encode(Enrolled(agent_id="a-9", token="s3cret")))
    assert isinstance(answer, Enrolled) and answer.agent_id == "a-9"
    assert session.state is State.CLOSED and session.welcome is None


def test_an_enrollment_refused_or_welcomed() -> None:
    refused = ClientSession(enroll_request("KEY", machine_uuid="m", hostname="h", platform="p"))
    with pytest.raises(SessionClosed) as expired:
        refused.receive(error(ErrorCode.ENROLL_KEY_EXPIRED, "expired"))
    assert (expired.value.code, expired.value.name, expired.value.hint) == (4012, "enroll_key_expired", "")
    confused = ClientSession(enroll_request("KEY", machine_uuid="m", hostname="h", platform="p"))
    with pytest.raises(SessionClosed, match="expected enrolled, got agent welcome"):
        confused.receive(agent_welcome())


def test_a_close_without_an_answer() -> None:
    end = ClientSession(enroll_request("K", machine_uuid="m", hostname="h", platform="p")).closed(1011)
    assert (end.code, end.name, end.message) == (1011, "closed",
                                                 "the daemon closed the connection without answering the enroll")
    lost = ClientSession(hello()).closed(None)
    assert (lost.code, lost.name, lost.message) == (1006, "connection_lost", "the connection was lost")
    refused = ClientSession(hello()).closed(4020, "replaced")
    assert (refused.code, refused.name, refused.message, refused.hint) == (4020, "replaced", "replaced",
                                                                           AGENT_FATAL[ErrorCode.REPLACED])


# -- the open session ----------------------------------------------------------------------


def test_frames_of_an_open_session_alone_or_batched_in_order() -> None:
    session = opened()
    task = Task(delivery_id=7, task_id=1, command="echo")
    assert session.receive(MSGPACK.encode(task)) == [task]
    blobs = [MSGPACK.encode(Committed(delivery_ids=[1])), MSGPACK.encode_value({"t": "nope"}),
             MSGPACK.encode(Batch(frames=[])), MSGPACK.encode(Cancel(delivery_id=7))]
    frames = session.receive(encode_batch(MSGPACK, blobs))
    assert isinstance(frames[0], Committed) and isinstance(frames[3], Cancel)
    assert [f.code for f in frames[1:3] if isinstance(f, ProtocolError)] == [ErrorCode.UNKNOWN_FRAME,
                                                                             ErrorCode.UNEXPECTED_FRAME]
    [malformed] = session.receive(b"\xc1")
    assert isinstance(malformed, ProtocolError) and malformed.code is ErrorCode.MALFORMED_FRAME


def test_a_message_that_does_not_decode_is_its_error_in_its_place() -> None:
    [bad] = opened().receive(MSGPACK.encode_value({"t": "from-the-future"}))
    assert isinstance(bad, ProtocolError) and bad.code is ErrorCode.UNKNOWN_FRAME


def test_a_consoles_session_reads_json() -> None:
    session = ClientSession(console_hello("adm"), JSON)
    session.receive(JSON.encode(Welcome(version=1, role="console", session_id="s", server_time=0)).decode())
    assert session.state is State.OPEN and session.features == frozenset()
    answer = JSON.encode(Error(code=1302, name="unknown_task", message="no task 9", ref=4)).decode()
    [refusal] = session.receive(answer)
    assert isinstance(refusal, Error) and refusal.ref == 4
    assert session.closed(1000).name == "closed"  # a request error explains no close


def test_a_session_error_explains_the_close_that_follows_it() -> None:
    session = opened()
    [said] = session.receive(error(ErrorCode.TOO_MANY_SESSIONS, "shed", retry_after=0.2))
    assert isinstance(said, Error)
    end = session.closed(1006)  # the close itself was lost: the error's code counts
    assert (end.code, end.name, end.message, end.retry_after) == (4029, "too_many_sessions", "shed", 0.2)
    assert session.state is State.CLOSED

    replaced = opened()
    replaced.receive(error(ErrorCode.REPLACED, "a newer session"))
    assert replaced.closed(None).code == 4020 and replaced.closed(4020).hint == AGENT_FATAL[ErrorCode.REPLACED]
    other = opened()
    other.receive(error(ErrorCode.SERVER_ERROR))
    assert other.closed(4010, "revoked").code == 4010  # a session code in the close wins


def test_a_plain_close_of_an_open_session() -> None:
    end = opened().closed(1012, "merged")
    assert (end.code, end.name, end.message) == (1012, "closed", "merged")
    assert opened().closed(1001).message == "the daemon closed the session"
    assert opened().closed(4500).name == "server_error"


# -- the window, batches ---------------------------------------------------------------------


def test_the_agent_refuses_pushes_past_the_window_until_a_burst_is_acknowledged() -> None:
    window = AgentWindow(2)
    assert [window.admit() for _ in range(4)] == [True, True, False, False]
    assert (window.unacked, window.refused) == (2, 2)
    window.acknowledged(1)
    assert window.admit() and not window.admit()
    window.acknowledged(10)  # a burst of tasks from an earlier session's count never goes negative
    assert window.unacked == 0


def test_batches_keep_order_and_bounds() -> None:
    blobs = [bytes([i]) * 10 for i in range(7)]
    assert batches(blobs, 30) == [blobs[0:3], blobs[3:6], blobs[6:7]]
    assert batches([b"x" * 50, b"y"], 30) == [[b"x" * 50], [b"y"]]  # a larger frame alone
    many = [b"z"] * (MAX_BATCH_FRAMES + 1)
    assert [len(b) for b in batches(many, 1 << 30)] == [MAX_BATCH_FRAMES, 1]
    assert batches([], 10) == []


# -- the daemon's side -------------------------------------------------------------------------


def test_the_first_frame_decides_the_session() -> None:
    agent = open_session(ClientSession(hello()).opening())
    assert (agent.kind, agent.credential, agent.codec) == ("agent", "agent_token", MSGPACK)
    console = open_session(JSON.encode(console_hello("adm")).decode())
    assert (console.kind, console.credential, console.codec) == ("console", "console_token", JSON)
    enroll = open_session(MSGPACK.encode(Enroll(version=PROTOCOL_VERSION, key="K")))
    assert (enroll.kind, enroll.credential) == ("enroll", "enroll_key")
    assert peer_codec(b"") is MSGPACK and peer_codec("") is JSON


@pytest.mark.parametrize(("first", "code", "message"), [
    (MSGPACK.encode(Task(delivery_id=1, task_id=1, command="x")), ErrorCode.BAD_HELLO,
     "first frame must be hello or enroll: unknown frame type"),
    (b"\xc1", ErrorCode.BAD_HELLO, "first frame must be hello or enroll: malformed MessagePack frame"),
    (MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION + 1)), ErrorCode.UNSUPPORTED_VERSION,
     f"protocol version {PROTOCOL_VERSION + 1} is not supported (this tetherd speaks {PROTOCOL_VERSION})"),
])
def test_a_first_frame_that_opens_nothing_is_a_session_error(first: bytes, code: ErrorCode, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        open_session(first)
    assert refused.value.code is code and refused.value.message.startswith(message)
    assert code.is_session_error


def test_a_handshake_timeout_says_how_long() -> None:
    late = handshake_timeout(2.5)
    assert (late.code, late.message) == (ErrorCode.HANDSHAKE_TIMEOUT, "no hello within 2.5 s of connecting")


def test_the_welcome_grants_the_features_both_speak_and_the_client_reads_it() -> None:
    announced = hello()
    announced.features.append("from-the-future")
    answer = welcome(announced, session_id="s9", server_time=5.0, agent_id="a-0", window=16)
    assert (answer.role, answer.agent_id, answer.window, answer.features) == ("agent", "a-0", 16, ["batch", "state"])
    session = ClientSession(announced)
    session.receive(MSGPACK.encode(answer))
    assert session.features == {"batch", "state"} and session.welcome == answer
    console = welcome(console_hello("adm"), session_id="c1", server_time=5.0)
    assert (console.role, console.features, console.agent_id) == ("console", [], None)


def test_what_each_role_may_not_send() -> None:
    forbidden = unexpected("agent", Request(id=3, method="task.list"))
    assert (forbidden.code, forbidden.ref) == (ErrorCode.FORBIDDEN, 3)
    assert unexpected("agent", console_hello("x")).message == "unexpected hello frame in an agent session"
    stray = unexpected("console", Ack(delivery_ids=[1]))
    assert (stray.code, stray.message) == (ErrorCode.UNEXPECTED_FRAME,
                                           "unexpected ack frame: a console session sends req frames")


def test_the_daemon_reads_the_runs_a_hello_holds() -> None:
    assert holding(hello([(1, 1), (2, 3)])) == {(1, 1), (2, 3)}
    assert holding(hello()) == set()


def test_committed_names_at_most_max_ids_runs_a_frame() -> None:
    refs = [(i, 1) for i in range(MAX_IDS)] + [(MAX_IDS, 2)]
    first, second = committed(refs)
    assert (len(first.delivery_ids), first.runs) == (MAX_IDS, [])  # every run 1: runs left out
    assert (second.delivery_ids, second.runs) == ([MAX_IDS], [2])
    assert committed([]) == []


def test_a_refusal_is_the_error_then_the_close_with_its_code() -> None:
    frame, code, reason = refusal(ProtocolError(ErrorCode.TOO_MANY_SESSIONS, "shed"), retry_after=10.0)
    assert (frame.code, frame.name, frame.message, frame.retry_after) == (4029, "too_many_sessions", "shed", 10.0)
    assert (code, reason) == (4029, "too_many_sessions")


def read(inbox: Inbox, data: bytes | str) -> tuple[int, list[object], int, Error | None]:
    upfront = inbox.receive(data)
    frames = inbox.frames()
    return upfront, frames, inbox.charge, inbox.error


def test_an_agents_message_is_one_frame_or_a_batch_charged_before_it_is_decoded() -> None:
    inbox = Inbox("agent", MSGPACK)
    ack = Ack(delivery_ids=[1, 2, 3])
    assert read(inbox, MSGPACK.encode(ack)) == (0, [ack], 4, None)  # a frame and its three ids
    progress = Progress(delivery_id=1)
    bad = MSGPACK.encode(Task(delivery_id=1, task_id=1, command="x"))  # not a frame an agent sends
    upfront, frames, charge, answer = read(inbox, encode_batch(MSGPACK, [MSGPACK.encode(ack), bad,
                                                                         MSGPACK.encode(progress)]))
    assert upfront == 3 and answer is None
    assert frames[0] == ack and isinstance(frames[1], ProtocolError) and frames[2] == progress
    assert charge == 3  # the ids; the frames were charged before
    # The frames are acted on by type; what an agent may not send is answered with `unexpected`.
    assert unexpected("agent", Cancel(delivery_id=1)).code is ErrorCode.UNEXPECTED_FRAME


def test_an_agents_message_refused_whole() -> None:
    inbox = Inbox("agent", MSGPACK)
    upfront, frames, charge, answer = read(inbox, b"\xc1")
    assert (upfront, frames, charge) == (0, [], 1) and answer is not None
    assert answer.name == "malformed_frame" and answer.message.startswith("malformed MessagePack frame")
    ids = [MSGPACK.encode(Ack(delivery_ids=list(range(MAX_IDS)))) for _ in range(MAX_MESSAGE_WEIGHT // MAX_IDS)]
    upfront, frames, charge, answer = read(inbox, encode_batch(MSGPACK, ids))
    weight = MAX_MESSAGE_WEIGHT + len(ids)
    assert (upfront, frames, charge) == (len(ids), [], weight - len(ids)) and answer is not None
    assert (answer.code, answer.message) == (
        ErrorCode.INVALID_FRAME, f"a message may carry at most {MAX_MESSAGE_WEIGHT} frames and delivery ids "
                                 f"together, not {weight}; send them in several messages")
    ack = Ack(delivery_ids=[1])
    assert read(inbox, MSGPACK.encode(ack)) == (0, [ack], 2, None)  # the next message is read afresh


def test_a_console_sends_requests_one_a_message() -> None:
    inbox = Inbox("console", JSON)
    request = Request(id=1, method="task.list")
    assert read(inbox, JSON.encode(request).decode()) == (0, [request], 1, None)
    batched = encode_batch(JSON, [JSON.encode(request)]).decode()
    upfront, frames, charge, answer = read(inbox, batched)  # a batch is not for consoles: not even unpacked
    assert (upfront, frames, charge) == (0, [], 1) and answer is not None
    assert answer.message == "unexpected batch frame: a console session sends req frames"
    upfront, frames, charge, answer = read(inbox, "{")
    assert (frames, charge) == ([], 1) and answer is not None and answer.name == "malformed_frame"


# -- the exception tree ----------------------------------------------------------------------


def test_the_clients_errors_share_one_tree() -> None:
    assert issubclass(SessionClosed, DaemonError) and issubclass(RequestRefused, DaemonError)
    refused = RequestRefused(1302, "unknown_task", "no task 9", retry_after=None)
    assert str(refused) == "unknown_task (1302): no task 9" and refused.retry_after is None
    assert is_session_error(4999) and not is_session_error(1000) and not is_session_error(5000)
    assert code_name(4010) == "unauthorized" and code_name(1000) == "closed" and code_name(1, "?") == "?"
