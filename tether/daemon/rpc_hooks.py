"""Console RPC of the automation hooks (``hook.*``, :mod:`tether.protocol.methods`): bound to
their methods by :mod:`.rpc` (``HANDLERS``). A write is an operation (:mod:`.operations`);
nothing answered shows a hook's secret."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol import methods
from ..protocol.errors import ErrorCode, ProtocolError
from ..protocol.hooks import (
    Fingerprint,
    HookAdd,
    HookFingerprint,
    HookName,
    HookRemoved,
    HookRuns,
    normal_fingerprint,
)
from .hook_actions import ScriptRefused, fingerprint_of, script_path
from .hooks import run_view, view
from .store.hook_records import HookRecord

FINGERPRINT_TIMEOUT = 10.0


def _hooks(rpc: Any) -> Any:
    hooks = rpc.operations.hooks
    if hooks is None:
        raise ProtocolError(ErrorCode.INTERNAL, "automation hooks are not running in this tetherd")
    return hooks


async def _view(rpc: Any, record: HookRecord) -> Any:
    pending = (await rpc.store.hook_pending()).get(record.name, 0)
    last = await rpc.store.hook_runs(record.name, 1)
    return view(record, pending, last[0] if last else None)


async def hook_add(rpc: Any, p: HookAdd, emit: Any) -> Any:
    if p.script is not None and rpc.operations.hooks is not None:
        try:
            script_path(rpc.operations.hooks.scripts, p.script)
        except ScriptRefused as exc:
            raise ProtocolError(ErrorCode.UNKNOWN_SCRIPT, str(exc)) from None
    target = p.script if p.script is not None else p.url if p.url is not None else ",".join(p.email or [])
    record = HookRecord(
        name=p.name, trigger=p.trigger, action=p.action, target=target, timeout=p.timeout, on_timeout=p.on_timeout,
        enabled=p.enabled, fingerprint=normal_fingerprint(p.fingerprint) if p.fingerprint else "",
        secret=p.secret or "", subject=p.subject or "", body=p.body or "", data=p.data, tags=sorted(set(p.tags)),
        description=p.description, created_at=rpc.clock.time())
    return view(await rpc.operations.add_hook(record))


async def hook_list(rpc: Any, p: Any, emit: Any) -> Any:
    pending = await rpc.store.hook_pending()
    return [view(h, pending.get(h.name, 0)) for h in await rpc.store.list_hooks()]


async def _record(rpc: Any, name: str) -> HookRecord:
    for hook in await rpc.store.list_hooks():
        if hook.name == name:
            return hook  # type: ignore[no-any-return]
    raise ProtocolError(ErrorCode.UNKNOWN_HOOK, f"no hook named {name!r} (see: tetherctl hooks list)")


async def hook_get(rpc: Any, p: HookName, emit: Any) -> Any:
    return await _view(rpc, await _record(rpc, p.name))


async def hook_enable(rpc: Any, p: HookName, emit: Any) -> Any:
    return await _view(rpc, await rpc.operations.set_hook_enabled(p.name, True))


async def hook_disable(rpc: Any, p: HookName, emit: Any) -> Any:
    return await _view(rpc, await rpc.operations.set_hook_enabled(p.name, False))


async def hook_rm(rpc: Any, p: HookName, emit: Any) -> Any:
    return HookRemoved(name=p.name, pending_dropped=await rpc.operations.remove_hook(p.name))


async def hook_test(rpc: Any, p: HookName, emit: Any) -> Any:
    return await _hooks(rpc).test(p.name)


async def hook_runs(rpc: Any, p: HookRuns, emit: Any) -> Any:
    await _record(rpc, p.name)
    return [run_view(r) for r in await rpc.store.hook_runs(p.name, p.limit)]


async def hook_fingerprint(rpc: Any, p: HookFingerprint, emit: Any) -> Any:
    try:
        digest = await fingerprint_of(p.url, FINGERPRINT_TIMEOUT)
    except TimeoutError:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{p.url}: no TLS handshake within {FINGERPRINT_TIMEOUT:g} s") \
            from None
    except OSError as exc:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{p.url}: cannot get its certificate: {exc}") from None
    return Fingerprint(url=p.url, sha256=digest)


HANDLERS: list[tuple[methods.Method, Callable[[Any, Any, Any], Awaitable[Any]]]] = [
    (methods.HOOK_ADD, hook_add), (methods.HOOK_LIST, hook_list), (methods.HOOK_GET, hook_get),
    (methods.HOOK_ENABLE, hook_enable), (methods.HOOK_DISABLE, hook_disable), (methods.HOOK_RM, hook_rm),
    (methods.HOOK_TEST, hook_test), (methods.HOOK_RUNS, hook_runs), (methods.HOOK_FINGERPRINT, hook_fingerprint),
]
"""Each hook method's handler, bound by :mod:`.rpc`."""
