"""One message cannot stall tetherd (issue 15, finding 2), against a real tetherd process.

An enrolled agent (its real credentials, a raw session) sends the largest messages the
frame limit allows: a ``batch`` of a million frames, an ``ack`` naming a million ids,
batches past what one message may carry. Each is refused from its length before its
inner frames are built, with an error saying the bound, while a bystander console is
answered at once and tetherd's memory stays put. A session paused for its frame budget
ends as soon as its peer leaves, and a SIGTERM drain does not wait for a pause to end.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest
from harness import TEST_SETTINGS, Tetherd, raw_agent_session, wait_until
from websockets.sync.client import ClientConnection, connect

from tether.protocol import MSGPACK, PROTOCOL_VERSION, decode_from_daemon
from tether.protocol.frames import (
    MAX_BATCH_FRAMES,
    MAX_IDS,
    MAX_MESSAGE_WEIGHT,
    Ack,
    Error,
    Hello,
    Request,
    Response,
    Welcome,
)

AGENT_SESSIONS = 'tether_sessions_open{role="agent"}'
MIB = 1024 * 1024


def start_tetherd(tmp_path: Path, env: dict[str, str], **settings: Any) -> Tetherd:
    daemon = Tetherd(tmp_path / "data", env, settings={**TEST_SETTINGS, **settings})
    daemon.start()
    return daemon


@contextmanager
def agent_session(tetherd: Tetherd) -> Iterator[ClientConnection]:
    """An enrolled agent's session, raw (the test writes its frames itself)."""
    with raw_agent_session(tetherd, "hostile-batch") as (ws, _):
        yield ws


@contextmanager
def console(tetherd: Tetherd) -> Iterator[ClientConnection]:
    with connect(tetherd.url, max_size=None) as ws:
        ws.send(MSGPACK.encode(Hello(role="console", version=PROTOCOL_VERSION, token=tetherd.admin_token)))
        assert isinstance(decode_from_daemon(ws.recv(timeout=10)), Welcome)
        yield ws


def next_error(ws: ClientConnection, timeout: float) -> Error:
    """The next error the session is sent, but a rate limit's (1429)."""
    while not isinstance(frame := decode_from_daemon(ws.recv(timeout=timeout)), Error) or frame.code == 1429:
        pass
    return frame


def answered_in(ws: ClientConnection, request_id: int) -> float:
    """Seconds the console waits for its answer to one ``agents.list``."""
    started = time.monotonic()
    ws.send(MSGPACK.encode(Request(id=request_id, method="agents.list")))
    while not isinstance(frame := decode_from_daemon(ws.recv(timeout=30)), Response):
        pass
    assert frame.id == request_id
    return time.monotonic() - started


def array_of(item: bytes, count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big") + item * count


def test_one_batch_message_cannot_stall_tetherd(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    daemon = start_tetherd(tmp_path, env)
    assert daemon.proc is not None
    tetherd_process = psutil.Process(daemon.proc.pid)
    near_limit = MIB - 1024
    hostile = {
        # ~1 MiB of one-byte inner frames: a million frames (it held tetherd's loop ~13 s)
        "a batch of a million frames": b"\x82\xa1t\xa5batch\xa6frames" + array_of(b"\xc0", near_limit),
        "an ack naming a million ids": b"\x82\xa1t\xa3ack\xacdelivery_ids" + array_of(b"\x01", near_limit),
        "a batch past what one message may carry": MSGPACK.encode({"t": "batch", "frames": [
            msgspec.Raw(MSGPACK.encode(Ack(delivery_ids=[1] * (MAX_MESSAGE_WEIGHT // MAX_BATCH_FRAMES))))
        ] * MAX_BATCH_FRAMES}),
    }
    try:
        with agent_session(daemon) as agent, console(daemon) as bystander:
            rss_before = tetherd_process.memory_info().rss
            for n, (what, message) in enumerate(hostile.items()):
                assert len(message) < MIB
                started = time.monotonic()
                agent.send(message)
                bystander_wait = answered_in(bystander, n)
                error = next_error(agent, timeout=5)
                refused = time.monotonic() - started
                assert error.code == 1102, (what, error)
                assert bystander_wait < 1.0, f"{what}: the bystander waited {bystander_wait:.2f} s"
                assert refused < 2.0, f"{what}: refused after {refused:.2f} s"
                assert tetherd_process.memory_info().rss - rss_before < 64 * MIB, what
            assert f"length <= {MAX_BATCH_FRAMES}" in hostile_error(agent, hostile["a batch of a million frames"])
            assert f"length <= {MAX_IDS}" in hostile_error(agent, hostile["an ack naming a million ids"])
            assert f"at most {MAX_MESSAGE_WEIGHT} frames and delivery ids" in hostile_error(
                agent, hostile["a batch past what one message may carry"])
            # The session is still usable, and so is tetherd.
            agent.send(MSGPACK.encode(Ack(delivery_ids=[])))
            assert answered_in(bystander, 99) < 1.0
    finally:
        daemon.kill(signal.SIGTERM)
    fault_log("Hostile input", "an agent's ~1 MiB messages: a batch of a million frames, an ack of a million ids, "
              "a batch of 1,024 acks past 65,536 frames and ids", 3,
              "each refused 1102 naming its bound within 2 s, a bystander console answered within 1 s meanwhile, "
              "tetherd's RSS grows < 64 MiB, the session stays usable")


def hostile_error(ws: ClientConnection, message: bytes) -> str:
    ws.send(message)
    return next_error(ws, timeout=5).message


def test_a_paused_session_ends_when_its_peer_leaves(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    """A garbage frame costs 100 of a budget of 100 a second: each message buys a second of
    paused reading. 40 of them, then the peer's TCP connection closes (no closing
    handshake; tetherd is not reading, so it does not read the FIN either)."""
    daemon = start_tetherd(tmp_path, env, max_frames_per_second=100, frame_burst=100)
    try:
        with agent_session(daemon) as agent:
            for _ in range(40):
                agent.send(b"\xc1")
            next_error(agent, timeout=5)
            wait_until(lambda: daemon.metrics()["tether_sessions_throttled_total"] >= 1, what="the pause")
            assert daemon.metrics()[AGENT_SESSIONS] == 1
            left = time.monotonic()
            agent.socket.close()  # gone without a word
            wait_until(lambda: daemon.metrics()[AGENT_SESSIONS] == 0, timeout=5, what="the session's end")
            lingered = time.monotonic() - left
        assert lingered < 2.0, f"the session outlived its peer by {lingered:.1f} s"
    finally:
        daemon.kill(signal.SIGTERM)
    fault_log("Hostile input", "an agent session paused ~40 s for its frame budget whose peer leaves (TCP FIN, "
              "no closing handshake)", 1, "the session ends within 2 s of the peer leaving")


def test_a_paused_session_does_not_hold_the_drain(
    tmp_path: Path, env: dict[str, str], fault_log: Callable[..., None]
) -> None:
    daemon = start_tetherd(tmp_path, env, max_frames_per_second=100, frame_burst=100)
    with ExitStack() as stack:
        agent = stack.enter_context(agent_session(daemon))
        for _ in range(40):
            agent.send(b"\xc1")
        next_error(agent, timeout=5)
        wait_until(lambda: daemon.metrics()["tether_sessions_throttled_total"] >= 1, what="the pause")
        started = time.monotonic()
        code = daemon.kill(signal.SIGTERM)
        drained = time.monotonic() - started
    assert code == 0
    assert drained < 5.0, f"the drain took {drained:.1f} s"
    fault_log("Hostile input", "SIGTERM while an agent session is paused ~40 s for its frame budget", 1,
              "tetherd drains and exits 0 within 5 s")


def peak_rss(pid: int) -> int:
    """The process's peak resident set so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.parametrize("what", ["request params", "result schedule args"])
def test_a_stranger_first_frame_is_not_decoded_past_its_tag(
    what: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """A first frame that is neither hello nor enroll is refused from its tag: a million
    empty lists in it (~100 ms of the loop and ~50 MiB to build) are never built."""
    daemon = start_tetherd(tmp_path, env)
    assert daemon.proc is not None
    lists = msgspec.Raw(array_of(b"\x90", MIB - 1024))
    frame = {"t": "req", "id": 1, "method": "x", "params": {"a": lists}} if what == "request params" else \
        {"t": "result", "delivery_id": 1, "ok": True,
         "schedule": {"command": "x", "next_run_in_seconds": 60, "args": {"a": lists}}}
    try:
        before = peak_rss(daemon.proc.pid)
        with connect(daemon.url, max_size=None) as ws:
            ws.send(MSGPACK.encode(frame))
            error = next_error(ws, timeout=5)
        assert error.code == 4001 and "first frame must be hello or enroll" in error.message
        assert peak_rss(daemon.proc.pid) - before < 16 * MIB
    finally:
        daemon.kill(signal.SIGTERM)
