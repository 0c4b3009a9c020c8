"""The timer wheel against a heap: same items, same order, same advance call."""

from __future__ import annotations

import heapq
import math
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tether.daemon.wheel import TimerHandle, TimerWheel

YEAR = 366 * 86400.0
WEEK = 7 * 86400.0


class HeapWheel:
    """The reference: a heap of (when, sequence) with lazy deletion."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.heap: list[tuple[float, int]] = []
        self.pending: dict[int, tuple[float, int]] = {}
        self.seq = 0

    def schedule(self, when: float, item: int) -> int:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq))
        self.pending[self.seq] = (when, item)
        return self.seq

    def cancel(self, seq: int) -> bool:
        return self.pending.pop(seq, None) is not None

    def advance(self, now: float) -> list[int]:
        self.now = max(self.now, now)
        fired = []
        while self.heap and self.heap[0][0] <= self.now:
            _, seq = heapq.heappop(self.heap)
            entry = self.pending.pop(seq, None)
            if entry is not None:
                fired.append(entry[1])
        return fired

    def earliest(self) -> float | None:
        return min((when for when, _ in self.pending.values()), default=None)


# (tick, slots, levels): the default, and small wheels whose cascades and overflow
# come round within seconds, including a single level and a non-power-of-two size.
CONFIGS = [(0.05, 256, 5), (1.0, 4, 2), (0.25, 3, 3), (0.1, 2, 1), (0.05, 8, 4)]
STARTS = [0.0, -5.0, 1234.5678, 1.7e9 + 0.123]

offsets = st.one_of(
    st.floats(-20, 20),
    st.integers(-30, 300).map(lambda n: n * 0.25),  # exactly on tick boundaries
    st.just(0.0),
    st.floats(0, 3600),
    st.floats(0, YEAR),
)
steps = st.one_of(
    st.floats(0, 2),
    st.integers(0, 64).map(lambda n: n * 0.25),
    st.floats(0, 600),
    st.floats(0, YEAR),
    st.floats(-10, 0),
)


class WheelAgainstHeap(RuleBasedStateMachine):
    handles = Bundle("handles")

    @initialize(config=st.sampled_from(CONFIGS), start=st.sampled_from(STARTS))
    def start(self, config: tuple[float, int, int], start: float) -> None:
        tick, slots, levels = config
        self.wheel: TimerWheel[int] = TimerWheel(start, tick=tick, slots=slots, levels=levels)
        self.ref = HeapWheel(start)
        self.items = 0

    def _schedule(self, when: float) -> tuple[TimerHandle[int], int]:
        self.items += 1
        handle = self.wheel.schedule(when, self.items)
        assert handle.when == when and handle.item == self.items and handle.active
        return handle, self.ref.schedule(when, self.items)

    @rule(target=handles, offset=offsets)
    def schedule(self, offset: float) -> tuple[TimerHandle[int], int]:
        return self._schedule(self.ref.now + offset)

    @rule(target=handles, other=handles, later=st.booleans())
    def schedule_tie(self, other: tuple[TimerHandle[int], int], later: bool) -> tuple[TimerHandle[int], int]:
        when = other[0].when
        return self._schedule(math.nextafter(when, math.inf) if later else when)

    @rule(entry=handles)
    def cancel(self, entry: tuple[TimerHandle[int], int]) -> None:
        handle, seq = entry
        assert handle.active == (seq in self.ref.pending)
        assert self.wheel.cancel(handle) == self.ref.cancel(seq)
        assert not handle.active

    def _advance(self, now: float) -> list[int]:
        fired = self.wheel.advance(now)
        assert fired == self.ref.advance(now)
        return fired

    @rule(step=steps)
    def advance(self, step: float) -> None:
        self._advance(self.ref.now + step)

    @rule(entry=handles)
    def advance_to_an_entry(self, entry: tuple[TimerHandle[int], int]) -> None:
        self._advance(entry[0].when)

    @rule()
    def advance_to_next_due(self) -> None:
        due = self.wheel.next_due()
        if due is None:
            return
        fired = self._advance(due)
        after = self.wheel.next_due()
        assert fired or (after is not None and after > due), "advance(next_due()) made no progress"

    @invariant()
    def agrees(self) -> None:
        assert len(self.wheel) == len(self.ref.pending)
        due = self.wheel.next_due()
        earliest = self.ref.earliest()
        if earliest is None:
            assert due is None
            return
        assert due is not None and due <= earliest
        # Early only when something is already due (scheduled in the past).
        assert due > self.ref.now or earliest <= self.ref.now


def test_wheel_matches_heap_reference() -> None:
    run_state_machine_as_test(
        WheelAgainstHeap, settings=settings(max_examples=60, stateful_step_count=35, deadline=None)
    )


@settings(max_examples=50, deadline=None)
@given(
    config=st.sampled_from(CONFIGS),
    start=st.sampled_from(STARTS),
    offsets=st.lists(st.one_of(st.floats(-5, 60), st.floats(0, YEAR)), min_size=1, max_size=60),
)
def test_sleeping_until_next_due_fires_everything_in_order(
    config: tuple[float, int, int], start: float, offsets: list[float]
) -> None:
    tick, slots, levels = config
    wheel: TimerWheel[int] = TimerWheel(start, tick=tick, slots=slots, levels=levels)
    for n, offset in enumerate(offsets):
        wheel.schedule(start + offset, n)
    fired: list[int] = []
    wakeups = 0
    while (due := wheel.next_due()) is not None:
        wakeups += 1
        fired += wheel.advance(due)
        assert wakeups <= 2000, "next_due() does not converge"
    assert fired == sorted(range(len(offsets)), key=lambda n: (start + offsets[n], n))


def test_fires_on_time_not_early_not_late() -> None:
    wheel: TimerWheel[str] = TimerWheel(100.0)
    wheel.schedule(100.3, "a")
    assert wheel.advance(100.29) == []
    assert wheel.advance(100.3) == ["a"]
    assert len(wheel) == 0


def test_same_time_fires_in_scheduling_order_across_levels() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0, tick=1.0, slots=4, levels=3)
    wheel.schedule(40.0, "far first")  # level 2 when scheduled
    wheel.advance(39.0)
    wheel.schedule(40.0, "near second")  # level 0
    wheel.schedule(39.5, "earlier")
    assert wheel.advance(40.0) == ["earlier", "far first", "near second"]


def test_past_entries_fire_on_the_next_advance_even_if_time_stands_still() -> None:
    wheel: TimerWheel[str] = TimerWheel(10.0)
    wheel.advance(20.0)
    wheel.schedule(5.0, "late")
    wheel.schedule(20.0, "now")
    wheel.schedule(20.01, "soon")
    assert wheel.next_due() == 5.0
    assert wheel.advance(20.0) == ["late", "now"]
    assert wheel.next_due() == 20.01


def test_time_never_runs_backwards() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0)
    wheel.schedule(5.0, "a")
    assert wheel.advance(10.0) == ["a"]
    wheel.schedule(8.0, "b")
    assert wheel.advance(1.0) == ["b"]  # taken as 10.0
    wheel.schedule(9.0, "c")
    assert wheel.advance(-1e9) == ["c"]


def test_far_future_entries_go_through_overflow() -> None:
    # Two levels of 4 one-second slots reach 16 s; a year is far beyond.
    wheel: TimerWheel[str] = TimerWheel(0.0, tick=1.0, slots=4, levels=2)
    wheel.schedule(YEAR, "year")
    wheel.schedule(YEAR + 100, "year+100")
    wheel.schedule(17.5, "next revolution")
    assert wheel.advance(YEAR - 1) == ["next revolution"]
    assert wheel.advance(YEAR) == ["year"]
    assert wheel.next_due() == YEAR + 96  # the top-level revolution that holds it
    assert wheel.advance(YEAR + 1000) == ["year+100"]
    assert wheel.next_due() is None


def test_default_wheel_reaches_a_year_and_beyond_its_range() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0)
    beyond = 0.05 * 256**5 * 1.5
    wheel.schedule(beyond, "beyond")
    wheel.schedule(YEAR, "year")
    wheel.schedule(WEEK, "week")
    assert wheel.advance(YEAR) == ["week", "year"]
    assert wheel.advance(beyond) == ["beyond"]


def test_cancelled_overflow_entries_are_forgotten() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0, tick=1.0, slots=4, levels=2)
    first = wheel.schedule(100.0, "a")
    second = wheel.schedule(200.0, "b")
    assert wheel.cancel(first)
    assert wheel.next_due() == 96.0  # still the lower bound of the cancelled entry
    assert wheel.advance(96.0) == []
    assert wheel.next_due() == 192.0
    assert wheel.cancel(second)
    assert wheel.next_due() is None
    assert wheel.advance(1000.0) == []


def test_overflow_emptied_by_cancel_is_not_an_event() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0, tick=1.0, slots=4, levels=2)
    wheel.cancel(wheel.schedule(100.0, "gone"))
    wheel.schedule(3.0, "here")
    assert wheel.advance(500.0) == ["here"]


def test_cancel_is_true_once_then_false() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0)
    handle = wheel.schedule(1.0, "a")
    fired = wheel.schedule(0.5, "b")
    assert len(wheel) == 2
    assert wheel.cancel(handle) is True
    assert wheel.cancel(handle) is False
    assert wheel.advance(2.0) == ["b"]
    assert wheel.cancel(fired) is False
    assert not handle.active and not fired.active and len(wheel) == 0


def test_cancel_releases_the_item() -> None:
    class Payload:
        pass

    wheel: TimerWheel[Payload] = TimerWheel(0.0)
    payload = Payload()
    ref = weakref.ref(payload)
    handle = wheel.schedule(60.0, payload)
    del payload
    wheel.cancel(handle)
    assert ref() is not None  # the caller's handle still holds it
    del handle
    assert ref() is None  # freed at once, no garbage collection needed


def test_next_due_is_at_most_one_tick_early_in_the_lowest_level() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0, tick=0.05)
    wheel.schedule(3.333, "a")
    due = wheel.next_due()
    assert due is not None and 3.333 - 0.05 < due <= 3.333
    assert wheel.advance(due) == []
    assert wheel.next_due() == 3.333


def test_next_due_for_a_higher_level_is_its_cascade() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0, tick=1.0, slots=4, levels=3)
    wheel.schedule(37.5, "a")  # level 2, slot covering 32..47
    assert wheel.next_due() == 32.0
    assert wheel.advance(32.0) == []
    assert wheel.next_due() == 36.0  # now in level 1
    assert wheel.advance(36.0) == []
    assert wheel.next_due() == 37.0
    assert wheel.advance(37.0) == []
    assert wheel.next_due() == 37.5


def ulps_away(x: float, k: int) -> float:
    for _ in range(abs(k)):
        x = math.nextafter(x, math.inf if k > 0 else -math.inf)
    return x


def test_next_due_agrees_with_rounding() -> None:
    # 0.1 is not exact in binary, so n * 0.1 is not always where tick n starts: a time
    # a few ulps below it can already be in tick n. Sleeping until next_due() must not
    # overshoot such an entry, and must land in its tick.
    for n in range(1, 120):
        for k in range(-3, 4):
            wheel: TimerWheel[int] = TimerWheel(0.0, tick=0.1, slots=8, levels=4)
            when = ulps_away(n * 0.1, k)
            wheel.schedule(when, n)
            for _ in range(10):  # one wake-up per level at most, and one to fire
                due = wheel.next_due()
                assert due is not None and due <= when
                if wheel.advance(due):
                    break
            assert len(wheel) == 0


def test_entries_just_past_a_revolution_are_found_by_a_jump() -> None:
    for slots in (3, 4):
        wheel: TimerWheel[str] = TimerWheel(0.0, tick=1.0, slots=slots, levels=2)
        wheel.advance(slots - 1.0)  # the last slot of the first revolution
        wheel.schedule(slots + 1.5, "second slot of the next revolution")
        assert wheel.advance(slots * slots) == ["second slot of the next revolution"]


def test_slots_emptied_by_cancel_are_skipped() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0, tick=1.0, slots=8, levels=2)
    wheel.cancel(wheel.schedule(3.0, "gone"))
    wheel.schedule(5.0, "kept")
    assert wheel.next_due() == 5.0
    assert wheel.advance(5.0) == ["kept"]


def test_big_jump_over_many_slots() -> None:
    wheel: TimerWheel[int] = TimerWheel(0.0)
    for n in range(1000):
        wheel.schedule(n * 37.0, n)
    assert wheel.advance(36999.0) == list(range(1000))
    assert len(wheel) == 0


def test_rejects_times_it_cannot_order() -> None:
    wheel: TimerWheel[str] = TimerWheel(0.0)
    for bad in (math.nan, math.inf, -math.inf, 1e308):
        with pytest.raises(ValueError, match="finite time"):
            wheel.schedule(bad, "x")
    with pytest.raises(ValueError, match="finite time"):
        wheel.advance(math.inf)
    with pytest.raises(ValueError, match="finite time"):
        wheel.advance(math.nan)
    assert len(wheel) == 0


@pytest.mark.parametrize(
    ("now", "options", "message"),
    [
        (math.nan, {}, "now must be"),
        (0.0, {"tick": 0.0}, "tick must be"),
        (0.0, {"tick": math.inf}, "tick must be"),
        (0.0, {"slots": 1}, "slots >= 2"),
        (0.0, {"levels": 0}, "levels >= 1"),
    ],
)
def test_rejects_a_wheel_that_cannot_work(now: float, options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TimerWheel(now, **options)  # type: ignore[arg-type]


def test_reprs_say_what_is_pending() -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0)
    handle = wheel.schedule(2.0, "job")
    assert repr(handle) == "<TimerHandle when=2.0 item='job' pending>"
    assert repr(wheel) == "<TimerWheel now=1.0 pending=1>"
    wheel.advance(2.0)
    assert repr(handle) == "<TimerHandle when=2.0 item='job' done>"


def test_next_due_where_the_floats_are_dense_is_found_at_once() -> None:
    """Found by hypothesis: with the origin at -5 s, tick 5 starts at 0.0, where stepping
    one float at a time crawls through the subnormals for ever."""
    wheel: TimerWheel[int] = TimerWheel(-5.0, tick=1.0, slots=4, levels=2)
    offsets = [5.0, -6.994505442960389e-45, 39.24118553822649, 3302254.821754751, 1.0, 2300191.6137100314]
    for n, offset in enumerate(offsets):
        wheel.schedule(-5.0 + offset, n)
    fired: list[int] = []
    while (due := wheel.next_due()) is not None:
        fired += wheel.advance(due)
        assert len(fired) <= len(offsets)
    assert fired == sorted(range(len(offsets)), key=lambda n: (-5.0 + offsets[n], n))
    start = wheel._start_of(5)  # the first float of tick 5, just below 0.0 (t + 5 rounds up to 5)
    assert -1e-15 < start <= 0.0
    assert wheel._tick_at(start) == 5 and wheel._tick_at(math.nextafter(start, -1.0)) == 4


def test_start_of_a_tick_finer_than_the_floats_there() -> None:
    """At 1e17 s the floats are 16 s apart, far wider than a 0.05 s tick: the start of a
    tick is then the first float at or after it, and finding it still terminates."""
    wheel: TimerWheel[int] = TimerWheel(1e17, tick=0.05)
    for tick in (1, 320, 1000):
        start = wheel._start_of(tick)
        assert wheel._tick_at(start) >= tick > wheel._tick_at(math.nextafter(start, -math.inf))
    wheel.schedule(1e17 + 32.0, 7)
    fired: list[int] = []
    while (due := wheel.next_due()) is not None:
        fired += wheel.advance(due)
    assert fired == [7]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_order_is_the_floats_order(x: float) -> None:
    from tether.daemon.wheel import _float_at, _float_order

    n = _float_order(x)
    assert _float_at(n) == x
    assert _float_order(math.nextafter(x, math.inf)) == n + 1 or math.nextafter(x, math.inf) == math.inf
    assert _float_order(math.nextafter(x, -math.inf)) == n - 1 or math.nextafter(x, -math.inf) == -math.inf
