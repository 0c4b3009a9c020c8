"""How often an agent's state reports are stored (``daemon/state_reports.py``)."""

from __future__ import annotations

from tether.daemon.state_reports import STATE_BURST, STATE_SPACING, StateLimits


def test_a_burst_then_one_per_spacing_per_agent_the_rest_counted() -> None:
    limits = StateLimits()
    burst = int(STATE_BURST)
    assert [limits.admit("a", 100.0) for _ in range(burst + 3)] == [True] * burst + [False] * 3
    assert limits.admit("b", 100.0)  # another agent has its own bucket
    assert not limits.admit("a", 100.0 + STATE_SPACING / 2)
    assert limits.admit("a", 100.0 + STATE_SPACING * 1.5)
    assert not limits.admit("a", 100.0 + STATE_SPACING * 1.5)
    assert limits.dropped == 5
    # A long quiet spell refills the burst, no more.
    assert [limits.admit("a", 10_000.0) for _ in range(burst + 1)] == [True] * burst + [False]
    # A clock that went back refills nothing.
    assert not limits.admit("a", 50.0)
