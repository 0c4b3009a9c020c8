"""``hostile``: the worst single messages a peer can send under ``max_frame_bytes``, and how
long each one holds tetherd's event loop (issue 15, finding 2).

A real tetherd on its defaults (``--set`` changes them). A probe process keeps a console
session open and pings tetherd over it, one ping at a time, every millisecond: websockets
answers a ping from the event loop, so a ping's round trip is an upper bound of how long
the loop could not run then. Each case sends one message, built as large as the frame
limit allows, over a session of its own (an enrolled agent, a stranger's first frame, or an
admin's console), then a marker the session answers in order (an agent's ``req``, refused
1403; a console's ``agents.list``) or waits for the close: ``handled_s``. Its figures:

- ``<case>_lag_ms``: the longest probe round trip from the send to the answer (the worst
  stall of the loop the message caused);
- ``<case>_handled_s``: from the send to the marker's answer (or the close);
- ``<case>_rss_mib``: tetherd's RSS peak during the case, less its RSS before;
- ``<case>_linger_s``: once the case's connection is closed by the client, how long tetherd
  still counts its session open (a session paused for its frame budget must end when its
  peer leaves, not when the pause is over).

``quiet_lag_ms`` is the probe's longest round trip over a second with nothing sent: the
machine's own noise. ``worst_lag_ms`` is the largest lag of all cases.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import tether.protocol.frames as _frames
from tether.protocol import JSON, MSGPACK, PROTOCOL_VERSION, Codec
from tether.protocol.errors import is_session_error
from tether.protocol.frames import (
    Ack,
    Batch,
    Enroll,
    Error,
    Frame,
    Hello,
    Progress,
    Request,
    Response,
    Result,
    Schedule,
    Welcome,
)

from .scenarios import MIB, BenchError, Options
from .seed import enroll_fleet
from .tetherd import Tetherd

BATCH_FRAMES = getattr(_frames, "MAX_BATCH_FRAMES", 1024)
IDS = getattr(_frames, "MAX_IDS", 4096)
HOLDING = getattr(_frames, "MAX_HOLDING", 65_536)
WEIGHT = getattr(_frames, "MAX_MESSAGE_WEIGHT", 65_536)
"""The largest messages tetherd accepts (its bounds; the same figures for a tetherd from
before it had them, so the "accepted" cases send the same messages to both)."""

PING_EVERY = 0.001
CASE_TIMEOUT = 90.0
"""Most seconds a case may take before it is reported as timed out (tetherd still busy)."""
SLACK = 256
"""Bytes kept below ``max_frame_bytes`` for the frame's own fields."""
MARKER_ID = 424242


# -- the probe ------------------------------------------------------------------------------


def _probe_main(url: str, token: str, conn: multiprocessing.connection.Connection) -> None:
    """Ping tetherd over a console session until told to stop; answer ``samples`` requests
    with every ``(sent_at, round_trip)`` since the last one (``time.monotonic``, which is
    the same clock in every process of the machine)."""

    async def main() -> None:
        async with connect(url, max_size=None, ping_interval=None, compression=None) as ws:
            await ws.send(MSGPACK.encode(Hello(role="console", version=PROTOCOL_VERSION, token=token)))
            await ws.recv()
            conn.send("ready")
            samples: list[tuple[float, float]] = []
            while True:
                sent = time.monotonic()
                pong = await ws.ping()
                await pong
                samples.append((sent, time.monotonic() - sent))
                if conn.poll():
                    if conn.recv() == "stop":
                        return
                    conn.send(samples)
                    samples = []
                await asyncio.sleep(PING_EVERY)

    asyncio.run(main())


class Probe:
    def __init__(self, url: str, token: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_probe_main, args=(url, token, child), daemon=True)
        self._proc.start()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            raise BenchError("the ping probe did not open its session")
        self.samples: list[tuple[float, float]] = []

    def collect(self) -> None:
        self._conn.send("samples")
        if not self._conn.poll(CASE_TIMEOUT):
            raise BenchError("the ping probe stopped answering")
        self.samples += self._conn.recv()

    def caught_up(self, after: float) -> None:
        """Collect until a ping sent after ``after`` has its answer."""
        deadline = time.monotonic() + CASE_TIMEOUT
        while not any(sent > after for sent, _ in self.samples[-50:]):
            if time.monotonic() > deadline:
                raise BenchError("the ping probe got no answer after the case")
            self.collect()

    def worst(self, start: float, end: float) -> float:
        """The longest round trip of a ping that was in flight at some moment in [start, end]."""
        return max((rtt for sent, rtt in self.samples if sent <= end and sent + rtt >= start), default=0.0)

    def stop(self) -> None:
        self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


# -- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    who: str
    """``agent`` (an enrolled agent's session), ``stranger`` (the message is the first frame
    of a connection, with no valid credential) or ``console`` (an admin token's session)."""
    codec: Codec
    build: Callable[[int], bytes]
    """The message for a frame limit of this many bytes."""
    leave: int = 0
    """Send the message this many times, then close the connection at once: how long does
    tetherd keep a session paused for its budget once its peer has left (``linger_s``)?"""


def _fit(one: int, size: int, overhead: int = 64) -> int:
    """How many items of ``one`` bytes fit in a message of ``size`` bytes."""
    return max(1, (size - SLACK - overhead) // one)


def _batch(inner: bytes, size: int, codec: Codec = MSGPACK) -> bytes:
    n = _fit(len(inner) + (0 if codec.binary else 1), size)
    return codec.encode(Batch(frames=[msgspec.Raw(inner)] * n))


def _uint_list(size: int) -> list[int]:
    """Small distinct-looking ids, one MessagePack byte each (positive fixints)."""
    return [i % 128 for i in range(_fit(1, size))]


def _keys(size: int) -> dict[str, None]:
    """A map of distinct 4-character keys with nil values: 6 MessagePack bytes an entry."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    keys: dict[str, None] = {}
    for i in range(_fit(6, size)):
        a, i = divmod(i, 36 ** 3)
        b, i = divmod(i, 36 ** 2)
        c, d = divmod(i, 36)
        keys[alphabet[a % 36] + alphabet[b] + alphabet[c] + alphabet[d]] = None
    return keys


def _raw(encoded: bytes) -> msgspec.Raw:
    """A pre-encoded MessagePack value placed inside an ``Any`` field (encoded as it is)."""
    return msgspec.Raw(encoded)


def _array_of(item: bytes, size: int) -> bytes:
    """A MessagePack array of as many copies of ``item`` as fit."""
    n = _fit(len(item), size)
    return b"\xdd" + n.to_bytes(4, "big") + item * n


CASES: tuple[Case, ...] = (
    Case("batch_nils", "agent", MSGPACK, lambda size: _batch(b"\xc0", size)),
    Case("batch_acks", "agent", MSGPACK, lambda size: _batch(MSGPACK.encode(Ack(delivery_ids=[])), size)),
    Case("batch_progress", "agent", MSGPACK, lambda size: _batch(MSGPACK.encode(Progress(delivery_id=1)), size)),
    Case("batch_results", "agent", MSGPACK,
         lambda size: _batch(MSGPACK.encode(Result(delivery_id=1, ok=True)), size)),
    Case("ack_ids", "agent", MSGPACK, lambda size: MSGPACK.encode(Ack(delivery_ids=_uint_list(size)))),
    # The largest messages within tetherd's bounds, which it accepts and acts on:
    Case("batch_max_acks", "agent", MSGPACK, lambda size: MSGPACK.encode(Batch(frames=[
        msgspec.Raw(MSGPACK.encode(Ack(delivery_ids=[i % 128 for i in range(WEIGHT // BATCH_FRAMES - 1)])))
    ] * BATCH_FRAMES))),
    Case("ack_max_ids", "agent", MSGPACK, lambda size: MSGPACK.encode(Ack(delivery_ids=list(range(IDS))))),
    Case("batch_max_results", "agent", MSGPACK, lambda size: MSGPACK.encode(Batch(frames=[
        msgspec.Raw(MSGPACK.encode(Result(delivery_id=i + 1, ok=True, output=msgspec.Raw(b"\x90"))))
        for i in range(BATCH_FRAMES)]))),
    Case("batch_max_bad", "agent", MSGPACK, lambda size: MSGPACK.encode(Batch(
        frames=[msgspec.Raw(b"\xc0")] * BATCH_FRAMES))),
    Case("paused_peer_leaves", "agent", MSGPACK, lambda size: MSGPACK.encode(Batch(
        frames=[msgspec.Raw(b"\xc0")] * BATCH_FRAMES)), leave=40),
    Case("result_output_nils", "agent", MSGPACK, lambda size: MSGPACK.encode(Result(
        delivery_id=1, ok=True, output=msgspec.Raw(_array_of(b"\xc0", size))))),
    Case("result_output_lists", "agent", MSGPACK, lambda size: MSGPACK.encode(Result(
        delivery_id=1, ok=True, output=msgspec.Raw(_array_of(b"\x90", size))))),
    Case("result_schedule_args", "agent", MSGPACK, lambda size: MSGPACK.encode(Result(
        delivery_id=1, ok=True, schedule=Schedule(command="x", next_run_in_seconds=60, args=_keys(size))))),
    Case("result_schedule_lists", "agent", MSGPACK, lambda size: MSGPACK.encode(Result(
        delivery_id=1, ok=True, schedule=Schedule(command="x", next_run_in_seconds=60,
                                                  args={"a": _raw(_array_of(b"\x90", size))})))),
    Case("json_batch_zeros", "agent", JSON, lambda size: _batch(b"0", size, JSON)),
    Case("json_result_output", "agent", JSON, lambda size: JSON.encode(Result(
        delivery_id=1, ok=True, output=msgspec.Raw(b"[" + b"0," * _fit(2, size) + b"0]")))),
    Case("hello_holding", "agent", MSGPACK, lambda size: b""),  # built with the agent's credentials
    Case("hello_holding_max", "agent", MSGPACK, lambda size: b""),
    Case("stranger_hello_holding", "stranger", MSGPACK, lambda size: MSGPACK.encode(Hello(
        role="agent", version=PROTOCOL_VERSION, agent_id="nobody", token="wrong", holding=_uint_list(size)))),
    Case("stranger_enroll_tags", "stranger", MSGPACK, lambda size: MSGPACK.encode(Enroll(
        version=PROTOCOL_VERSION, key="AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", tags=["a"] * _fit(2, size)))),
    Case("stranger_request_lists", "stranger", MSGPACK, lambda size: MSGPACK.encode(Request(
        id=1, method="x", params={"a": _raw(_array_of(b"\x90", size))}))),
    Case("console_args_lists", "console", MSGPACK, lambda size: MSGPACK.encode(Request(
        id=MARKER_ID - 1, method="task.create",
        params={"command": "x", "all": True, "args": {"a": _raw(_array_of(b"\x90", size))}}))),
    Case("console_args", "console", MSGPACK, lambda size: MSGPACK.encode(Request(
        id=MARKER_ID - 1, method="task.create", params={"command": "x", "all": True, "args": _keys(size)}))),
)


# -- one case -------------------------------------------------------------------------------


class RssPeak:
    """tetherd's RSS, sampled every 10 ms in a thread while the case runs."""

    def __init__(self, tetherd: Tetherd) -> None:
        self._tetherd = tetherd
        self.before = self.peak = tetherd.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, self._tetherd.rss())
            except Exception:  # tetherd is gone: the case reports it
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return (self.peak - self.before) / MIB


async def _session(url: str, case: Case, creds: dict[str, str]) -> ClientConnection:
    ws = await connect(url, max_size=None, ping_interval=None, compression=None)
    if case.who == "stranger":
        return ws
    if case.who == "console":
        hello = Hello(role="console", version=PROTOCOL_VERSION, token=creds["admin_token"])
    elif case.name.startswith("hello_holding"):
        return ws  # the hostile message is the hello itself
    else:
        hello = Hello(role="agent", version=PROTOCOL_VERSION, agent_id=creds["agent_id"], token=creds["token"],
                      features=["batch"])
    await ws.send(case.codec.encode(hello), text=not case.codec.binary)
    reply = await ws.recv()
    frame = msgspec.json.decode(reply) if isinstance(reply, str) else msgspec.msgpack.decode(reply)
    if frame.get("t") != "welcome":
        raise BenchError(f"{case.name}: the session was not opened: {frame}")
    return ws


def _is_marker_answer(data: bytes | str, codec: Codec) -> bool:
    decoder = msgspec.msgpack if isinstance(data, bytes) else msgspec.json
    try:
        frame = decoder.decode(data, type=Error | Response | Welcome)
    except msgspec.ValidationError:
        return False
    if isinstance(frame, Error):
        return frame.ref == MARKER_ID or is_session_error(frame.code)
    return isinstance(frame, Response) and frame.id == MARKER_ID


async def _run_case(url: str, case: Case, creds: dict[str, str], size: int, tetherd: Tetherd,
                    probe: Probe) -> dict[str, Any]:
    if case.name.startswith("hello_holding"):
        held = list(range(HOLDING if case.name == "hello_holding_max" else _fit(5, size)))
        message = MSGPACK.encode(Hello(role="agent", version=PROTOCOL_VERSION, agent_id=creds["agent_id"],
                                       token=creds["token"], holding=held))
    else:
        message = case.build(size)
    if len(message) > size:
        raise BenchError(f"{case.name}: built {len(message)} bytes, more than the {size} allowed")
    ws = await _session(url, case, creds)
    marker: Frame = Request(id=MARKER_ID, method="agents.list")
    sessions_before = tetherd.metrics().get('tether_sessions_open{role="agent"}', 0.0)
    rss = RssPeak(tetherd)
    closed_by_tetherd = timed_out = False
    start = time.monotonic()
    try:
        if case.leave:
            for _ in range(case.leave):
                await ws.send(message)
            # Gone (TCP FIN, no closing handshake) while tetherd still pays for what it sent,
            # several seconds of pause; more messages than websockets queues, so tetherd's
            # socket is paused too and does not read the FIN.
            ws.transport.close()
        else:
            await ws.send(message if case.codec.binary else message.decode(), text=not case.codec.binary)
            if case.who != "stranger" and not case.name.startswith("hello_holding"):
                await ws.send(case.codec.encode(marker), text=not case.codec.binary)
            async with asyncio.timeout(CASE_TIMEOUT):
                while True:
                    data = await ws.recv()
                    if case.name.startswith("hello_holding") and isinstance(data, bytes) and data:
                        # The hello was taken: ask the marker now (the session is open).
                        if msgspec.msgpack.decode(data).get("t") == "welcome":
                            await ws.send(MSGPACK.encode(marker))
                            continue
                    if _is_marker_answer(data, case.codec):
                        break
    except ConnectionClosed:
        closed_by_tetherd = True
    except TimeoutError:
        timed_out = True
    handled_at = time.monotonic()
    handled = handled_at - start
    rss_mib = rss.stop()
    await ws.close()
    closed = time.monotonic()
    linger = 0.0
    if case.who == "agent":
        # This case's session is counted in sessions_before, but for hello_holding's (not open then).
        opened_late = case.name.startswith("hello_holding")
        linger = _sessions_drop_to(tetherd, sessions_before - (0 if opened_late else 1)) - closed
    probe.caught_up(max(handled_at, time.monotonic()))
    lag = probe.worst(start, handled_at)
    return {
        f"{case.name}_bytes": len(message),
        f"{case.name}_lag_ms": round(lag * 1000, 1),
        f"{case.name}_handled_s": round(handled, 3),
        f"{case.name}_rss_mib": round(rss_mib, 1),
        f"{case.name}_linger_s": round(linger, 3),
        f"{case.name}_closed": closed_by_tetherd,
        f"{case.name}_timed_out": timed_out,
    }


def _sessions_drop_to(tetherd: Tetherd, count: float) -> float:
    """When tetherd's open agent sessions were ``count`` or fewer (polled every 10 ms)."""
    deadline = time.monotonic() + CASE_TIMEOUT
    while tetherd.metrics().get('tether_sessions_open{role="agent"}', 0.0) > count:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return time.monotonic()


async def _run_all(tetherd: Tetherd, size: int, only: set[str] | None) -> dict[str, Any]:
    (identity,) = await enroll_fleet(tetherd.url, tetherd.enroll_key, 1, run_id=f"hostile-{time.time_ns()}")
    creds = {"agent_id": identity.agent_id, "token": identity.token, "admin_token": tetherd.admin_token}
    probe = Probe(tetherd.url, tetherd.admin_token)
    figures: dict[str, Any] = {}
    try:
        quiet_start = time.monotonic()
        await asyncio.sleep(1.0)  # nothing sent: the machine's own noise
        probe.caught_up(time.monotonic())
        figures["quiet_lag_ms"] = round(probe.worst(quiet_start, time.monotonic()) * 1000, 1)
        for case in CASES:
            if only and case.name not in only:
                continue
            result = await _run_case(tetherd.url, case, creds, size, tetherd, probe)
            print(f"    {case.name}: " + " ".join(f"{k.removeprefix(case.name + '_')}={v}" for k, v in result.items()),
                  flush=True)
            figures.update(result)
    finally:
        probe.stop()
    lags = {k: v for k, v in figures.items() if k.endswith("_lag_ms") and k != "quiet_lag_ms"}
    figures["worst_lag_ms"] = max(lags.values(), default=0.0)
    figures["worst_case"] = max(lags, key=lambda k: lags[k], default="").removesuffix("_lag_ms")
    return figures


def run_hostile(opts: Options) -> dict[str, Any]:
    size = int(opts.settings.get("max_frame_bytes", 1_048_576))
    only = set(filter(None, opts.only.split(","))) or None
    with Tetherd(opts.settings) as tetherd:
        figures = asyncio.run(_run_all(tetherd, size, only))
        figures["tetherd_log_problems"] = tetherd.log_levels()
        if tetherd.proc is not None and tetherd.proc.poll() is not None:
            raise BenchError(f"tetherd exited during the cases:\n{tetherd.log_tail()}")
    figures["max_frame_bytes"] = size
    return figures
