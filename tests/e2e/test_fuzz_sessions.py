"""Hostile sessions against a real tetherd (issue 6): a console and an agent each send a
few hundred fuzzed frames and raw garbage in one session.

Every answer is a response or an ``error`` frame with a registered request code (1xxx,
never INTERNAL, never "storage unavailable" from a healthy store); the session stays
open throughout; afterwards tetherctl and a newly enrolled agent work as before, and the
tetherd log holds no traceback and no crashed request or session.

The frames are drawn from a seeded ``random.Random``: the same frames on every run, so
a failure can be replayed; ``FUZZ_SEED`` in the environment draws other ones.
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import msgspec
import pytest
from harness import BIN, AgentProc, Tetherd
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tether.protocol import (
    JSON,
    MSGPACK,
    PROTOCOL_VERSION,
    Codec,
    ErrorCode,
    ProtocolError,
    decode_from_daemon,
)
from tether.protocol.codec import decode_to_daemon
from tether.protocol.frames import Batch, Error, Event, Frame, Hello, Request, Response, Task, Welcome
from tether.protocol.methods import METHODS

SEED = int(os.environ.get("FUZZ_SEED", "20260601"))
FRAMES = 300
TASKS = 12
"""Deliveries the fuzzed agent holds: results with hostile outputs land on real ones."""
MAX_MESSAGE = 900_000
"""Below tetherd's max_frame_bytes (1 MiB): a larger message closes the session by design (1009)."""
ANSWER_TIMEOUT = 15.0
REQUEST_ERRORS = {int(code) for code in ErrorCode if 1000 <= code < 2000} - {
    ErrorCode.INTERNAL, ErrorCode.STORAGE_UNAVAILABLE}
CRASHES = ("Traceback", "event=request_crashed", "event=session_crashed")
CODECS = {"json": JSON, "msgpack": MSGPACK}


# -- hostile values ------------------------------------------------------------------------

NASTY_TEXT = ["", " ", "\x00", "a\x00b", "\u202e", "🦀", "\n", "--x", "'unbalanced", '"', "\\", "*/0 * * * *",
              "../../etc/passwd", "null", "web", "record", "record --n 1", "all", "pending", "UTC"]
BOUNDARY_INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64 - 1]
"""Up to what MessagePack carries; JSON text carries any integer (10**30, 10**400) too."""


def deep(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


class Values:
    """Hostile values, all of them encodable in the session's codec (MessagePack also
    carries NaN, binary and extension values, which JSON has no text for)."""

    def __init__(self, rng: random.Random, binary: bool) -> None:
        self.rng = rng
        self.binary = binary

    def text(self) -> str:
        rng = self.rng
        match rng.randrange(5):
            case 0:
                return rng.choice(NASTY_TEXT)
            case 1:
                return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD800),
                                               rng.randrange(0xE000, 0x110000)])) for _ in range(rng.randrange(40)))
            case 2:
                return rng.choice("xé '\x00") * rng.choice([1_000, 65_536, MAX_MESSAGE // 3])
            case _:
                return "".join(rng.choice("abcXYZ019-_") for _ in range(rng.randrange(1, 12)))

    def number(self) -> Any:
        rng = self.rng
        match rng.randrange(4):
            case 0:
                return rng.choice(BOUNDARY_INTS if self.binary else [*BOUNDARY_INTS, 10**30, -(10**30), 10**400])
            case 1:
                return rng.randrange(-5, 100)
            case 2:
                return rng.choice([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0]) if self.binary else \
                    rng.choice([1e308, 5e-324, -0.0, 0.5])
            case _:
                return rng.uniform(-1e6, 1e6)

    def scalar(self) -> Any:
        rng = self.rng
        pick = rng.randrange(6 if self.binary else 5)
        if pick == 0:
            return rng.choice([None, True, False])
        if pick in (1, 2):
            return self.number()
        if pick in (3, 4):
            return self.text()
        return rng.choice([b"\x00bytes", msgspec.msgpack.Ext(1, b"x")])

    def any(self, depth: int = 0) -> Any:
        rng = self.rng
        pick = rng.randrange(10)
        if pick == 0:
            return deep(rng.choice([65, 70, 500]), rng.choice(["list", "dict"]))
        if pick in (1, 2) and depth < 3:
            return [self.any(depth + 1) for _ in range(rng.randrange(4))]
        if pick in (3, 4) and depth < 3:
            out = {self.text()[:50]: self.any(depth + 1) for _ in range(rng.randrange(4))}
            if self.binary and rng.random() < 0.2:
                out[rng.choice([1, None, (1, 2)])] = 1  # type: ignore[index]  # map keys JSON cannot have
            return out
        return self.scalar()


def encode(codec: Codec, obj: Any) -> bytes | str:
    """``obj`` as one WebSocket message of the codec: bytes (MessagePack) or text (JSON)."""
    if codec.binary:
        return msgspec.msgpack.encode(obj)
    return json.dumps(obj, ensure_ascii=False)


def fit(codec: Codec, obj: Any, fallback: Callable[[], Any]) -> bytes | str:
    data = encode(codec, obj)
    return data if len(data) <= MAX_MESSAGE else encode(codec, fallback())


def too_deep(codec: Codec, frame: dict[str, Any], key: str, n: int) -> bytes | str:
    """``frame`` with the value of ``key`` (wherever it is) nested ``n`` deep: built as
    text or bytes, as an encoder would refuse to (and as a decoder may refuse to read)."""
    if codec.binary:
        name = msgspec.msgpack.encode(key)
        before, _, after = msgspec.msgpack.encode(frame).partition(name + b"\xc0")
        return before + name + b"\x91" * n + b"\x90" + after
    start, _, end = json.dumps(frame).partition(f'"{key}": null')
    return start + f'"{key}": ' + "[" * n + "]" * n + end


# -- one message, and what must come back ----------------------------------------------------


def expected(message: bytes | str) -> tuple[str, Any]:
    """What tetherd decodes the message as, decoded here with the same codec: a request
    (its id), a frame a console may not send, or a decoding error (its code)."""
    try:
        frame = decode_to_daemon(message)
    except ProtocolError as exc:
        return "undecodable", exc.code
    if isinstance(frame, Request):
        return "request", frame.id
    return "unexpected", type(frame).__name__


def assert_registered_request_error(frame: Error) -> None:
    assert frame.code in REQUEST_ERRORS, frame
    assert frame.name == ErrorCode(frame.code).slug and frame.message, frame
    assert "Traceback" not in frame.message


def answer(ws: ClientConnection, message: bytes | str) -> Frame:
    """Send one message and return tetherd's answer to it (skipping ``task.wait`` events)."""
    kind, detail = expected(message)
    ws.send(message, text=isinstance(message, str))
    while True:
        try:
            frame = decode_from_daemon(ws.recv(timeout=ANSWER_TIMEOUT))
        except ConnectionClosed:
            raise AssertionError(f"tetherd closed the session after {message[:200]!r}") from None
        except TimeoutError:
            raise AssertionError(f"no answer within {ANSWER_TIMEOUT} s to {message[:200]!r}") from None
        if isinstance(frame, Event):
            assert kind == "request" and frame.id == detail and frame.topic == "delivery", frame
            continue
        if isinstance(frame, Error):
            assert_registered_request_error(frame)
            if kind == "request":
                assert frame.ref == detail, (frame, message[:200])
            elif kind == "undecodable":
                assert frame.ref is None and frame.code == detail, (frame, message[:200])
            else:
                assert frame.ref is None and frame.code == ErrorCode.UNEXPECTED_FRAME, (frame, message[:200])
            return frame
        assert isinstance(frame, Response) and kind == "request" and frame.id == detail, (frame, message[:200])
        return frame


# -- the console's frames ------------------------------------------------------------------

METHOD_NAMES = [*sorted(METHODS), "action"]
ACTION_KEYS = ["action", "task", "sid", "tag", "ttl", "priority", "args", "state", "task_id"]


class ConsoleFrames:
    """Requests for every console method with its own fields (ordinary and hostile values),
    unknown methods and keys, wrong field types, other frame types, and raw garbage."""

    def __init__(self, rng: random.Random, codec: Codec, agent_id: str) -> None:
        self.rng = rng
        self.codec = codec
        self.values = Values(rng, codec.binary)
        self.sane = {"agent": agent_id, "agent_id": agent_id, "tag": "web", "command": "record --n 1",
                     "all": True, "task_id": 1, "name": "fuzzed", "every": 60.0, "ttl": 60, "timeout": 0.1}

    def value_for(self, name: str) -> Any:
        if name in self.sane and self.rng.random() < 0.5:
            return self.sane[name]
        return self.values.any()

    def params(self, method: str) -> Any:
        rng = self.rng
        if method == "action":
            keys = rng.sample(ACTION_KEYS, rng.randrange(1, 5))
            obj = {k: self.value_for(k) for k in keys}
            if rng.random() < 0.7:
                obj["action"] = rng.choice(["task", "list", "untask", *NASTY_TEXT[:3]])
            if obj.get("action") == "task" and rng.random() < 0.5:
                obj["task"] = "record --fuzzed 1"
            return obj
        names = list(msgspec.structs.fields(METHODS[method].params)) if method in METHODS else []
        params = {f.name: self.value_for(f.name) for f in names if rng.random() < 0.6}
        if rng.random() < 0.15:
            params[self.values.text()[:30]] = self.values.any()  # a key the method does not take
        if method == "task.wait":
            timeout = params.get("timeout")
            if timeout is None or (isinstance(timeout, int | float) and not timeout <= 0.2):
                params["timeout"] = 0.1  # a real wait is bounded; a refused one is not waited for
        return params

    def request(self, rid: int) -> bytes | str:
        rng = self.rng
        method = rng.choice(METHOD_NAMES) if rng.random() < 0.9 else self.values.text()[:100]
        obj: dict[str, Any] = {"t": "req", "id": rid, "method": method, "params": self.params(method)}
        if rng.random() < 0.1:  # the frame's own fields of the wrong type, or missing
            field = rng.choice(["id", "method", "params"])
            if rng.random() < 0.5:
                obj[field] = self.values.any()
            else:
                del obj[field]
        return fit(self.codec, obj, lambda: {"t": "req", "id": rid, "method": method, "params": {}})

    def garbage(self, rid: int) -> bytes | str:
        rng, values = self.rng, self.values
        match rng.randrange(7):
            case 0:
                return rng.randbytes(rng.randrange(1, 200))
            case 1:
                return values.text()[:MAX_MESSAGE // 4] or "x"
            case 2:
                return fit(self.codec, values.any(), lambda: [])  # a value that is no frame
            case 3:  # a frame a console may not send, or a tag no frame has
                tag = rng.choice(["ack", "progress", "result", "hello", "enroll", "batch", "res", "welcome",
                                  "teleport"])
                return fit(self.codec, {"t": tag, **{k: values.any() for k in rng.sample(
                    ["delivery_ids", "delivery_id", "ok", "role", "version", "frames", "id"], 2)}}, dict)
            case 4:
                return (encode(JSON, {"t": "req", "id": rid, "method": "agents.list"}))[:rng.randrange(1, 30)]
            case 5:  # params nested beyond the decoders' recursion limit
                return too_deep(self.codec, {"t": "req", "id": rid, "method": "task.create", "params": {
                    "command": "record", "all": True, "args": {"deep": None}}}, "deep", rng.choice([1_000, 100_000]))
            case _:
                return encode(JSON if self.codec.binary else MSGPACK, {"t": "req", "id": rid,
                                                                       "method": "agents.list"})


# -- fixtures and the health check -----------------------------------------------------------


@contextmanager
def session(tetherd: Tetherd, codec: Codec, hello: Hello) -> Iterator[ClientConnection]:
    with connect(tetherd.url, max_size=None) as ws:
        ws.send(codec.encode(hello), text=not codec.binary)
        welcome = decode_from_daemon(ws.recv(timeout=10))
        assert isinstance(welcome, Welcome), welcome
        yield ws


def cli_credential(tetherd: Tetherd, *args: str) -> dict[str, Any]:
    out = subprocess.run([str(BIN / "tetherd"), *args, "--data-dir", str(tetherd.data_dir), "--json"],
                         capture_output=True, text=True, check=True, env=tetherd.env, timeout=60).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def assert_daemon_healthy(tetherd: Tetherd, tmp_agent: Callable[[str], AgentProc]) -> None:
    """After the fuzzing, what a user does next works: tetherctl lists and tasks, a new agent
    enrolls (with a new key and token, in case the fuzzing revoked the first ones) and runs
    its task; and tetherd logged no crash."""
    tetherd.admin_token = cli_credential(tetherd, "token", "create", "--role", "admin")["token"]
    tetherd.enroll_key = cli_credential(tetherd, "key", "create")["key"]
    rc, agents = tetherd.ctl("agents")
    assert rc == 0 and isinstance(agents, list)
    agent = tmp_agent("after-fuzz")
    task_id = tetherd.task("record --after fuzz", "--agent", agent.agent_id)
    assert tetherd.ctl("wait", str(task_id), "--timeout", "30")[0] == 0
    assert tetherd.show(task_id)["deliveries"][0]["result"] == {"recorded": {"after": "fuzz"}}
    assert tetherd.log is not None
    log = tetherd.log.text()
    for crash in CRASHES:
        assert crash not in log, f"tetherd logged {crash}:\n{log[log.find(crash) - 2000:log.find(crash) + 2000]}"


@pytest.fixture
def started_agent(make_agent: Callable[..., AgentProc]) -> Callable[[str], AgentProc]:
    return lambda name: make_agent(name, "web", start=True)


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec_name", CODECS)
def test_a_console_session_survives_hundreds_of_fuzzed_frames(
    tetherd: Tetherd, started_agent: Callable[[str], AgentProc], codec_name: str, fault_log: Callable[..., None],
) -> None:
    codec = CODECS[codec_name]
    rng = random.Random(f"{SEED}-console-{codec_name}")
    target = started_agent("target")
    frames = ConsoleFrames(rng, codec, target.agent_id)
    answered: dict[str, int] = {"Response": 0, "Error": 0}
    with session(tetherd, codec, Hello(role="console", version=PROTOCOL_VERSION, token=tetherd.admin_token)) as ws:
        for i in range(FRAMES):
            message = frames.request(1000 + i) if rng.random() < 0.75 else frames.garbage(1000 + i)
            answered[type(answer(ws, message)).__name__] += 1
        # The session is still open and still answers properly (the target is listed, removed or not).
        last = answer(ws, encode(codec, {"t": "req", "id": 7, "method": "agents.list", "params": {"all": True}}))
        assert isinstance(last, Response) and target.agent_id in {a["agent_id"] for a in last.result}
    assert answered["Response"] >= FRAMES // 20, answered  # some requests got past the checks to the handlers
    assert target.proc is not None
    if target.proc.poll() is None:
        target.kill()
    else:
        target.wait_exit()  # the fuzzing revoked or removed it (agent.revoke, agent.rm): it stopped, as it should
    assert_daemon_healthy(tetherd, started_agent)
    fault_log("Hostile input", f"one {codec_name.upper()} console session: fuzzed requests of every method "
              "(hostile params, wrong field types, unknown methods) and raw garbage, frames a console may not "
              "send, values nested past the decoders' limit", FRAMES,
              "each answered by a response or an error with a registered request code about it; the session "
              "stays open; then tetherctl and a new agent work, and tetherd logged no traceback")


def journal_identity(agent: AgentProc) -> tuple[str, str]:
    with closing(sqlite3.connect(agent.state_dir / "journal.sqlite")) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            if "token" in cols and "agent_id" in cols:
                agent_id, token = conn.execute(f"SELECT agent_id, token FROM {table}").fetchone()
                return agent_id, token
    raise AssertionError("no identity in the agent journal")


class AgentFrames:
    """What an agent sends (ack, progress, result, batches of them) about its real
    deliveries and others, with hostile fields, outputs and schedules; frames an agent may
    not send; and raw garbage."""

    def __init__(self, rng: random.Random, delivery_ids: list[int]) -> None:
        self.rng = rng
        self.values = Values(rng, binary=True)
        self.delivery_ids = delivery_ids

    def delivery_id(self) -> Any:
        rng = self.rng
        pick = rng.random()
        if pick < 0.5:
            return rng.choice(self.delivery_ids)
        return rng.choice([0, -1, 10**6, 2**63 - 1, 2**63, 2**64 - 1]) if pick < 0.9 else self.values.any()

    def run(self) -> Any:
        return self.rng.choice([1, 1, 1, 2, 0, -1, 2**63, 2**64 - 1])

    def frame(self) -> dict[str, Any]:
        rng, values = self.rng, self.values
        kind = rng.choice(["ack", "progress", "result", "result", "req", "hello", "enroll", "teleport"])
        if kind == "ack":
            ids = [self.delivery_id() for _ in range(rng.randrange(1, 5))]
            frame: dict[str, Any] = {"t": "ack", "delivery_ids": ids}
            if rng.random() < 0.3:
                frame["runs"] = [self.run() for _ in ids] if rng.random() < 0.8 else [1]
        elif kind == "progress":
            frame = {"t": "progress", "delivery_id": self.delivery_id(), "run": self.run(),
                     "percent": rng.choice([None, 50.0, math.nan, math.inf, -1e308, 1e308]),
                     "message": values.text()[:10_000]}
        elif kind == "result":
            frame = {"t": "result", "delivery_id": self.delivery_id(), "ok": rng.random() < 0.7,
                     "output": values.any(), "error": values.text()[:10_000], "run": self.run(),
                     "started_at": values.number(), "finished_at": values.number()}
            if rng.random() < 0.4:
                frame["schedule"] = {
                    "command": rng.choice(["record", "", " ", values.text()[:1000]]),
                    "next_run_in_seconds": values.number(), "timeout_in_seconds": rng.choice([None, values.number()]),
                    "args": {"n": values.any()}, "poll_message": values.text()[:1000]}
        elif kind == "req":
            frame = {"t": "req", "id": rng.randrange(2**31), "method": rng.choice(METHOD_NAMES)}
        else:
            frame = {"t": kind, "version": PROTOCOL_VERSION, "role": "agent", "key": "x"}
        if rng.random() < 0.1:  # a field of the wrong type
            frame[rng.choice([k for k in frame if k != "t"] or ["t"])] = values.any()
        return frame

    def message(self) -> bytes | str:
        rng = self.rng
        pick = rng.random()
        if pick < 0.6:
            return fit(MSGPACK, self.frame(), lambda: {"t": "ack", "delivery_ids": [1]})
        if pick < 0.75:  # a batch: encoded frames, some of them garbage or nested batches
            parts = [msgspec.Raw(msgspec.msgpack.encode(self.frame())) for _ in range(rng.randrange(1, 6))]
            parts.append(msgspec.Raw(msgspec.msgpack.encode(rng.choice([{"t": "batch", "frames": []},
                                                                        {"t": "nope"}, 7]))))
            rng.shuffle(parts)
            return fit(MSGPACK, {"t": "batch", "frames": parts}, lambda: {"t": "batch", "frames": []})
        if pick < 0.8:  # a JSON text frame in a MessagePack session
            return json.dumps(self.frame() | {"output": {"json": "text"}}, default=repr)
        if pick < 0.9:
            return rng.randbytes(rng.randrange(1, 300))
        # Nested about as deep as tetherd's decoder reads, and deeper: the output passes
        # through as MessagePack (and is shown to consoles later); a schedule's args are decoded.
        where = rng.choice(["output", "args"])
        frame = {"t": "result", "delivery_id": rng.choice(self.delivery_ids), "ok": True, "run": 1, "output": None}
        if where == "args":
            frame["schedule"] = {"command": "record", "next_run_in_seconds": 1.0, "args": {"deep": None}}
        return too_deep(MSGPACK, frame, "output" if where == "output" else "deep",
                        rng.choice([960, 975, 980, 985, 990, 5_000, 100_000]))


def test_an_agent_session_survives_hundreds_of_fuzzed_frames(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], started_agent: Callable[[str], AgentProc],
    fault_log: Callable[..., None],
) -> None:
    victim = make_agent("fuzzing", "web")  # enrolled, never started: this test speaks for it
    task_ids = [tetherd.task(f"record --i {i}", "--agent", victim.agent_id) for i in range(TASKS)]
    agent_id, token = journal_identity(victim)
    rng = random.Random(f"{SEED}-agent")
    errors: list[Error] = []
    hello = Hello(role="agent", version=PROTOCOL_VERSION, agent_id=agent_id, token=token, hostname="fuzz",
                  commands=["record"], features=["batch"])
    with session(tetherd, MSGPACK, hello) as ws:

        def drain(until: Callable[[Frame], bool] | None = None, timeout: float = 0.005) -> list[Frame]:
            """What tetherd sent meanwhile; every error a registered request error."""
            got: list[Frame] = []
            while True:
                try:
                    data = ws.recv(timeout=timeout if until is None else ANSWER_TIMEOUT)
                except TimeoutError:
                    if until is not None:
                        raise AssertionError(f"tetherd did not answer; got {got!r}") from None
                    return got
                except ConnectionClosed:
                    raise AssertionError(f"tetherd closed the agent session: {ws.close_code} {got!r}") from None
                frame = decode_from_daemon(data)
                frames = [decode_from_daemon(bytes(b)) for b in frame.frames] if isinstance(frame, Batch) else [frame]
                for f in frames:
                    if isinstance(f, Error):
                        assert_registered_request_error(f)
                        errors.append(f)
                got += frames
                if until is not None and any(until(f) for f in frames):
                    return got

        pushed = [f for f in drain(lambda f: isinstance(f, Task) and f.task_id == task_ids[-1]) if isinstance(f, Task)]
        frames = AgentFrames(rng, [t.delivery_id for t in pushed])
        for _ in range(FRAMES):
            message = frames.message()
            ws.send(message, text=isinstance(message, str))
            drain()
        # Still open, and still answering: an agent may not send console requests.
        ws.send(MSGPACK.encode(Request(id=4242, method="agents.list")))
        drain(lambda f: isinstance(f, Error) and f.ref == 4242 and f.code == ErrorCode.FORBIDDEN)
    assert len(errors) >= FRAMES // 10, errors[:5]  # the garbage was answered, not ignored
    assert {e.code for e in errors} >= {ErrorCode.MALFORMED_FRAME, ErrorCode.INVALID_FRAME, ErrorCode.FORBIDDEN}
    for task_id in task_ids:  # whatever the agent reported, a JSON console can read every task back
        view = tetherd.show(task_id, "--history")
        assert view["task_id"] == task_id and view["deliveries"][0]["agent_id"] == agent_id
    assert_daemon_healthy(tetherd, started_agent)
    fault_log("Hostile input", f"one agent session holding {TASKS} deliveries: fuzzed ack, progress and result "
              "frames (hostile ids, runs, times, outputs and schedules), batches with garbage inside, frames an "
              "agent may not send, raw garbage, outputs nested about as deep as the decoder reads", FRAMES,
              "every error has a registered request code; the session stays open; every task can still be "
              "shown to a JSON console; then tetherctl and a new agent work, and tetherd logged no traceback")


SIZED = [0, 1, 63, 64, 65, 1023, 1024, 1025, 4095, 4096, 4097, 65_535, 65_536, 65_537, 200_000]
"""Lengths around tether's bounds (MAX_BATCH_FRAMES 1,024, MAX_IDS 4,096, MAX_HOLDING and
MAX_MESSAGE_WEIGHT 65,536) and past them."""


def sized_message(rng: random.Random, delivery_ids: list[int]) -> bytes:
    """One agent message whose batch, id list or runs list is of a drawn size (capped to fit
    the frame limit): a batch of tiny frames, a batch of acks, an ack, an ack whose runs do
    not match its ids, a progress or result batch."""
    size = rng.choice(SIZED)
    ids = [rng.choice([*delivery_ids, 0, 10**6]) for _ in range(min(size, 4097))] + [1] * max(0, size - 4097)
    match rng.randrange(5):
        case 0:
            inner = rng.choice([b"\xc0", msgspec.msgpack.encode({"t": "ack", "delivery_ids": []})])
            obj: Any = {"t": "batch", "frames": [msgspec.Raw(inner)] * size}
        case 1:
            per = rng.choice([1, 63, 64, 65, 4096])
            obj = {"t": "batch", "frames": [msgspec.Raw(msgspec.msgpack.encode(
                {"t": "ack", "delivery_ids": ids[:per]}))] * max(1, min(size, 1025))}
        case 2:
            obj = {"t": "ack", "delivery_ids": ids}
        case 3:
            obj = {"t": "ack", "delivery_ids": ids, "runs": [1] * rng.choice([0, max(0, len(ids) - 1), len(ids)])}
        case _:
            kind = rng.choice([{"t": "progress", "delivery_id": rng.choice(delivery_ids), "message": "x"},
                               {"t": "result", "delivery_id": 10**6, "ok": True}])
            obj = {"t": "batch", "frames": [msgspec.Raw(msgspec.msgpack.encode(kind))] * size}
    data: bytes = msgspec.msgpack.encode(obj)
    return data if len(data) <= MAX_MESSAGE else msgspec.msgpack.encode({"t": "ack", "delivery_ids": ids[:1000]})


def test_an_agent_session_survives_batches_and_lists_of_every_size(
    tetherd: Tetherd, make_agent: Callable[..., AgentProc], started_agent: Callable[[str], AgentProc],
    fault_log: Callable[..., None],
) -> None:
    """Batches of 0 to 200,000 frames and id lists of 0 to 200,000 ids, around every bound,
    one message at a time; after each, a bystander console is answered within a second."""
    victim = make_agent("sized", "web")
    task_ids = [tetherd.task(f"record --i {i}", "--agent", victim.agent_id) for i in range(TASKS)]
    agent_id, token = journal_identity(victim)
    rng = random.Random(f"{SEED}-sized")
    hello = Hello(role="agent", version=PROTOCOL_VERSION, agent_id=agent_id, token=token, hostname="sized",
                  commands=["record"], features=["batch"])
    console_hello = Hello(role="console", version=PROTOCOL_VERSION, token=tetherd.admin_token)
    sent = 0
    with session(tetherd, MSGPACK, hello) as ws, session(tetherd, MSGPACK, console_hello) as bystander:
        pushed: list[int] = []
        while len(pushed) < TASKS:
            frame = decode_from_daemon(ws.recv(timeout=ANSWER_TIMEOUT))
            inner = [decode_from_daemon(bytes(b)) for b in frame.frames] if isinstance(frame, Batch) else [frame]
            pushed += [f.delivery_id for f in inner if isinstance(f, Task)]
        for i in range(60):
            ws.send(sized_message(rng, pushed))
            sent += 1
            started = time.monotonic()
            answer(bystander, encode(MSGPACK, {"t": "req", "id": 5000 + i, "method": "agents.list", "params": {}}))
            waited = time.monotonic() - started
            assert waited < 1.0, f"the bystander waited {waited:.2f} s after message {i}"
            while True:  # whatever tetherd said to the agent meanwhile: registered request errors only
                try:
                    data = ws.recv(timeout=0.01)
                except TimeoutError:
                    break
                frame = decode_from_daemon(data)
                for f in [decode_from_daemon(bytes(b)) for b in frame.frames] if isinstance(frame, Batch) else [frame]:
                    if isinstance(f, Error):
                        assert_registered_request_error(f)
        ws.send(MSGPACK.encode(Request(id=4242, method="agents.list")))
        while not (isinstance(f := decode_from_daemon(ws.recv(timeout=ANSWER_TIMEOUT)), Error) and f.ref == 4242):
            pass
    for task_id in task_ids:
        assert tetherd.show(task_id)["task_id"] == task_id
    assert_daemon_healthy(tetherd, started_agent)
    fault_log("Hostile input", "one agent session: batches of 0 to 200,000 frames, acks of 0 to 200,000 ids, runs "
              "lists that do not match, batches of acks past 65,536 ids, around every bound", sent,
              "a bystander console answered within 1 s after each; every error a registered request code; the "
              "session stays open; then tetherctl and a new agent work, and tetherd logged no traceback")
