"""Admin tokens, enrollment keys and agent tokens in the store: made, listed, revoked."""

from __future__ import annotations

import pytest
from store_data import NOW

from tether.daemon.store.sqlite import SQLiteStore
from tether.protocol import ErrorCode, ProtocolError


async def test_tokens_are_listed_without_their_secret_and_revoked_at_once(store: SQLiteStore) -> None:
    first = (await store.bootstrap(NOW)).result
    assert first is not None
    made = (await store.create_token("viewer", "ci", NOW + 1)).result
    assert made.token.startswith("tta_") and made.role == "viewer"
    assert await store.admin_login(made.token) == (made.token_id, "viewer")
    listed = await store.list_tokens()
    assert [(t.role, t.label, t.token) for t in listed] == [("admin", "initial", ""), ("viewer", "ci", "")]
    assert (await store.revoke_token(made.token_id, NOW + 2)).result is True
    assert await store.admin_login(made.token) is None
    assert (await store.revoke_token(made.token_id, NOW + 3)).result is False  # already
    assert (await store.list_tokens())[1].revoked_at == NOW + 2
    with pytest.raises(ProtocolError) as err:
        await store.revoke_token(999, NOW)
    assert err.value.code == ErrorCode.UNKNOWN_TOKEN
    with pytest.raises(ProtocolError) as err:
        await store.revoke_token(2**70, NOW)  # beyond SQLite's integers: unknown, not a crash
    assert err.value.code == ErrorCode.UNKNOWN_TOKEN


async def test_the_last_admin_token_cannot_be_revoked(store: SQLiteStore) -> None:
    await store.bootstrap(NOW)
    initial = (await store.list_tokens())[0]
    operator = (await store.create_token("operator", "", NOW)).result
    with pytest.raises(ProtocolError) as err:
        await store.revoke_token(initial.token_id, NOW)
    assert err.value.code == ErrorCode.LAST_ADMIN_TOKEN
    second = (await store.create_token("admin", "backup", NOW)).result
    assert (await store.revoke_token(initial.token_id, NOW)).result
    with pytest.raises(ProtocolError):
        await store.revoke_token(second.token_id, NOW)
    assert (await store.revoke_token(operator.token_id, NOW)).result  # not an admin: no such rule


async def test_a_revoked_key_enrolls_no_one(store: SQLiteStore) -> None:
    await store.bootstrap(NOW)
    key = (await store.create_key(["web", "db", "web"], NOW + 60, 5, NOW)).result
    assert key.tags == ["db", "web"] and key.uses_left == 5 and key.key
    enrolled = (await store.enroll(key.key, "m1", "h1", "linux", [], NOW)).result
    assert enrolled.tags == ["db", "web"]
    assert (await store.list_keys())[-1].uses_left == 4
    assert (await store.revoke_key(key.key_id, NOW)).result is True
    with pytest.raises(ProtocolError) as err:
        await store.enroll(key.key, "m2", "h2", "linux", [], NOW)
    assert err.value.code == ErrorCode.ENROLL_KEY_UNKNOWN
    assert (await store.revoke_key(key.key_id, NOW)).result is False
    with pytest.raises(ProtocolError) as err:
        await store.revoke_key(12345, NOW)
    assert err.value.code == ErrorCode.UNKNOWN_KEY
    # The agent it enrolled keeps its own token.
    assert await store.authenticate_agent(enrolled.agent_id, enrolled.token) is not None


async def test_a_revoked_agent_token_stops_working_for_good(store: SQLiteStore) -> None:
    first = (await store.bootstrap(NOW)).result
    assert first is not None
    enrolled = (await store.enroll(first[1], "machine", "host", "linux", [], NOW)).result
    assert (await store.revoke_agent(enrolled.agent_id)).result is True
    assert await store.authenticate_agent(enrolled.agent_id, enrolled.token) is None
    assert await store.authenticate_agent(enrolled.agent_id, "") is None
    assert (await store.revoke_agent(enrolled.agent_id)).result is False
    assert [a.revoked for a in await store.list_agents(None, removed=True)] == [True]
    assert await store.list_agents(None) == []  # issue 19.4: listed only with all
    # Its token proves nothing any more; enrolling again without proof is a new agent.
    with pytest.raises(ProtocolError) as err:
        await store.enroll(first[1], "machine", "host", "linux", [], NOW, proof=(enrolled.agent_id, enrolled.token))
    assert err.value.code == ErrorCode.UNAUTHORIZED
    again = (await store.enroll(first[1], "machine", "host", "linux", [], NOW)).result
    assert again.agent_id != enrolled.agent_id and again.clone_of == enrolled.agent_id
    assert await store.authenticate_agent(again.agent_id, again.token) is not None
    assert [(a.agent_id, a.revoked) for a in await store.list_agents(None, removed=True)] == sorted(
        [(enrolled.agent_id, True), (again.agent_id, False)])
    with pytest.raises(ProtocolError) as err:
        await store.revoke_agent("nobody")
    assert err.value.code == ErrorCode.UNKNOWN_AGENT
