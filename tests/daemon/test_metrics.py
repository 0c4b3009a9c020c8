"""``tether_asyncio_tasks``: a scrape reuses a recent count of the live tasks, so scraping
often costs nothing in proportion to the fleet."""

from __future__ import annotations

import asyncio

from tether.daemon.metrics import Stats


async def test_the_task_count_is_reused_within_its_age_then_counted_again() -> None:
    stats = Stats()
    now = [1000.0]
    before = stats.tasks_alive(1.0, now[0])
    assert before == len(asyncio.all_tasks())
    gate = asyncio.Event()
    extra = [asyncio.create_task(gate.wait()) for _ in range(5)]
    now[0] += 0.5
    assert stats.tasks_alive(1.0, now[0]) == before  # half a second later: the same count, not walked again
    now[0] += 0.5
    assert stats.tasks_alive(1.0, now[0]) == before + 5  # a second later: counted again
    gate.set()
    await asyncio.gather(*extra)
