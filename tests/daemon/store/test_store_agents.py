"""Agents' identities in the store (``store/sqlite_agents.py``): enrollment keys bound the
tags (15.4), possible clones are approved, merged or removed (15.1), a removed agent is in
no target any more. Run against every backend (the ``store`` fixture)."""

from __future__ import annotations

import msgspec
import pytest
from store_data import NOW, created, enrolled, task, wheel

from tether.daemon.store import AgentAuth
from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import ErrorCode, ProtocolError


async def refusal(store: SQLiteStore, coro: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        await coro  # type: ignore[misc]
    return caught.value


async def test_an_agent_gets_its_keys_tags_and_no_others_unless_the_key_allows(store: SQLiteStore) -> None:
    """15.4: a key made with --tag kiosk no longer enrolls an agent as prod, finance."""
    await store.bootstrap(NOW)
    kiosk = (await store.create_key(["kiosk"], None, 3, NOW)).result
    error = await refusal(store, store.enroll(kiosk.key, "m1", "h", "p", ["prod", "finance"], NOW))
    assert error.code == ErrorCode.ENROLL_TAGS_REFUSED and "finance, prod refused" in error.message
    assert await store.list_agents(None) == [] and (await store.list_keys())[-1].uses_left == 3  # nothing spent
    plain = (await store.enroll(kiosk.key, "m1", "h", "p", [], NOW)).result
    assert plain.tags == ["kiosk"]
    open_key = (await store.create_key(["kiosk"], None, None, NOW, allow_requested_tags=True)).result
    asked = (await store.enroll(open_key.key, "m2", "h", "p", ["web"], NOW)).result
    assert asked.tags == ["kiosk", "web"]
    assert [(k.key_id, k.allow_requested_tags) for k in await store.list_keys()] == [
        (1, False), (kiosk.key_id, False), (open_key.key_id, True)]


async def test_a_re_enrollment_changes_no_tags(store: SQLiteStore) -> None:
    await store.bootstrap(NOW)
    key = (await store.create_key(["web"], None, None, NOW, allow_requested_tags=True)).result
    first = (await store.enroll(key.key, "m1", "h", "p", [], NOW)).result
    other = (await store.create_key(["db"], None, None, NOW, allow_requested_tags=True)).result
    error = await refusal(store, store.enroll(other.key, "m1", "h", "p", ["prod"], NOW,
                                              proof=(first.agent_id, first.token)))
    assert error.code == ErrorCode.ENROLL_TAGS_REFUSED and "keeps its tags (web); prod refused" in error.message
    again = (await store.enroll(other.key, "m1", "h", "p", ["web"], NOW, proof=(first.agent_id, first.token))).result
    assert again.tags == ["web"] and [a.tags for a in await store.list_agents(None)] == [["web"]]


async def test_a_removed_agent_is_cut_off_its_deliveries_cancelled_and_in_no_target(store: SQLiteStore) -> None:
    await store.bootstrap(NOW)
    key = (await store.create_key(["web"], None, None, NOW)).result.key
    gone = (await store.enroll(key, "m1", "h1", "p", [], NOW)).result
    stays = (await store.enroll(key, "m2", "h2", "p", [], NOW)).result
    _, items = await created(store.create_task(task("tag", "web"), NOW))
    removed = await store.remove_agent(gone.agent_id, NOW + 1)
    assert [(c.agent_id, c.old, c.new) for c in removed.changes] == [(gone.agent_id, "queued", "cancelled")]
    assert [(a, reason) for a, _, reason in removed.withdraws] == [(gone.agent_id, "cancelled")]
    assert await store.authenticate_agent(gone.agent_id, gone.token) is None
    assert [a.agent_id for a in await store.list_agents(None)] == [stays.agent_id]
    listed = {a.agent_id: a for a in await store.list_agents(None, removed=True)}
    assert listed[gone.agent_id].removed_at == NOW + 1 and listed[gone.agent_id].tags == []
    assert not listed[gone.agent_id].revoked  # removed says more
    _, tagged = await created(store.create_task(task("tag", "web"), NOW))
    _, everyone = await created(store.create_task(task("all"), NOW))
    assert {i.agent_id for i in tagged + everyone} == {stays.agent_id}
    for call in (store.create_task(task("agent", gone.agent_id), NOW), store.tag_add(gone.agent_id, "x", NOW),
                 store.remove_agent(gone.agent_id, NOW), store.revoke_agent(gone.agent_id),
                 store.cancel(agent_id=gone.agent_id, now=NOW)):
        assert (await refusal(store, call)).code == ErrorCode.UNKNOWN_AGENT
    assert await store.agent_commands(gone.agent_id) is None
    assert len(items) == 2


async def test_a_possible_clone_is_approved_as_an_agent_of_its_own(store: SQLiteStore) -> None:
    _, key = (await store.bootstrap(NOW)).result or ("", "")
    original = (await store.enroll(key, "m1", "h", "p", [], NOW)).result
    clone = (await store.enroll(key, "m1", "h", "p", [], NOW)).result
    await store.approve_agent(clone.agent_id)
    assert [a.clone_of for a in await store.list_agents(None)] == [None, None]
    for agent_id in (clone.agent_id, original.agent_id):
        error = await refusal(store, store.approve_agent(agent_id))
        assert error.code == ErrorCode.INVALID_PARAMS and "is not marked a possible clone" in error.message


async def test_a_merged_clone_takes_over_the_identity_it_is_a_clone_of(store: SQLiteStore) -> None:
    await store.bootstrap(NOW)
    key = (await store.create_key(["web"], None, None, NOW)).result.key
    original = (await store.enroll(key, "m1", "old-host", "p", [], NOW)).result
    _, (kept,) = await created(store.create_task(task("agent", original.agent_id), NOW))
    clone = (await store.enroll(key, "m1", "new-host", "p", [], NOW)).result
    _, tagged = await created(store.create_task(task("tag", "web"), NOW))  # one delivery each
    assert (await refusal(store, store.merge_agent(original.agent_id, NOW))).code == ErrorCode.INVALID_PARAMS
    merged = await store.merge_agent(clone.agent_id, NOW + 1)
    assert merged.result == original.agent_id
    assert [(c.agent_id, c.new) for c in merged.changes] == [(clone.agent_id, "cancelled")]  # the clone's own tag task
    # The clone's token now logs in as the original (by either id); the original's old token is void.
    assert await store.authenticate_agent(original.agent_id, clone.token) == AgentAuth(original.agent_id)
    assert await store.authenticate_agent(clone.agent_id, clone.token) == AgentAuth(original.agent_id)
    assert await store.authenticate_agent(original.agent_id, original.token) is None
    again = (await store.enroll(key, "m1", "h", "p", [], NOW, proof=(clone.agent_id, clone.token))).result
    assert (again.agent_id, again.status) == (original.agent_id, "existing")
    [view] = await store.list_agents(None)
    assert (view.agent_id, view.hostname, view.tags) == (original.agent_id, "h", ["web"])
    mine = [i.delivery_id for i in tagged if i.agent_id == original.agent_id]
    assert sorted(i.delivery_id for i in await store.pending_for_agent(original.agent_id)) == [kept.delivery_id, *mine]
    merged = {a.agent_id: a for a in await store.list_agents(None, removed=True)}[clone.agent_id]
    assert merged.merged_into == original.agent_id and merged.removed_at == NOW + 1


async def test_a_clone_of_a_removed_agent_cannot_be_merged(store: SQLiteStore) -> None:
    _, key = (await store.bootstrap(NOW)).result or ("", "")
    original = (await store.enroll(key, "m1", "h", "p", [], NOW)).result
    clone = (await store.enroll(key, "m1", "h", "p", [], NOW)).result
    await store.remove_agent(original.agent_id, NOW)
    error = await refusal(store, store.merge_agent(clone.agent_id, NOW))
    assert error.code == ErrorCode.UNKNOWN_AGENT and f"agent approve {clone.agent_id}" in error.message
    # A machine UUID known only from a removed agent marks no clone.
    assert ((await store.enroll(key, "m1", "h", "p", [], NOW)).result).clone_of == clone.agent_id
    await store.approve_agent(clone.agent_id)


async def test_removed_agents_are_not_selected(store: SQLiteStore) -> None:
    a = await enrolled(store, "a", "web")
    await store.remove_agent(a, NOW)
    _, items = await created(store.create_task(task("all"), NOW))
    assert items == []


async def test_a_hello_records_the_agents_facts_and_commands(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    assert await store.agent_commands(a) == []  # never connected
    store.agent_seen(a, "web-01", "linux-x86_64", ["echo", "os_version"], "1.2", NOW + 5)
    await store.flush()
    assert await store.agent_commands(a) == ["echo", "os_version"]
    (view,) = await store.list_agents(None)
    assert (view.hostname, view.platform, view.last_seen, view.commands) == (
        "web-01", "linux-x86_64", NOW + 5, ["echo", "os_version"])
    assert await store.agent_commands("nobody") is None


async def test_an_agent_binds_to_its_first_client_certificate(store: SQLiteStore) -> None:
    a = await enrolled(store, "a")
    key = (await store.create_key([], None, None, NOW)).result.key or ""
    enrolled_agent = (await store.enroll(key, "m-c", "c", "linux", [], NOW, certificate=b"c" * 32)).result
    assert (await store.authenticate_agent(enrolled_agent.agent_id, enrolled_agent.token)) == AgentAuth(
        enrolled_agent.agent_id, b"c" * 32)
    assert (await store.bind_certificate(a, b"a" * 32)).result is True
    assert (await store.bind_certificate(a, b"b" * 32)).result is False  # bound already: kept
    assert (await store.bind_certificate("nobody", b"a" * 32)).result is False


async def test_selector_tasks_reach_agents_whose_facts_come_to_match(store: SQLiteStore) -> None:
    a = await enrolled(store, "a", "staging")
    prod, none_yet = await created(store.create_task(msgspec.structs.replace(
        task("all"), selector='hostname matches "^web-" and not "staging" in tags'), NOW))
    assert none_yet == [] and (await wheel(store)).selecting == [(prod, NOW + 60)]
    assert (await store.select_for_agent(a, "web-01", "linux-x86_64", NOW + 1)).items == []  # still staging
    (reached,) = (await store.tag_rm(a, "staging", NOW + 2)).items
    assert (reached.task_id, reached.agent_id) == (prod, a)
    assert (await store.select_for_agent(a, "web-01", "linux-x86_64", NOW + 3)).items == []  # once
    with pytest.raises(ProtocolError) as err:
        await store.tag_rm(a, "staging", NOW)
    assert err.value.code == ErrorCode.UNKNOWN_TAG
    b = await enrolled(store, "b")
    assert [i.task_id for i in (await store.select_for_agent(b, "web-02", "linux", NOW + 4)).items] == [prod]
    assert (await store.select_for_agent("nobody", "web-03", "linux", NOW)).items == []


async def test_a_machine_whose_uuid_changed_enrolls_as_a_new_agent_the_old_one_kept_as_replaced(
        store: SQLiteStore) -> None:
    """Issue 19.4: the old record stays (hidden from the listing, with the new id) until an
    admin removes it, which cancels its pending deliveries."""
    await store.bootstrap(NOW)
    key = (await store.create_key(["web"], None, None, NOW)).result.key
    old = (await store.enroll(key, "m1", "h1", "p", [], NOW)).result
    _, items = await created(store.create_task(task("agent", old.agent_id), NOW))
    new = (await store.enroll(key, "m2", "h1", "p", [], NOW + 1, proof=(old.agent_id, old.token))).result
    assert (new.status, new.replaces, new.tags) == ("new", old.agent_id, ["web"]) and new.agent_id != old.agent_id
    assert await store.authenticate_agent(old.agent_id, old.token) is None  # its state directory is the new one's
    assert await store.authenticate_agent(new.agent_id, new.token) == AgentAuth(agent_id=new.agent_id)
    assert [a.agent_id for a in await store.list_agents(None)] == [new.agent_id]
    listed = {a.agent_id: a for a in await store.list_agents(None, removed=True)}
    assert listed[old.agent_id].replaced_by == new.agent_id and not listed[old.agent_id].revoked
    assert listed[new.agent_id].replaced_by is None
    assert [(i.agent_id, i.delivery_id) for i in items] == [(old.agent_id, items[0].delivery_id)]
    assert await store.pending_for_agent(old.agent_id) == items  # kept until an admin removes it
    removed = await store.remove_agent(old.agent_id, NOW + 2)
    assert [(c.agent_id, c.old, c.new) for c in removed.changes] == [(old.agent_id, "queued", "cancelled")]
    assert await store.pending_for_agent(old.agent_id) == []


async def test_a_revoked_agent_is_listed_only_with_all(store: SQLiteStore) -> None:
    await store.bootstrap(NOW)
    key = (await store.create_key([], None, None, NOW)).result.key
    revoked = (await store.enroll(key, "m1", "h1", "p", [], NOW)).result.agent_id
    stays = (await store.enroll(key, "m2", "h2", "p", [], NOW)).result.agent_id
    await store.revoke_agent(revoked)
    assert [a.agent_id for a in await store.list_agents(None)] == [stays]
    assert [(a.agent_id, a.revoked) for a in await store.list_agents(None, removed=True)] == [
        (revoked, True), (stays, False)]
