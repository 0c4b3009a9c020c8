"""The console methods are declared once (tether.protocol.methods); Bindings holds one
implementation of each for one side, refuses a second and names the methods without one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.console import ROLES, Nothing, Params, View
from tether.protocol.methods import METHODS, TASK_CREATE, TASK_WAIT, TOKEN_LIST, Bindings, Method, find


def _declare_extra(monkeypatch: pytest.MonkeyPatch) -> Method:
    """A method declared after the sides were bound (as a new declaration in methods.py is,
    before anyone writes its handler or renderer)."""
    extra = Method(name="fleet.report", params=Nothing, result=Nothing, role="viewer", summary="A report.")
    monkeypatch.setitem(METHODS, extra.name, extra)
    return extra


def test_every_method_is_declared_whole() -> None:
    for name, method in METHODS.items():
        assert method.name == name and find(name) is method
        assert issubclass(method.params, Params)
        assert method.role in ROLES and method.summary.endswith(".")
        result = method.result.__args__[0] if hasattr(method.result, "__args__") else method.result
        assert issubclass(result, View), name
        msgspec.json.schema(method.result)  # a type the docs can describe
    assert TASK_WAIT.events and not TASK_CREATE.events


def test_find_names_the_known_methods() -> None:
    with pytest.raises(ProtocolError) as caught:
        find("task.delete")
    assert caught.value.code is ErrorCode.UNKNOWN_METHOD and "known: action, agent.approve" in caught.value.message


def test_bindings_hold_one_function_per_method() -> None:
    bindings: Bindings[Callable[..., Any]] = Bindings("renderer")

    @bindings(TASK_CREATE, TASK_WAIT)
    def both() -> None: ...

    assert bindings[TASK_CREATE] is both and bindings[TASK_WAIT] is both
    assert TASK_CREATE.name not in bindings.unbound() and TOKEN_LIST.name in bindings.unbound()
    assert len(bindings.unbound()) == len(METHODS) - 2


def test_a_second_binding_is_refused_by_name() -> None:
    bindings: Bindings[Callable[..., Any]] = Bindings("handler")

    @bindings(TASK_CREATE)
    def first() -> None: ...

    bindings(TASK_CREATE)(first)  # the same function again is the same binding
    with pytest.raises(ValueError, match=r"^task.create has two handlers: .*first and .*second$"):
        @bindings(TASK_CREATE)
        def second() -> None: ...


def test_a_method_declared_without_a_binding_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    bindings: Bindings[Callable[..., Any]] = Bindings("handler")
    for method in METHODS.values():
        bindings(method)(print)
    assert bindings.unbound() == []
    extra = _declare_extra(monkeypatch)
    assert bindings.unbound() == [extra.name]
