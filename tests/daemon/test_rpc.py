"""The console RPC (``daemon/rpc.py``): every method fuzzed with hostile params on a real SQLite store, and `task.wait` seeing a change that commits while it reads."""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from store_data import NOW, enrolled

from tether.daemon.clock import Handle, SystemClock
from tether.daemon.effects import Change, Effects
from tether.daemon.hooks import Hooks
from tether.daemon.operations import Operations
from tether.daemon.rpc import ConsoleRPC
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import JSON, MSGPACK, ErrorCode, ProtocolError, Response, decode_from_daemon
from tether.protocol.actions import action_to_request
from tether.protocol.cmdline import MAX_COMMAND_LINE
from tether.protocol.console import ROLES, DeliveryView, TaskView
from tether.protocol.lifecycle import DeliveryState
from tether.protocol.methods import METHODS
from tether.protocol.values import MAX_DEPTH


class _SnapshotStore:
    """get_task's snapshot is taken, then the change commits and is notified, then it returns."""

    def __init__(self) -> None:
        self.state = "running"
        self.gate: asyncio.Future[None] | None = None
        self.reading = asyncio.Event()

    async def get_task(self, task_id: int, history: bool = False, now: float | None = None) -> TaskView:
        snapshot = self.state
        self.reading.set()
        if self.gate is not None:
            await self.gate
            self.gate = None
        return TaskView(task_id=1, command="c", args={}, target="all", priority=1, ttl=60, created_at=0.0,
                        expires_at=60.0, state="active",
                        deliveries=[DeliveryView(delivery_id=1, agent_id="a", state=snapshot, updated_at=0.0)])


async def test_wait_sees_a_change_that_commits_while_it_reads() -> None:
    store = _SnapshotStore()
    operations = Operations(store, SystemClock())  # type: ignore[arg-type]
    rpc = ConsoleRPC(operations)
    emitted: list[Any] = []

    async def emit(topic: str, data: Any) -> None:
        emitted.append(data)

    first_read = asyncio.get_running_loop().create_future()
    store.gate = first_read
    waiter = asyncio.create_task(rpc.call("task.wait", {"task_id": 1, "timeout": 30}, emit))
    await asyncio.wait_for(store.reading.wait(), 5)  # the wait has registered and is reading
    store.state = "done"
    operations.apply(Effects(None, changes=[Change(1, 1, "a", "running", "done")]))
    first_read.set_result(None)  # the read returns its stale snapshot
    view = await asyncio.wait_for(waiter, 5)  # before the fix: only at the 30 s timeout
    assert view.deliveries[0].state == "done" and len(emitted) == 1


REQUEST_ERRORS = {code for code in ErrorCode if 1000 <= code < 2000} - {
    ErrorCode.INTERNAL,  # a bug in tetherd
    ErrorCode.STORAGE_UNAVAILABLE,  # this store is healthy: the input broke a store operation
}


WAIT_BOUND = 0.5


HELD_LOOP = 2.0


@dataclass
class World:
    """A daemon's RPC on a store with agents, tags, tasks and schedules to aim at."""

    runner: asyncio.Runner
    rpc: ConsoleRPC
    agents: list[str]
    task_ids: list[int]
    tags: tuple[str, ...] = ("web", "db")
    schedules: tuple[str, ...] = ("nightly", "every5")
    calls: int = 0


async def _noop_emit(topic: str, data: Any) -> None:
    assert topic in ("delivery", "task", "progress")


class FrozenClock:
    """The time stands at NOW (what the world was made at), but a wait lasts as long as it
    says: ``task.wait --timeout`` returns in time."""

    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return NOW

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        return asyncio.get_running_loop().call_later(max(0.0, when - NOW), callback)


async def _build(store: SQLiteStore) -> tuple[ConsoleRPC, list[str], list[int]]:
    await store.open()
    agents = [await enrolled(store, "a", "web"), await enrolled(store, "b", "db")]
    operations = Operations(store, FrozenClock())
    await Hooks(operations, scripts=Path(tempfile.gettempdir()) / "no-tether-scripts").load()  # as tetherd does
    rpc = ConsoleRPC(operations, min_interval=10.0)
    task_ids = []
    for target in ({"agent": agents[0]}, {"tag": "web"}, {"all": True}, {"agent": agents[1]}):
        created = await rpc.call("task.create", {"command": "record --n 1", **target}, _noop_emit)
        task_ids.append(created.task_id)
    await rpc.call("task.cancel", {"task_id": task_ids[-1]}, _noop_emit)  # one task that has finished
    await rpc.call("schedule.add", {"name": "nightly", "command": "record", "tag": "db", "cron": "0 3 * * *"},
                   _noop_emit)
    await rpc.call("schedule.add", {"name": "every5", "command": "record", "all": True, "every": 300.0},
                   _noop_emit)
    return rpc, agents, task_ids


@pytest.fixture
def world() -> Iterator[World]:
    """One store for every example of a test: hostile input must not wear it down."""
    store = SQLiteStore(":memory:")
    with asyncio.Runner() as runner:
        try:
            yield World(runner, *runner.run(_build(store)))
        finally:
            runner.run(store.close())


def still_serving(world: World) -> None:
    """What a user does next still works: create a task, read it back, list agents and schedules."""
    world.runner.run(_still_serving(world))


async def _still_serving(world: World) -> None:
    rpc = world.rpc
    agent = await enrolled(rpc.store, "after-fuzz", "web")  # type: ignore[arg-type]
    created = await rpc.call("task.create", {"command": "record --after fuzz", "agent": agent}, _noop_emit)
    view = await rpc.call("task.get", {"task_id": created.task_id}, _noop_emit)
    assert view.command == "record" and view.args == {"after": "fuzz"}
    assert [d.agent_id for d in view.deliveries] == [agent]
    assert agent in {a.agent_id for a in await rpc.call("agents.list", {"tag": "web"}, _noop_emit)}
    added = await rpc.call("schedule.add", {"name": "after-fuzz", "command": "record", "all": True, "every": 60},
                           _noop_emit)
    assert added.name in {s.name for s in await rpc.call("schedule.list", {}, _noop_emit)}
    waited = await rpc.call("task.wait", {"task_id": created.task_id, "timeout": 0}, _noop_emit)
    assert waited.deliveries[0].state == "queued"


BOUNDARY_INTS = st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1,
                                 2**64, 10**30, -(10**30), 10**4000])


INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers() | BOUNDARY_INTS


FLOATS = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1.7976931348623157e308])


NASTY_TEXT = st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e", "🦀", "\n\t", "--x",
                              "'unbalanced", '"', "\\", "*/0 * * * *", "../../etc/passwd", "%s%n", "null"])


HUGE_TEXT = st.sampled_from([1_000, 65_536, 1_000_000]).flatmap(
    lambda n: st.sampled_from(["x", "é", " ", "\x00", "'"]).map(lambda c: c * n))


TEXT = st.text() | st.text(st.characters(codec="utf-8"), max_size=200) | NASTY_TEXT | HUGE_TEXT


def deep(depth: int, leaf: Any, kind: str) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


DEEP = st.builds(deep, st.integers(min_value=MAX_DEPTH - 2, max_value=500), st.just(1), st.sampled_from(["list", "dict"]))


NON_JSON = st.sampled_from([b"bytes", msgspec.msgpack.Ext(1, b"x"), (1, 2), {1: "int key"}, {None: 1},
                            {(1, 2): "tuple key"}, {"\ud800": 1}, {1, 2}, object()])


SCALARS = st.none() | st.booleans() | INTS | FLOATS | TEXT


HOSTILE = st.recursive(
    SCALARS | NON_JSON,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=8,
) | DEEP


SANE_TEXT = st.text(st.characters(categories=["Ll", "Lu", "Nd"]), min_size=1, max_size=12)


SANE_JSON = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | SANE_TEXT,
                         lambda children: st.lists(children, max_size=3) | st.dictionaries(SANE_TEXT, children,
                                                                                          max_size=3),
                         max_leaves=6)


@dataclass
class Known:
    """Values for fields of these names: ones the daemon holds or accepts (``sane``), so
    requests get past the param checks to the handlers and the store, and ones at or just
    past the edge of what it accepts (``edge``)."""

    world: World

    def sane(self, name: str) -> list[Any] | None:
        w = self.world
        values: dict[str, list[Any]] = {
            "agent": w.agents, "agent_id": w.agents, "tag": list(w.tags), "tags": [[], ["web"], ["web", "db"]],
            "name": [*w.schedules, "fresh", "other"], "task_id": w.task_ids,
            "command": ["record", "record --n 2 --flag", "record 'quoted arg' --x=1"],
            "cron": ["*/5 * * * *", "0 3 * * 1-5"], "timezone": ["UTC", "Europe/Paris"],
            "state": ["pending", "all", *(s.value for s in DeliveryState)],
            "every": [60.0, 300], "timeout": [0, 0.01], "ttl": [1, 60], "priority": [0, 3], "limit": [1, 100],
            "expires_in": [60.0], "uses": [1, 5],
        }
        return values.get(name)

    def edge(self, name: str) -> list[Any] | None:
        values: dict[str, list[Any]] = {
            "task_id": [0, -1, 10**6, 2**63 - 1], "token_id": [0, 2**63 - 1], "key_id": [0, 2**63 - 1],
            "command": ["", "   ", "--flag-first", "'unbalanced", "x " * (MAX_COMMAND_LINE // 2 + 1)],
            "cron": ["0 0 30 2 *", "61 * * * *", "* * * *", "@reboot"], "timezone": ["Mars/Olympus", "", "\x00"],
            "name": ["", "has space", "n" * 129], "tag": ["", "has space", "t" * 129],
            "every": [9.99, 0, -1, 1e300], "timeout": [-1, -0.0], "ttl": [0, 10 * 365 * 86_400 + 1],
            "priority": [-1, 4], "limit": [0, 100_001], "expires_in": [0, -1, 1e300], "uses": [0, 2**40],
        }
        return values.get(name)


def typed(t: mi.Type, sane: bool = False) -> st.SearchStrategy[Any]:
    """Values of the type msgspec checks a field against: ordinary ones (``sane``), or any
    from ordinary to extreme."""
    match t:
        case mi.IntType():
            return st.integers(0, 100) if sane else INTS
        case mi.FloatType():
            return st.floats(0, 1000) if sane else FLOATS | INTS
        case mi.StrType():
            return SANE_TEXT if sane else TEXT
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.LiteralType(values=values):
            return st.sampled_from(values) if sane else st.sampled_from(values) | TEXT
        case mi.UnionType(types=types):
            return st.one_of([typed(x, sane) for x in types])
        case mi.ListType(item_type=item):
            return st.lists(typed(item, sane), max_size=4)
        case mi.DictType(key_type=key, value_type=value):
            return st.dictionaries(typed(key, sane), typed(value, sane), max_size=4)
        case mi.AnyType():
            return SANE_JSON if sane else HOSTILE
    raise NotImplementedError(f"no strategy for {t!r}: extend tests/daemon/test_rpc.py")


def _field_value(t: mi.Type, name: str, known: Known, mode: str) -> st.SearchStrategy[Any]:
    sane, edge = known.sane(name), known.edge(name)
    value = st.sampled_from(sane) if sane is not None else typed(t, sane=True)
    if mode == "sane":
        return value
    if edge is not None:
        value |= st.sampled_from(edge)
    return value if mode == "edge" else value | typed(t)


def well_typed(method: str, known: Known) -> st.SearchStrategy[dict[str, Any]]:
    """Params of the right shape for ``method``: each field of its Struct present or not,
    with a value of its type: all ordinary (``sane``), some at the edge of what is
    accepted, or anything of the type at all (``wild``)."""
    info = mi.type_info(METHODS[method].params)
    assert isinstance(info, mi.StructType)

    def params(mode: str) -> st.SearchStrategy[dict[str, Any]]:
        fields = {}
        for f in info.fields:
            value = _field_value(f.type, f.name, known, mode)
            fields[f.name] = value if f.required else st.just(msgspec.NODEFAULT) | value
        return st.fixed_dictionaries(fields).map(
            lambda kw: {k: v for k, v in kw.items() if v is not msgspec.NODEFAULT})

    return st.sampled_from(["sane", "edge", "wild"]).flatmap(params)


def field_names(method: str) -> list[str]:
    return [f.name for f in msgspec.structs.fields(METHODS[method].params)] if method in METHODS else []


def wrong_typed(method: str) -> st.SearchStrategy[Any]:
    """Params with fields of any type, unknown keys, or no object at all."""
    names = field_names(method)
    keys = (st.sampled_from(names) | TEXT) if names else TEXT
    return st.dictionaries(keys, HOSTILE, max_size=5) | HOSTILE


ACTION_FIELDS = {"task": ["task", "sid", "tag", "ttl", "priority", "args"], "list": ["sid", "tag", "state"],
                 "untask": ["task_id", "sid", "tag"]}


def actions(known: Known) -> st.SearchStrategy[Any]:
    """LimaCharlie-style action objects: each action with its own fields (ordinary values,
    or any), with other actions' fields, and things that are no action at all."""
    w = known.world
    sane = {"task": st.sampled_from(["record", "record --n 3", "os_version"]), "sid": st.sampled_from(w.agents),
            "tag": st.sampled_from(w.tags), "ttl": st.sampled_from([1, 3600]),
            "priority": st.sampled_from(["low", "urgent", 0, 3]), "args": st.dictionaries(SANE_TEXT, SANE_JSON,
                                                                                          max_size=3),
            "state": st.sampled_from(["pending", "all", "queued"]), "task_id": st.sampled_from(w.task_ids)}

    def own(action: str, wild: bool) -> st.SearchStrategy[dict[str, Any]]:
        fields = {k: st.just(msgspec.NODEFAULT) | (sane[k] | HOSTILE if wild else sane[k])
                  for k in ACTION_FIELDS[action]}
        return st.fixed_dictionaries(fields).map(
            lambda kw: {"action": action, **{k: v for k, v in kw.items() if v is not msgspec.NODEFAULT}})

    every_key = sorted({k for keys in ACTION_FIELDS.values() for k in keys})
    mixed = st.builds(lambda action, rest: {**rest, "action": action},
                      st.sampled_from(sorted(ACTION_FIELDS)) | HOSTILE,
                      st.dictionaries(st.sampled_from(every_key) | TEXT, st.one_of(*sane.values()) | HOSTILE,
                                      max_size=5))
    return st.one_of(
        st.tuples(st.sampled_from(sorted(ACTION_FIELDS)), st.booleans()).flatmap(lambda aw: own(*aw)),
        mixed, HOSTILE)


@dataclass
class Outcome:
    result: Any = None
    error: ProtocolError | None = None
    waiting: bool = False


def _encodes_for_every_console(result: Any) -> None:
    """The server sends the result as a ``res`` frame in JSON or MessagePack: both must work."""
    for codec in (JSON, MSGPACK):
        data = codec.encode(Response(id=1, result=result))
        frame = decode_from_daemon(data if codec.binary else data.decode())
        assert isinstance(frame, Response) and frame.id == 1


def _translated(method: str, params: Any) -> str:
    """The method an ``action`` request runs as (for the role check)."""
    if method != "action":
        return method
    try:
        return action_to_request(params)[0]
    except ProtocolError:
        return method


def call(world: World, method: str, params: Any, role: str) -> Outcome:
    """Call once; fail on anything but a result or a registered request error."""

    async def go() -> Outcome:
        task = asyncio.ensure_future(world.rpc.call(method, params, _noop_emit, role))
        started = time.monotonic()
        done, _ = await asyncio.wait({task}, timeout=WAIT_BOUND)
        if not done and method not in ("task.wait", "task.watch"):  # a large value is checked in a thread: slower on a busy machine
            done, _ = await asyncio.wait({task}, timeout=HELD_LOOP - WAIT_BOUND)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            timeout = params.get("timeout") if isinstance(params, dict) else None
            assert method in ("task.wait", "task.watch") and (timeout is None or timeout > time.monotonic() - started - 0.25), \
                f"{method} still running after {HELD_LOOP} s"
            return Outcome(waiting=True)
        took = time.monotonic() - started
        assert took < HELD_LOOP, f"{method} held the event loop (every session) for {took:.1f} s"
        try:
            return Outcome(result=task.result())
        except ProtocolError as exc:
            return Outcome(error=exc)

    world.calls += 1
    outcome = world.runner.run(go())
    if outcome.error is not None:
        exc = outcome.error
        assert exc.code in REQUEST_ERRORS, f"{method}: {exc!r}"
        assert exc.message and "Traceback" not in exc.message
    elif not outcome.waiting:
        _encodes_for_every_console(outcome.result)
        if role == "viewer":
            assert METHODS[_translated(method, params)].role == "viewer", f"a viewer's {method} was carried out"
    return outcome


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


METHOD_NAMES = sorted(METHODS)


roles = st.sampled_from(ROLES)


INVARIANT = ("a result, or an error with a registered request code (never INTERNAL or storage unavailable); "
             "viewers never change anything; then tasks are created and read back as before")


def test_well_typed_random_params_for_every_method(world: World, fault_log: Callable[..., None]) -> None:
    known = Known(world)

    @fuzz(300)
    @given(data=st.data(), method=st.sampled_from(METHOD_NAMES), role=roles)
    def check(data: st.DataObject, method: str, role: str) -> None:
        call(world, method, data.draw(well_typed(method, known), label="params"), role)

    check()
    still_serving(world)
    fault_log("Hostile input", "console requests of every method with params of the right types and random, "
              "boundary or extreme values (huge ints and text, NaN, lone surrogates, deep nesting)", world.calls,
              INVARIANT)


def test_params_of_the_wrong_type_for_every_method(world: World, fault_log: Callable[..., None]) -> None:
    @fuzz(200)
    @given(data=st.data(), method=st.sampled_from([*METHOD_NAMES, "action"]), role=roles)
    def check(data: st.DataObject, method: str, role: str) -> None:
        params = data.draw(wrong_typed(method), label="params")
        outcome = call(world, method, params, role)
        if method in METHODS and (not isinstance(params, dict) or set(params) - set(field_names(method))):
            # Not an object, or a key the method does not take: refused, never guessed at.
            assert outcome.error is not None and outcome.error.code is ErrorCode.INVALID_PARAMS, outcome

    check()
    still_serving(world)
    fault_log("Hostile input", "console requests with params of the wrong types, unknown keys, or no object at all "
              "(MessagePack-only values too: binary, extension types, non-text keys)", world.calls,
              INVARIANT + "; an unknown key is refused by name")


def test_action_objects(world: World, fault_log: Callable[..., None]) -> None:
    @fuzz(200)
    @given(obj=actions(Known(world)), role=roles)
    @example(obj={"action": ["task"], "task": "record"}, role="admin")  # was a TypeError (unhashable): INTERNAL
    @example(obj={"action": "task", "task": "record", "args": {"n": 2**64}}, role="operator")
    def check(obj: Any, role: str) -> None:
        call(world, "action", obj, role)

    check()
    still_serving(world)
    fault_log("Hostile input", "LimaCharlie-style action objects, right and wrong", world.calls, INVARIANT)


def test_unknown_methods(world: World, fault_log: Callable[..., None]) -> None:
    @fuzz(60)
    @given(method=TEXT.filter(lambda m: m not in METHODS and m != "action"), params=wrong_typed(""), role=roles)
    @example(method="m_task_get", params={"task_id": 1}, role="admin")  # a handler's name is not a method
    @example(method="__init__", params={}, role="admin")
    def check(method: str, params: Any, role: str) -> None:
        outcome = call(world, method, params, role)
        assert outcome.error is not None and outcome.error.code is ErrorCode.UNKNOWN_METHOD

    check()
    still_serving(world)
    fault_log("Hostile input", "console requests naming no method (random and huge names, handler names)",
              world.calls, "unknown_method (1200), whatever the params")


SIZES = [0, 1, 63, 64, 65, 1023, 1024, 1025, 4096, 4097, 65_536, 65_537]


def sized_params(method: str, size: int, shape: str) -> dict[str, Any]:
    """Params of ``method`` whose list or object is ``size`` long: tags, args' keys, an
    args list, or an args list of empty lists (the costliest shape to decode and walk)."""
    if method == "key.create":
        return {"tags": [f"t{i}" for i in range(size)] if shape != "nested" else ["web"] * size}
    args = {f"k{i}": i for i in range(size)} if shape == "keys" else \
        {"list": [[] for _ in range(size)] if shape == "nested" else list(range(size))}
    if method == "action":
        return {"action": "task", "task": "record", "sid": "", "args": args}
    base: dict[str, Any] = {"command": "record", "all": True, "args": args}
    return {**base, "name": f"sized-{size}-{shape}", "every": 60.0} if method == "schedule.add" else base


def test_lists_and_objects_of_every_size_in_params(world: World, fault_log: Callable[..., None]) -> None:
    @fuzz(60)
    @given(method=st.sampled_from(["key.create", "task.create", "schedule.add", "action"]),
           size=st.sampled_from(SIZES), shape=st.sampled_from(["list", "keys", "nested"]), role=roles)
    @example(method="key.create", size=65, shape="list", role="admin")
    @example(method="task.create", size=65_537, shape="nested", role="operator")
    def check(method: str, size: int, shape: str, role: str) -> None:
        outcome = call(world, method, sized_params(method, size, shape), role)
        if method == "key.create" and role == "admin" and shape == "list" and size > 64:
            assert outcome.error is not None and outcome.error.code is ErrorCode.INVALID_PARAMS

    check()
    still_serving(world)
    fault_log("Hostile input", "console requests whose tags, args object or args list hold 0 to 65,537 "
              "entries (around every bound: 64, 1,024, 4,096, 65,536), of numbers or of empty lists", world.calls,
              INVARIANT + f"; every call ends within {HELD_LOOP:g} s")


def refused(world: World, method: str, params: Any, role: str = "admin") -> ProtocolError:
    outcome = call(world, method, params, role)
    assert outcome.error is not None, f"{method} {params!r} was accepted: {outcome.result!r}"
    return outcome.error


@pytest.mark.parametrize("method", ["task.get", "task.wait", "task.cancel"])
@pytest.mark.parametrize("task_id", [2**63, -(2**63) - 1, 10**30])
def test_an_id_beyond_64_bits_is_invalid_params(world: World, method: str, task_id: int) -> None:
    """Was an OverflowError from SQLite: an INTERNAL error (task.get, task.wait) or
    "storage unavailable" (task.cancel)."""
    exc = refused(world, method, {"task_id": task_id, "timeout": 0} if method == "task.wait" else {"task_id": task_id})
    assert exc.code is ErrorCode.INVALID_PARAMS and "beyond 64 bits at `$.task_id`" in exc.message


@pytest.mark.parametrize(("args", "where"), [
    ({"n": 2**64}, "$.args.n"),  # was "storage unavailable": MessagePack cannot hold it
    ({"blob": b"\x00"}, "$.args.blob"),
    ({"ext": msgspec.msgpack.Ext(1, b"x")}, "$.args.ext"),  # was kept, then no JSON console could read the task
    ({"m": {1: "x"}}, "$.args.m"),
    ({"f": math.nan}, "$.args.f"),
    ({"deep": deep(MAX_DEPTH - 1, 1, "list")}, "$.args.deep[0]"),  # params, args and 62 more: one too many
])
def test_args_that_are_not_json_are_refused_at_once(world: World, args: dict[str, Any], where: str) -> None:
    for method, params in (("task.create", {"command": "record", "all": True, "args": args}),
                           ("schedule.add", {"name": "s", "command": "record", "all": True, "every": 60, "args": args}),
                           ("action", {"action": "task", "task": "record", "args": args})):
        exc = refused(world, method, params)
        assert exc.code in {ErrorCode.INVALID_PARAMS, ErrorCode.INVALID_ACTION} and where in exc.message, exc


def test_args_nested_up_to_the_limit_are_kept_and_read_back(world: World) -> None:
    args = {"deep": deep(MAX_DEPTH - 2, "leaf", "dict")}  # params, args and 62 more: MAX_DEPTH in all
    created = call(world, "task.create", {"command": "record", "agent": world.agents[0], "args": args}, "admin")
    assert created.result is not None
    view = call(world, "task.get", {"task_id": created.result.task_id}, "viewer").result
    assert view.args == args


def test_a_value_nested_far_beyond_the_recursion_limit_is_refused_without_recursing(world: World) -> None:
    exc = refused(world, "task.create", {"command": "record", "all": True, "args": {"x": deep(100_000, 1, "list")}})
    assert exc.code is ErrorCode.INVALID_PARAMS and f"nested more than {MAX_DEPTH} deep" in exc.message


@pytest.mark.parametrize(("method", "params"), [
    ("task.create", {"command": "record", "agent": "x\ud800"}),
    ("task.create", {"command": "record \udfff", "all": True}),
    ("task.list", {"tag": "\udfff"}),  # was INTERNAL
    ("agents.list", {"tag": "\ud800"}),  # was INTERNAL
    ("tag.add", {"agent_id": "\ud800", "tag": "web"}),  # was "storage unavailable"
    ("schedule.get", {"name": "\ud800"}),  # was INTERNAL
    ("task.create", {"command": "record", "all": True, "args": {"\ud800": 1}}),
])
def test_text_that_is_not_unicode_is_invalid_params(world: World, method: str, params: dict[str, Any]) -> None:
    """A lone surrogate (only a Python caller can send one: the decoders refuse them) was a
    UnicodeEncodeError from SQLite."""
    exc = refused(world, method, params)
    assert exc.code is ErrorCode.INVALID_PARAMS and "not valid Unicode" in exc.message


@pytest.mark.parametrize("timeout", [math.nan, math.inf])
def test_a_wait_with_a_timeout_that_is_not_a_number_is_refused(world: World, timeout: float) -> None:
    """A NaN timeout waited forever on an unfinished task."""
    exc = refused(world, "task.wait", {"task_id": world.task_ids[0], "timeout": timeout})
    assert exc.code is ErrorCode.INVALID_PARAMS and "$.timeout" in exc.message


@pytest.mark.parametrize("action", [["task"], {"action": "task"}, 7, None])
def test_an_action_that_is_not_a_name_is_invalid_action(world: World, action: Any) -> None:
    """A list or object as the action was a TypeError (unhashable): INTERNAL."""
    exc = refused(world, "action", {"action": action, "task": "record"})
    assert exc.code is ErrorCode.INVALID_ACTION and "use one of task, list, untask" in exc.message


def test_a_megabyte_command_line_is_refused_quickly(world: World) -> None:
    """shlex took ~17 s on a 1 MB word, holding the event loop (every session) meanwhile."""
    started = time.monotonic()
    for line in ("record --data " + "x" * 1_000_000, "'" + "x" * (MAX_COMMAND_LINE + 1)):
        exc = refused(world, "task.create", {"command": line, "all": True})
        assert exc.code is ErrorCode.INVALID_PARAMS and f"the limit is {MAX_COMMAND_LINE}" in exc.message
        assert len(exc.message) < 200  # the line is not echoed back
    assert time.monotonic() - started < 1.0
    long_but_allowed = "record --data " + "x" * (MAX_COMMAND_LINE - 20)
    created = call(world, "task.create", {"command": long_but_allowed, "all": True}, "operator").result
    assert created is not None


WRITES: dict[str, dict[str, Any]] = {
    "tag.add": {"agent_id": "AGENT", "tag": "new"},
    "tag.rm": {"agent_id": "AGENT", "tag": "web"},
    "task.create": {"command": "record", "all": True},
    "task.cancel": {"tag": "web"},
    "schedule.add": {"name": "by-viewer", "command": "record", "all": True, "every": 60},
    "schedule.pause": {"name": "nightly"},
    "schedule.resume": {"name": "nightly"},
    "schedule.rm": {"name": "nightly"},
}


@pytest.mark.parametrize("method", sorted(WRITES))
def test_a_viewer_is_refused_every_write(world: World, method: str) -> None:
    params = {k: world.agents[0] if v == "AGENT" else v for k, v in WRITES[method].items()}
    assert refused(world, method, params, "viewer").code is ErrorCode.FORBIDDEN
    assert call(world, method, params, "operator").result is not None  # the same params are fine for an operator
