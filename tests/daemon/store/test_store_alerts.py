"""Alerts in the store (both backends): one row per distinct alert, counted; the latest copy
kept; acknowledgements; the counts of alerts dropped over an agent's rate limit."""

from __future__ import annotations

import pytest
from store_data import NOW

from tether.daemon.store import AlertIn, Store
from tether.protocol import ErrorCode, ProtocolError
from tether.protocol.alerts import AlertBody, checksum


def copy(agent: str, name: str = "eicar", **fields: object) -> AlertIn:
    body = AlertBody(kind="scan", name=name, **fields)  # type: ignore[arg-type]
    return AlertIn(checksum=checksum(agent, body), body=body, raised_at=NOW - 1, delivery_id=7)


async def test_ten_thousand_copies_of_one_alert_are_one_row_counted_ten_thousand(store: Store) -> None:
    first = await store.record_alerts("a", [copy("a", path="/tmp/x")], 0, NOW)
    assert [(r.new, r.count) for r in first.result] == [(True, 1)]
    for i in range(9):  # 9,999 more, in messages of up to 1,111
        out = await store.record_alerts("a", [copy("a", path="/tmp/x", message=f"copy {i}")] * 1111, 0, NOW + i + 1)
        assert not any(r.new for r in out.result)
    listed = await store.list_alerts(agent_id=None, kind=None, since=None, limit=100)
    (view,) = listed.alerts
    assert (view.count, view.first_seen, view.last_seen, view.path) == (10_000, NOW, NOW + 9, "/tmp/x")
    assert view.message == "copy 8"  # the latest copy
    assert view.alert_id == first.result[0].alert_id


async def test_distinct_alerts_are_rows_of_their_own_and_filters_apply(store: Store) -> None:
    out = await store.record_alerts("a", [copy("a"), copy("a", name="other"), copy("a")], 0, NOW)
    assert [(r.new, r.count) for r in out.result] == [(True, 1), (True, 1), (False, 2)]
    await store.record_alerts("b", [copy("b", details={"k": [1, 2]})], 0, NOW + 5)
    every = await store.list_alerts(agent_id=None, kind=None, since=None, limit=100)
    assert [(v.agent_id, v.name, v.count) for v in every.alerts] == [("b", "eicar", 1), ("a", "other", 1),
                                                                   ("a", "eicar", 2)]
    assert every.alerts[0].details == {"k": [1, 2]} and every.alerts[0].delivery_id == 7
    assert [v.agent_id for v in (await store.list_alerts(agent_id="a", kind=None, since=None, limit=9)).alerts] == \
        ["a", "a"]
    assert (await store.list_alerts(agent_id=None, kind="nope", since=None, limit=9)).alerts == []
    assert len((await store.list_alerts(agent_id=None, kind="scan", since=NOW + 1, limit=9)).alerts) == 1
    assert len((await store.list_alerts(agent_id=None, kind=None, since=None, limit=1)).alerts) == 1


async def test_an_ack_records_when_and_the_count_then(store: Store) -> None:
    (rec,) = (await store.record_alerts("a", [copy("a")], 0, NOW)).result
    acked = (await store.ack_alert(rec.alert_id, NOW + 1)).result
    assert (acked.acked_at, acked.acked_count, acked.count) == (NOW + 1, 1, 1)
    await store.record_alerts("a", [copy("a")], 0, NOW + 2)
    view = await store.get_alert(rec.alert_id)
    assert view is not None and (view.count, view.acked_count) == (2, 1)
    with pytest.raises(ProtocolError) as refused:
        await store.ack_alert(rec.alert_id + 100, NOW)
    assert refused.value.code == ErrorCode.UNKNOWN_ALERT
    assert await store.get_alert(rec.alert_id + 100) is None


async def test_dropped_alerts_are_counted_per_agent(store: Store) -> None:
    await store.record_alerts("a", [], 5, NOW)
    await store.record_alerts("a", [copy("a")], 7, NOW + 1)
    await store.record_alerts("b", [], 1, NOW + 2)
    listed = await store.list_alerts(agent_id=None, kind=None, since=None, limit=10)
    assert [(d.agent_id, d.dropped, d.last_at) for d in listed.dropped] == [("b", 1, NOW + 2), ("a", 12, NOW + 1)]
    only_a = await store.list_alerts(agent_id="a", kind=None, since=None, limit=10)
    assert [(d.agent_id, d.dropped) for d in only_a.dropped] == [("a", 12)]
