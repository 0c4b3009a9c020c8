"""A hierarchical timer wheel for TTL expiries, polling next-runs and recurring firings.

One wheel holds every time-driven entry of the daemon (DESIGN.md, "the task model":
nothing sleeps per task), up to about a million at once. It follows Varghese & Lauck,
"Hashed and Hierarchical Timing Wheels" (SOSP 1987), as Kafka's purgatory and the NATS
server do, and like the NATS wheel it is pure: it never reads a clock, never touches an
event loop and does no I/O. Every call that needs the time is given it, so tests drive
it with a fake clock and the scheduler drives it from the loop clock.

What it promises:

- ``advance(now)`` returns exactly the items scheduled with ``when <= now`` that have
  neither fired nor been cancelled, ordered by ``when`` and then by the order they were
  scheduled in: the same items, in the same order, on the same call, as a heap of
  ``(when, sequence)`` would give. The tick only decides how entries are bucketed,
  never whether one fires.
- Time never runs backwards: an ``advance`` with a ``now`` earlier than a previous one
  is taken as that previous ``now`` (it still fires entries scheduled in the past since).
- ``schedule`` and ``cancel`` are O(1). A cancelled entry is unlinked at once, so its
  memory goes back as soon as the caller drops the handle, and ``len()`` stays exact.
- Any finite time is accepted, however far ahead: entries beyond the range of every
  level wait in an overflow list that is looked at only when the wheel's top level
  comes round to them (with the defaults, every ~1,700 years of wheel time).
- ``next_due()`` is a time the caller can sleep until: never later than the earliest
  pending ``when``, at most one tick early for an entry in the lowest level (the
  current revolution of ``slots`` ticks), and for one in a higher level the moment its
  slot cascades down, after which the next ``next_due()`` is closer. Calling
  ``advance(next_due())`` repeatedly fires every entry: each call either fires
  something or makes ``next_due()`` strictly later.

Memory: one 64-byte handle per entry plus its 24-byte ``when`` float, about 88 bytes
an entry as ``bench/timers_wheel.py`` measures it (the item is the caller's), plus a
fixed ``slots * levels`` list heads (1,280 with the defaults).
"""

from __future__ import annotations

import math
import struct
from operator import attrgetter
from typing import Any, Generic, TypeVar

__all__ = ["TimerHandle", "TimerWheel"]

T = TypeVar("T")

# Firing order: by time, ties in the order of scheduling (as a heap would). A stable
# sort on ``when`` alone gives that, so entries need no sequence number: entries with
# the same ``when`` always share a list (which list depends only on their tick and the
# wheel's current tick), are appended to it in scheduling order, and cascading a list
# down a level keeps their order.
_FIRING_ORDER = attrgetter("when")

_SIGN = 1 << 63


def _float_order(x: float) -> int:
    """An integer per float, in the floats' order (+0.0 and -0.0 are one)."""
    bits: int = struct.unpack("<Q", struct.pack("<d", x))[0]
    return -(bits ^ _SIGN) if bits & _SIGN else bits


def _float_at(n: int) -> float:
    """The float whose `_float_order` is ``n``."""
    value: float = struct.unpack("<d", struct.pack("<Q", -n | _SIGN if n < 0 else n))[0]
    return value


class TimerHandle(Generic[T]):
    """One scheduled entry, returned by `TimerWheel.schedule` to cancel it with.

    Read ``when`` and ``item`` (what was scheduled) and ``active`` (neither fired nor
    cancelled yet); do not change them. A handle belongs to the wheel that made it.
    """

    # The handle is its own node in a circular doubly linked list (one per slot),
    # which is what makes cancel O(1) without a per-entry dict or a slot locator.
    __slots__ = ("_next", "_prev", "item", "when")

    when: float
    item: T
    _prev: TimerHandle[T]
    _next: TimerHandle[T]

    def __init__(self, when: float, item: T) -> None:
        self.when = when
        self.item = item
        self._prev = self._next = _DETACHED

    @property
    def active(self) -> bool:
        """True while the entry is pending: not fired and not cancelled."""
        return self._prev is not _DETACHED

    def __repr__(self) -> str:
        state = "pending" if self.active else "done"
        return f"<TimerHandle when={self.when!r} item={self.item!r} {state}>"


# The one "in no list" marker: fired and cancelled handles point at it, so they hold no
# reference to the wheel or to other entries. Never linked, never read, only compared.
_DETACHED: TimerHandle[Any] = TimerHandle.__new__(TimerHandle)


def _new_list() -> TimerHandle[Any]:
    """An empty circular list: a head that is its own neighbour."""
    head: TimerHandle[Any] = TimerHandle(math.nan, None)
    head._prev = head._next = head
    return head


def _append(head: TimerHandle[T], node: TimerHandle[T]) -> None:
    last = head._prev
    node._prev = last
    node._next = head
    last._next = node
    head._prev = node


class TimerWheel(Generic[T]):
    """Entries keyed by a time in seconds on the caller's clock (any monotonic float).

    ``tick`` is the width of a lowest-level slot, ``slots`` the slots per level and
    ``levels`` the number of levels: level ``n`` slots are ``tick * slots**n`` wide, so
    the defaults reach ``0.05 * 256**5`` s (about 1,700 years) before the overflow list.
    """

    __slots__ = (
        "_bits", "_cur", "_len", "_now", "_occupied", "_origin", "_overflow", "_overflow_min",
        "_slots", "_tick", "_wheels", "_widths",
    )

    def __init__(self, now: float, *, tick: float = 0.05, slots: int = 256, levels: int = 5) -> None:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number of seconds, not {now!r}")
        if not (math.isfinite(tick) and tick > 0):
            raise ValueError(f"tick must be a positive number of seconds, not {tick!r}")
        if slots < 2 or levels < 1:
            raise ValueError(f"a wheel needs slots >= 2 and levels >= 1, not slots={slots} levels={levels}")
        self._origin = now
        self._now = now
        self._tick = tick
        self._slots = slots
        # log2(slots) when slots is a power of two (the usual case, and a faster path).
        self._bits = slots.bit_length() - 1 if slots & (slots - 1) == 0 else 0
        # Ticks since the origin, numbered; _cur is the tick that _now falls in.
        self._cur = 0
        # Ticks covered by one slot of each level.
        self._widths: list[int] = [slots**level for level in range(levels)]
        self._wheels: list[list[TimerHandle[T]]] = [
            [_new_list() for _ in range(slots)] for _ in range(levels)
        ]
        # Per level, a bit per slot that may hold entries. Set on insert, cleared when the
        # slot is emptied by the wheel or found empty (entries in it were cancelled).
        self._occupied = [0] * levels
        self._overflow: TimerHandle[T] = _new_list()
        # A lower bound on the tick of the earliest overflow entry (None: overflow empty).
        self._overflow_min: int | None = None
        self._len = 0

    def __len__(self) -> int:
        """Pending entries: scheduled, not fired, not cancelled."""
        return self._len

    def __repr__(self) -> str:
        return f"<TimerWheel now={self._now!r} pending={self._len}>"

    def schedule(self, when: float, item: T) -> TimerHandle[T]:
        """Fire ``item`` at the first `advance` whose ``now`` is at or after ``when``.

        ``when`` may be in the past: the entry then fires on the next `advance`. A time
        that is not finite, or so far from the wheel's start (beyond ~1e300 s) that its
        tick count is not, raises ``ValueError``: no `advance` could ever reach it.
        """
        ticks = (when - self._origin) / self._tick
        if not math.isfinite(ticks):
            raise ValueError(f"cannot schedule at {when!r}: give a finite time in seconds")
        handle = TimerHandle(when, item)
        self._place(handle, ticks)
        self._len += 1
        return handle

    def cancel(self, handle: TimerHandle[T]) -> bool:
        """Withdraw a pending entry. True if it was pending; False if it had already
        fired or been cancelled (cancelling is idempotent)."""
        prev = handle._prev
        if prev is _DETACHED:
            return False
        after = handle._next
        prev._next = after
        after._prev = prev
        handle._prev = handle._next = _DETACHED
        self._len -= 1
        return True

    def advance(self, now: float) -> list[T]:
        """Move the wheel's time to ``now`` and return the items that are due.

        See the module docstring for the promise (heap order, nothing early, nothing
        late). A ``now`` earlier than the previous one counts as the previous one.
        """
        if now < self._now:
            now = self._now
        target = self._tick_at(now)
        self._now = now
        fired: list[TimerHandle[T]] = []
        level0 = self._wheels[0]
        slots = self._slots
        cur = self._cur
        while cur < target:
            # Everything in a slot the wheel leaves behind is due (its ticks are < now's).
            self._fire(level0[cur % slots], math.inf, fired)
            event = self._next_event(cur)
            assert event is None or event > cur, "the wheel's invariant is broken"
            if event is None or event > target:
                # Nothing happens between here and the target; its own slot is empty.
                cur = target
                break
            cur = self._cur = event
            self._cascade(event)
        self._cur = cur
        self._fire(level0[cur % slots], now, fired)
        self._len -= len(fired)
        fired.sort(key=_FIRING_ORDER)
        return [handle.item for handle in fired]

    def next_due(self) -> float | None:
        """None if nothing is pending, else a time to sleep until before `advance`.

        Never later than the earliest pending ``when``; may be earlier than the wheel's
        current time when something scheduled in the past is waiting to fire.
        """
        if not self._len:
            return None
        head = self._wheels[0][self._cur % self._slots]
        node = head._next
        if node is not head:
            # The current slot may hold entries from the past; its exact minimum is cheap
            # (one tick's worth) and keeps advance(next_due()) from spinning.
            earliest = node.when
            node = node._next
            while node is not head:
                if node.when < earliest:
                    earliest = node.when
                node = node._next
            return earliest
        event = self._next_event(self._cur)
        assert event is not None, "entries are pending, so some slot holds one"
        return self._start_of(event)

    # -- internals -------------------------------------------------------------------

    def _tick_at(self, time: float) -> int:
        ticks = (time - self._origin) / self._tick
        if not math.isfinite(ticks):
            raise ValueError(f"cannot advance to {time!r}: give a finite time in seconds")
        return math.floor(ticks)

    def _start_of(self, tick: int) -> float:
        """The earliest float time that falls in ``tick`` or later.

        Searched rather than computed so that it agrees with `_tick_at` under rounding:
        every entry bucketed at ``tick`` or later is at or after it, and advancing to it
        reaches ``tick``. The search runs over the floats themselves (their order as
        integers): from the computed estimate, widening by doubling until the boundary is
        bracketed, then bisecting. One or two looks when the estimate is right, and at
        most ~130 where it is far off in floats (near 0.0 the floats are dense while the
        origin's rounding is coarse; near a huge origin they are sparser than a tick).
        """
        at = self._tick_at
        estimate = self._origin + tick * self._tick
        if at(estimate) >= tick > at(math.nextafter(estimate, -math.inf)):
            return estimate  # the common case, without the search
        target = _float_order(estimate)
        step = 1
        while at(_float_at(lo := target - step)) >= tick:
            step *= 2
        hi, step = target, 1
        while at(_float_at(hi)) < tick:
            hi = target + step
            step *= 2
        while hi - lo > 1:  # at(lo) < tick <= at(hi)
            mid = (lo + hi) // 2
            if at(_float_at(mid)) >= tick:
                hi = mid
            else:
                lo = mid
        return _float_at(hi)

    def _place(self, handle: TimerHandle[T], ticks: float) -> None:
        """Link ``handle`` (due ``ticks`` ticks after the origin) into its slot.

        The level is the lowest whose current revolution (same digits above it, in base
        ``slots``) contains the entry's tick; the slot is that tick's digit at the level.
        Due now or earlier: the current lowest-level slot. Beyond the top: overflow.
        """
        cur = self._cur
        slots = self._slots
        if ticks < cur + 1:
            _append(self._wheels[0][cur % slots], handle)
            return
        tick = math.floor(ticks)
        levels = len(self._widths)
        bits = self._bits
        if bits:
            # Power-of-two slots: the level is where the highest differing bit lies.
            level = ((tick ^ cur).bit_length() - 1) // bits
            index = (tick >> (level * bits)) & (slots - 1)
        else:
            level = 0
            span = slots
            while level < levels and tick // span != cur // span:
                level += 1
                span *= slots
            index = tick // (span // slots) % slots
        if level < levels:
            _append(self._wheels[level][index], handle)
            self._occupied[level] |= 1 << index
            return
        _append(self._overflow, handle)
        if self._overflow_min is None or tick < self._overflow_min:
            self._overflow_min = tick

    def _fire(self, head: TimerHandle[T], now: float, fired: list[TimerHandle[T]]) -> None:
        """Unlink the entries of one list that are due at ``now`` into ``fired``."""
        node = head._next
        while node is not head:
            after = node._next
            if node.when <= now:
                prev = node._prev
                prev._next = after
                after._prev = prev
                node._prev = node._next = _DETACHED
                fired.append(node)
            node = after

    def _next_event(self, cur: int) -> int | None:
        """The first tick after ``cur`` at which a slot holding entries comes due.

        A lowest-level slot comes due at its tick; a higher-level slot at its first tick,
        when it cascades; the overflow list when the top level reaches its earliest entry.
        Lower levels always come due before higher ones, so the first hit wins.
        """
        slots = self._slots
        for level, width in enumerate(self._widths):
            digit = cur // width % slots
            # Only slots after the current digit can hold entries (see _place).
            candidates = self._occupied[level] >> (digit + 1)
            while candidates:
                lowest = candidates & -candidates
                index = digit + lowest.bit_length()
                head = self._wheels[level][index]
                if head._next is not head:
                    span = width * slots
                    return cur // span * span + index * width
                self._occupied[level] &= ~(1 << index)
                candidates ^= lowest
        if self._overflow_min is None:
            return None
        if self._overflow._next is self._overflow:
            self._overflow_min = None
            return None
        top = self._widths[-1] * slots
        return self._overflow_min // top * top

    def _cascade(self, cur: int) -> None:
        """The wheel has just reached tick ``cur``: move down the entries of every slot
        that starts at it, and out of overflow those that the top level now reaches."""
        slots = self._slots
        top = self._widths[-1] * slots
        if self._overflow_min is not None and self._overflow_min // top == cur // top:
            self._overflow_min = None
            self._relink(self._overflow)
        for level in range(1, len(self._widths)):
            width = self._widths[level]
            if cur % width:
                break
            index = cur // width % slots
            self._occupied[level] &= ~(1 << index)
            self._relink(self._wheels[level][index])

    def _relink(self, head: TimerHandle[T]) -> None:
        """Empty one list and place each of its entries again for the current tick."""
        node = head._next
        head._prev = head._next = head
        origin = self._origin
        tick = self._tick
        while node is not head:
            after = node._next
            self._place(node, (node.when - origin) / tick)
            node = after
