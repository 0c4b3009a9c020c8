"""The MQTT side of the comparison: paho-mqtt clients, many per process, one selector loop each.

Every simulated subscriber is a ``paho.mqtt.client.Client`` (MQTT 3.1.1,
``clean_session=False``: a persistent session whose subscription to ``tasks/<id>`` at QoS 1
was made before the run). Each worker process drives its clients with paho's documented
external-loop API (``loop_read`` / ``loop_write`` / ``loop_misc`` on a ``selectors`` loop),
the way the tether fleet runs many ``AgentClient``s on one event loop; a few connector
threads make the blocking TCP connects, so all clients connect at once.

What a client does with each message mirrors the tether agent running ``echo``: decode the
task (a tether ``task`` frame, MessagePack), publish the result (a tether ``result`` frame
with the args as output) to ``results/<id>`` at QoS 1; paho PUBACKs the task after the
callback returns. A client is done when the broker has PUBACKed all its results; a worker
stops by itself when all its clients are done (or at its deadline) and reports times from
``time.monotonic()`` (the same clock in every process).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import queue
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTMessage, MQTTv311

from tether.daemon.housekeeping import tune as tune_gc
from tether.protocol import MSGPACK, decode_from_daemon
from tether.protocol.frames import Result, Task

BARRIER_TIMEOUT = 120.0
RESULT_TIMEOUT = 120.0
CONNECTORS = 16
"""Connector threads per worker: blocking connects in parallel, as asyncio's are."""
KEEPALIVE = 60
MISC_EVERY = 1.0


class MqttFleetError(Exception):
    """A worker failed to start, or returned no results."""


class SubscriberState:
    """One client's counters; the paho callbacks' ``userdata``."""

    __slots__ = ("acked", "connected_at", "connects", "done_at", "duplicates", "expected", "first_msg_at",
                 "problems", "received", "result_topic", "seen", "session_present")

    def __init__(self, client_id: str, expected: int, problems: collections.Counter[str]) -> None:
        self.result_topic = f"results/{client_id}"
        self.expected = expected
        self.received = 0
        self.acked = 0
        self.duplicates = 0
        self.seen: set[int] = set()
        self.connected_at: float | None = None
        self.first_msg_at: float | None = None
        self.done_at: float | None = None
        self.connects = 0
        self.session_present: bool | None = None
        self.problems = problems


def _on_connect(client: Client, state: SubscriberState, flags: Any, reason: Any, properties: Any) -> None:
    state.connects += 1
    if reason.is_failure:
        state.problems[f"connack_{reason}"] += 1
        return
    state.connected_at = time.monotonic()
    state.session_present = bool(flags.session_present)
    if not flags.session_present:
        state.problems["session_not_present"] += 1


def _on_message(client: Client, state: SubscriberState, message: MQTTMessage) -> None:
    now = time.monotonic()
    if state.first_msg_at is None:
        state.first_msg_at = now
    frame = decode_from_daemon(message.payload)
    assert isinstance(frame, Task)
    if frame.delivery_id in state.seen:
        state.duplicates += 1
        return
    state.seen.add(frame.delivery_id)
    state.received += 1
    wall = time.time()
    result = Result(delivery_id=frame.delivery_id, ok=True, output=frame.args, started_at=wall, finished_at=wall)
    client.publish(state.result_topic, MSGPACK.encode(result), qos=1)


def _on_publish(client: Client, state: SubscriberState, mid: int, reason: Any, properties: Any) -> None:
    state.acked += 1
    if state.acked == state.expected:
        state.done_at = time.monotonic()


def _on_disconnect(client: Client, state: SubscriberState, flags: Any, reason: Any, properties: Any) -> None:
    if reason.is_failure:
        state.problems[f"disconnected_{reason}"] += 1


def subscriber(client_id: str, expected: int, problems: collections.Counter[str]) -> Client:
    state = SubscriberState(client_id, expected, problems)
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=MQTTv311,
                    userdata=state)
    client.on_connect = _on_connect
    client.on_message = _on_message
    client.on_publish = _on_publish
    client.on_disconnect = _on_disconnect
    return client


class SelectorLoop:
    """Drive many paho clients from one thread with ``selectors`` (paho's external-loop API).

    Clients are handed over with :meth:`adopt` (from any thread) once their socket exists.
    """

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.clients: list[Client] = []
        self._writing: dict[int, bool] = {}
        self._handover: queue.SimpleQueue[Client] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._last_misc = time.monotonic()

    def adopt(self, client: Client) -> None:
        self._handover.put(client)
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass

    def _register(self, client: Client) -> None:
        sock = client.socket()
        if sock is None:
            return
        self.clients.append(client)
        self.sel.register(sock, selectors.EVENT_READ, client)
        self._writing[sock.fileno()] = False
        self._sync(client)

    def _sync(self, client: Client) -> None:
        """Write what the client queued; watch for writability only while some is left."""
        if client.want_write():
            client.loop_write()
        sock = client.socket()
        if sock is None:
            return
        fd = sock.fileno()
        want = client.want_write()
        if fd in self._writing and self._writing[fd] != want:
            self.sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0), client)
            self._writing[fd] = want

    def _forget(self, client: Client) -> None:
        for key in list(self.sel.get_map().values()):
            if key.data is client:
                self.sel.unregister(key.fileobj)
                self._writing.pop(key.fd, None)

    def run_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Serve every client until ``done()`` or the deadline; True if done."""
        while True:
            if done():
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            for key, mask in self.sel.select(timeout=min(0.05, deadline - now)):
                client = key.data
                if client is None:
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    while True:
                        try:
                            self._register(self._handover.get_nowait())
                        except queue.Empty:
                            break
                    continue
                if mask & selectors.EVENT_READ:
                    client.loop_read()
                if mask & selectors.EVENT_WRITE:
                    client.loop_write()
                if client.socket() is None:
                    self._forget(client)
                else:
                    self._sync(client)
            if now - self._last_misc >= MISC_EVERY:
                self._last_misc = now
                for client in self.clients:
                    client.loop_misc()

    def close(self) -> None:
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()


def connect_all(clients: Sequence[Client], host: str, port: int, loop: SelectorLoop,
                problems: collections.Counter[str]) -> list[threading.Thread]:
    """Connect every client from :data:`CONNECTORS` threads, handing each to ``loop``."""
    pending: queue.SimpleQueue[Client] = queue.SimpleQueue()
    for c in clients:
        pending.put(c)

    def connector() -> None:
        while True:
            try:
                client = pending.get_nowait()
            except queue.Empty:
                return
            try:
                client.connect(host, port, keepalive=KEEPALIVE)
            except OSError as exc:
                problems[f"connect_failed_{type(exc).__name__}"] += 1
                continue
            loop.adopt(client)

    threads = [threading.Thread(target=connector, daemon=True) for _ in range(min(CONNECTORS, len(clients)))]
    for t in threads:
        t.start()
    return threads


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(index: int, host: str, port: int, client_ids: list[str], per_client: int, barrier: Any, out: Any,
            max_seconds: float) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"mqtt-worker-{index} %(levelname)s %(message)s")
    problems: collections.Counter[str] = collections.Counter()
    clients = [subscriber(cid, per_client, problems) for cid in client_ids]
    states: list[SubscriberState] = [c.user_data_get() for c in clients]
    loop = SelectorLoop()
    if len(clients) > 1:
        tune_gc()  # as the tether fleet's workers of many agents do
    try:
        barrier.wait(BARRIER_TIMEOUT)
    except threading.BrokenBarrierError:
        out.put((index, {"aborted": True}))
        return
    go = time.monotonic()
    cpu_go = _cpu_seconds()
    connectors = connect_all(clients, host, port, loop, problems)
    finished = loop.run_until(lambda: all(s.done_at is not None for s in states), go + max_seconds)
    cpu_end = _cpu_seconds()
    for t in connectors:
        t.join(timeout=10)
    for c in loop.clients:
        c.disconnect()
    loop.run_until(lambda: all(c.socket() is None for c in loop.clients), time.monotonic() + 5.0)
    loop.close()
    out.put((index, {
        "go": go,
        "finished": finished,
        "cpu_seconds": cpu_end - cpu_go,
        "connected": [s.connected_at for s in states],
        "first_msg": [s.first_msg_at for s in states],
        "done": [s.done_at for s in states],
        "received": sum(s.received for s in states),
        "acked": sum(s.acked for s in states),
        "duplicates": sum(s.duplicates for s in states),
        "reconnects": sum(max(0, s.connects - 1) for s in states),
        "problems": dict(problems),
    }))


@dataclass
class MqttFleet:
    """``procs`` worker processes sharing the client ids round-robin; the same life cycle as
    :class:`bench.fleet.Fleet`: ``start()``, ``go()``, ``finish()`` (bounded waits)."""

    host: str
    port: int
    client_ids: Sequence[str]
    per_client: int
    procs: int
    max_seconds: float
    _workers: list[Any] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.procs = max(1, min(self.procs, len(self.client_ids)))
        self._ctx = multiprocessing.get_context("spawn")
        self._barrier = self._ctx.Barrier(self.procs + 1)
        self._out = self._ctx.Queue()

    def start(self) -> None:
        for index in range(self.procs):
            chunk = list(self.client_ids[index::self.procs])
            proc = self._ctx.Process(target=_worker, name=f"mqtt-fleet-{index}", daemon=True, args=(
                index, self.host, self.port, chunk, self.per_client, self._barrier, self._out, self.max_seconds))
            proc.start()
            self._workers.append(proc)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def go(self) -> float:
        try:
            self._barrier.wait(BARRIER_TIMEOUT)
        except threading.BrokenBarrierError:
            raise MqttFleetError(f"not every MQTT worker reached the start line within {BARRIER_TIMEOUT:g} s") \
                from None
        return time.monotonic()

    def poll(self, timeout: float) -> tuple[int, dict[str, Any]] | None:
        """One worker's results if one arrives within ``timeout``."""
        try:
            item: tuple[int, dict[str, Any]] = self._out.get(timeout=timeout)
        except queue.Empty:
            return None
        return item

    def died(self, reported: set[int]) -> bool:
        """A worker that has not reported is gone (its results cannot come any more)."""
        return any(not w.is_alive() and w.exitcode != 0 for i, w in enumerate(self._workers) if i not in reported)

    def close(self) -> None:
        self._barrier.abort()
        for w in self._workers:
            w.join(timeout=RESULT_TIMEOUT)
            if w.is_alive():
                w.terminate()
                w.join(timeout=10)
            if w.is_alive():
                w.kill()
                w.join(timeout=10)


def task_payloads(per_client: int, arg_bytes: int) -> list[bytes]:
    """The tether ``task`` frames (MessagePack) an agent would be pushed, for one client."""
    pad = "x" * max(0, arg_bytes - 30)
    return [MSGPACK.encode(Task(delivery_id=n + 1, task_id=n + 1, command="echo",
                                args=msgspec.Raw(MSGPACK.encode_value({"n": n, "pad": pad} if pad else {"n": n}))))
            for n in range(per_client)]


__all__ = ["MqttFleet", "MqttFleetError", "SelectorLoop", "connect_all", "subscriber", "task_payloads"]
