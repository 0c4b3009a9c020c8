"""The Store contract, run against every backend (the ``store`` fixture in conftest.py: SQLite
and the in-memory store). What only SQLite does is in ``test_sqlite.py``."""

from __future__ import annotations

import asyncio

import pytest
from store_data import NOW, created, enrolled, result, task, wheel

from tether.daemon.store import AgentAuth, StoreError
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import ErrorCode, ProtocolError


async def test_bootstrap_once(store: SQLiteStore) -> None:
    first = (await store.bootstrap(NOW)).result
    assert first is not None
    token, _ = first
    assert (await store.bootstrap(NOW)).result is None
    login = await store.admin_login(token)
    assert login is not None and login[1] == "admin"
    assert await store.admin_login(token + "x") is None


async def test_enroll_key_rules(store: SQLiteStore) -> None:
    await store.bootstrap(NOW)
    with pytest.raises(ProtocolError) as err:
        await store.enroll("AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", "u", "h", "p", [], NOW)
    assert err.value.code == ErrorCode.ENROLL_KEY_UNKNOWN
    expired = (await store.create_key([], NOW - 1, None, NOW - 10)).result.key
    with pytest.raises(ProtocolError) as err:
        await store.enroll(expired, "u", "h", "p", [], NOW)
    assert err.value.code == ErrorCode.ENROLL_KEY_EXPIRED
    once = (await store.create_key(["db"], None, 1, NOW, allow_requested_tags=True)).result.key
    e = (await store.enroll(once.lower().replace("-", ""), "u1", "h", "p", ["web"], NOW)).result  # typed sloppily
    assert e.tags == ["db", "web"]
    with pytest.raises(ProtocolError) as err:
        await store.enroll(once, "u2", "h", "p", [], NOW)
    assert err.value.code == ErrorCode.ENROLL_KEY_EXHAUSTED


async def test_only_proof_re_enrolls_an_agent_a_known_machine_uuid_makes_a_possible_clone(
    store: SQLiteStore,
) -> None:
    """15.1: the machine UUID is no secret; presenting a known one without the agent's token
    makes a new agent marked a possible clone, and the old agent's token keeps working."""
    _, key = (await store.bootstrap(NOW)).result or ("", "")
    first = (await store.enroll(key, "machine-1", "h", "p", [], NOW)).result
    assert (first.status, first.clone_of) == ("new", "")
    clone = (await store.enroll(key, "machine-1", "attacker", "p", [], NOW)).result
    assert clone.agent_id != first.agent_id and (clone.status, clone.clone_of) == ("new", first.agent_id)
    assert await store.authenticate_agent(first.agent_id, first.token) == AgentAuth(first.agent_id)
    assert await store.authenticate_agent(first.agent_id, clone.token) is None
    again = (await store.enroll(key, "machine-1", "h2", "p", [], NOW, proof=(first.agent_id, first.token))).result
    assert (again.agent_id, again.token, again.status, again.clone_of) == (first.agent_id, first.token, "existing", "")
    with pytest.raises(ProtocolError) as err:  # a wrong token proves nothing, and makes nothing either
        await store.enroll(key, "machine-1", "h", "p", [], NOW, proof=(first.agent_id, clone.token))
    assert err.value.code == ErrorCode.UNAUTHORIZED and first.agent_id in err.value.message
    other = (await store.enroll(key, "machine-2", "h", "p", [], NOW)).result
    assert other.clone_of == "" and other.agent_id not in (first.agent_id, clone.agent_id)
    agents = {a.agent_id: a for a in await store.list_agents(None)}
    assert agents[clone.agent_id].clone_of == first.agent_id and agents[first.agent_id].hostname == "h2"
    assert agents[first.agent_id].clone_of is None and len(agents) == 3


async def test_task_fans_out_and_reaches_later_agents_once(store: SQLiteStore) -> None:
    a = await enrolled(store, "a", "web")
    b = await enrolled(store, "b")
    task_id, items = await created(store.create_task(task("tag", "web"), NOW))
    assert [i.agent_id for i in items] == [a]
    later = (await store.tag_add(b, "web", NOW)).items
    assert [(i.agent_id, i.task_id) for i in later] == [(b, task_id)]
    assert (await store.tag_add(b, "web", NOW)).items == []  # each agent gets it once
    c = await enrolled(store, "c", "web")
    view = await store.get_task(task_id)
    assert view is not None and sorted(d.agent_id for d in view.deliveries) == sorted([a, b, c])
    all_id, all_items = await created(store.create_task(task("all"), NOW))
    assert len(all_items) == 3
    d = await enrolled(store, "d")
    assert [i.task_id for i in await store.pending_for_agent(d)] == [all_id]


async def test_an_unknown_agent_is_refused_and_a_tag_nobody_carries_yet_is_kept(store: SQLiteStore) -> None:
    await enrolled(store, "a", "web")
    with pytest.raises(ProtocolError) as err:
        await created(store.create_task(task("agent", "nobody"), NOW))
    assert err.value.code == ErrorCode.UNKNOWN_AGENT
    task_id, items = await created(store.create_task(task("tag", "none"), NOW))
    assert items == []
    b = await enrolled(store, "b", "none")  # enrolled later with the tag: it gets the task
    assert [i.task_id for i in await store.pending_for_agent(b)] == [task_id]
    with pytest.raises(ProtocolError):
        await store.cancel(task_id=12345, now=NOW)


async def test_pending_order_is_priority_then_oldest(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    ids = {}
    for name, prio in (("low", 0), ("urgent1", 3), ("medium", 1), ("urgent2", 3)):
        ids[name], _ = await created(store.create_task(task("agent", a, priority=prio), NOW))
    order = [i.task_id for i in await store.pending_for_agent(a)]
    assert order == [ids["urgent1"], ids["urgent2"], ids["medium"], ids["low"]]


async def test_a_queue_read_in_pages_is_the_whole_queue_in_push_order(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    await enrolled(store, "b")
    for n in range(23):  # priorities interleaved, so pages cut across them; some tasks for all
        await created(store.create_task(task("all" if n % 5 == 0 else "agent", "" if n % 5 == 0 else a, priority=(n * 7) % 4),
                                NOW))
    whole = await store.pending_for_agent(a)
    assert len(whole) == 23 and [-i.priority for i in whole] == sorted(-i.priority for i in whole)
    for size in (1, 4, 22, 23, 50):
        pages = [await store.pending_for_agent(a, limit=size)]
        while len(pages[-1]) == size:
            pages.append(await store.pending_for_agent(a, limit=size, after=pages[-1][-1]))
        assert [i for page in pages for i in page] == whole, size
    assert await store.pending_for_agent(a, after=whole[-1]) == []
    assert await store.pending_for_agent(a, after=whole[9]) == whole[10:]  # no limit: all the rest


async def test_lifecycle_and_illegal_transitions(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    b = await enrolled(store, "b")
    _, (item,) = await created(store.create_task(task("agent", a), NOW))
    d = item.delivery_id
    store.mark_sent([d], NOW)
    ack = await store.acknowledge(a, [(d, 1), (424242, 1)], NOW)
    assert [c.new for c in ack.changes] == ["acked"]
    assert [(r.delivery_id, r.code) for r in ack.refused] == [(424242, ErrorCode.UNKNOWN_DELIVERY)]
    foreign = await store.acknowledge(b, [(d, 1)], NOW)
    assert foreign.refused[0].code == ErrorCode.FORBIDDEN and not foreign.settled
    started = await store.started(a, (d, 1), "50% half", NOW)
    assert [c.new for c in started.changes] == ["running"]
    done = await store.record_results(a, [result(d, {"ok": 1})], NOW + 1)
    assert [c.new for c in done.changes] == ["done"] and done.settled == [(d, 1)]
    again = await store.record_results(a, [result(d, {"ok": 1})], NOW + 2)
    assert again.settled == [(d, 1)] and again.changes == []  # a re-sent result is idempotent
    ahead = await store.record_results(a, [result(d, {"ok": 2}, run=2)], NOW + 2)
    assert ahead.refused[0].code == ErrorCode.ILLEGAL_TRANSITION and "run 2 was never sent" in ahead.refused[0].message
    view = await store.get_task(item.task_id)
    assert view is not None
    (dv,) = view.deliveries
    assert (dv.state, dv.result, dv.progress) == ("done", {"ok": 1}, "50% half")
    assert (await store.cancel(task_id=item.task_id, now=NOW)).changes == []  # nothing left to cancel


async def test_result_for_a_cancelled_delivery_is_refused(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    task_id, (item,) = await created(store.create_task(task("agent", a), NOW))
    untasked = await store.cancel(task_id=task_id, now=NOW)
    assert [(c.old, c.new) for c in untasked.changes] == [("queued", "cancelled")] and untasked.result == (1, 1)
    assert untasked.withdraws == [(a, item.delivery_id, "cancelled")]
    out = await store.record_results(a, [result(item.delivery_id, 1)], NOW)
    assert out.refused[0].code == ErrorCode.ILLEGAL_TRANSITION and not out.settled


async def test_expiry_ends_only_undelivered(store: SQLiteStore) -> None:
    a = await enrolled(store, "a", "t")
    b = await enrolled(store, "b", "t")
    task_id, items = await created(store.create_task(task("tag", "t", ttl=5), NOW))
    by_agent = {i.agent_id: i.delivery_id for i in items}
    store.mark_sent([by_agent[a]], NOW)
    await store.acknowledge(a, [(by_agent[a], 1)], NOW)
    assert (await wheel(store)).expiries == [(task_id, NOW + 5, False)]  # a tag task: not one agent's
    expired = await store.expire_task(task_id, NOW + 5)
    assert [(c.agent_id, c.new) for c in expired.changes] == [(b, "expired")]
    assert expired.withdraws == [(b, by_agent[b], "expired")]  # its agent may hold the push
    assert (await wheel(store)).expiries == []
    c = await enrolled(store, "c", "t")  # after the ttl: not reached any more
    assert await store.pending_for_agent(c) == []


async def test_untask_by_agent_and_by_tag(store: SQLiteStore) -> None:
    a = await enrolled(store, "a", "t")
    b = await enrolled(store, "b")
    await created(store.create_task(task("agent", a), NOW))
    await created(store.create_task(task("agent", b), NOW))
    tag_task, _ = await created(store.create_task(task("tag", "t"), NOW))
    assert (await store.cancel(agent_id=b, now=NOW)).result == (1, 0)
    # the tag task and agent a's own task; the tag task is closed too
    assert (await store.cancel(tag="t", now=NOW)).result == (2, 1)
    assert (await store.tag_add(b, "t", NOW)).items == []  # the cancelled tag task no longer reaches new agents
    rows = await store.list_deliveries(agent_id=None, tag=None, states=["cancelled"], limit=10)
    assert len(rows) == 3
    view = await store.get_task(tag_task)
    assert view is not None and view.state == "cancelled"


async def test_writes_are_visible_only_when_committed_and_in_order(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    futures = [store.create_task(task("agent", a), NOW) for _ in range(50)]
    results = [e.result for e in await asyncio.gather(*futures)]
    assert results == sorted(results)
    assert len(await store.pending_for_agent(a)) == 50


async def test_a_refused_operation_does_not_undo_its_group(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    outcomes = await asyncio.gather(
        store.create_task(task("agent", a), NOW),
        store.create_task(task("agent", "nobody"), NOW),
        store.create_task(task("agent", a), NOW),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], ProtocolError) and outcomes[1].code == ErrorCode.UNKNOWN_AGENT
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(ok) == 2
    assert sorted(i.task_id for i in await store.pending_for_agent(a)) == sorted(e.result for e in ok)


async def test_huge_id_lists_from_a_peer_are_handled(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    _, (item,) = await created(store.create_task(task("agent", a), NOW))
    ids = [*range(10_000_000, 10_100_000), item.delivery_id]
    store.mark_sent(ids, NOW)
    out = await store.acknowledge(a, [(i, 1) for i in ids], NOW)
    assert out.settled == [(item.delivery_id, 1)]
    assert len(out.refused) == 100_000 and {r.code for r in out.refused} == {ErrorCode.UNKNOWN_DELIVERY}


async def test_an_agent_carries_at_most_64_tags(store: SQLiteStore) -> None:
    a = await enrolled(store, "a", *(f"t{i}" for i in range(60)))
    for i in range(60, 64):
        await store.tag_add(a, f"t{i}", NOW)
    await store.tag_add(a, "t0", NOW)  # one it carries already: nothing changes
    with pytest.raises(ProtocolError) as err:
        await store.tag_add(a, "one-more", NOW)
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert err.value.message == f"agent {a} would carry 65 tags; an agent carries at most 64"
    assert len((await store.list_agents(None))[0].tags) == 64


async def test_untask_of_a_task_for_some_agents_only_covers_those_not_reached_yet(store: SQLiteStore) -> None:
    """LimaCharlie's reliable delete (``sid`` and ``task_id``): that task for those agents only;
    an agent the task has not reached yet gets it as cancelled, so it never reaches it later."""
    a = await enrolled(store, "a", "web")
    b = await enrolled(store, "b", "web")
    task_id, items = await created(store.create_task(task("tag", "web"), NOW))
    by_agent = {i.agent_id: i.delivery_id for i in items}
    untasked = await store.cancel(task_id=task_id, agent_id=a, now=NOW + 1)
    assert [(c.agent_id, c.new) for c in untasked.changes] == [(a, "cancelled")] and untasked.result == (1, 0)
    assert untasked.withdraws == [(a, by_agent[a], "cancelled")]
    untasked = await store.cancel(task_id=task_id, tag="web", now=NOW + 2)  # b's now (a's ended already)
    assert [(c.agent_id, c.new) for c in untasked.changes] == [(b, "cancelled")]
    later = await enrolled(store, "c")  # not reached: no tag web yet
    assert (await store.cancel(task_id=task_id, agent_id=later, now=NOW + 3)).changes == []
    assert (await store.tag_add(later, "web", NOW + 4)).items == []  # it got the task as cancelled
    view = await store.get_task(task_id)
    assert view is not None and sorted((d.agent_id, d.state) for d in view.deliveries) == sorted(
        [(a, "cancelled"), (b, "cancelled"), (later, "cancelled")])
    with pytest.raises(ProtocolError) as err:
        await store.cancel(task_id=12345, agent_id=a, now=NOW)
    assert err.value.code == ErrorCode.UNKNOWN_TASK


async def test_an_untask_of_a_tag_nobody_carries_or_aims_at_is_refused(store: SQLiteStore) -> None:
    await enrolled(store, "a", "web")
    with pytest.raises(ProtocolError) as err:
        await store.cancel(tag="nothing", now=NOW)
    assert err.value.code == ErrorCode.UNKNOWN_TAG


async def test_what_the_daemon_ended_is_told_to_an_agent_that_comes_back_holding_it(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    b = await enrolled(store, "b")
    _, (held,) = await created(store.create_task(task("agent", a), NOW))
    _, (done,) = await created(store.create_task(task("agent", a), NOW))
    _, (other,) = await created(store.create_task(task("agent", b), NOW))
    await store.acknowledge(a, [(held.delivery_id, 1), (done.delivery_id, 1)], NOW)
    await store.record_results(a, [result(done.delivery_id, 1)], NOW)
    await store.cancel(agent_id=a, now=NOW + 1)
    await store.cancel(agent_id=b, now=NOW + 1)
    ids = [held.delivery_id, done.delivery_id, other.delivery_id, 2**70]
    assert await store.ended_by_daemon(a, ids) == [(held.delivery_id, "cancelled")]


async def test_a_closed_store_refuses_writes(store: SQLiteStore) -> None:
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.flush()
    with pytest.raises(StoreError, match="closed"):
        store.mark_sent([1], NOW)
    await store.open()  # the fixture closes it again
