"""Per-second rates from monotonically increasing counters (pure logic, no psutil).

:meth:`CounterRate.update` takes ``(value, now)`` where ``now`` is a monotonic time in seconds
and returns a rate in units per second, or ``None`` when there is no trustworthy rate for the
interval:

* first observation → ``None`` (the collector reports 0.0 for that sample);
* ``dt == 0`` → ``None``; the older observation stays the baseline, so nothing is lost;
* ``dt < 0`` → ``None``; the new observation becomes the baseline (the clock went backwards,
  so the old point cannot be trusted);
* the value grew or stayed → ``(new - old) / dt``;
* the value shrank and looks like a 32-bit or 64-bit wrap → ``wrapped delta / dt``;
* any other decrease is a reset (device or interface re-created, driver reloaded) → ``None``
  and the new value becomes the baseline, so the next interval has a rate again.

A decrease is taken for a wrap of a ``2**bits`` counter only when the counter can be that wide
(``old < 2**bits``) and the wrapped delta ``2**bits - old + new`` is at most
``2**bits // WRAP_WINDOW_DIVISOR``: the old value sat near the top of the range and the new one
near zero. That is conservative on purpose: a wrap read as a reset loses one interval, a reset
read as a wrap would invent a huge rate. (A reset to near zero from the top sixteenth of the
32-bit range is indistinguishable from a wrap; its error is bounded by the window.)
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

WRAP_WIDTHS: tuple[int, ...] = (2**32, 2**64)
#: The wrapped delta may cover at most 1/WRAP_WINDOW_DIVISOR of the counter's range.
WRAP_WINDOW_DIVISOR = 16

K = TypeVar("K", bound=Hashable)


def counter_delta(old: int, new: int) -> int | None:
    """Increase from ``old`` to ``new``, allowing for a plausible wrap; ``None`` for a reset."""
    if new >= old:
        return new - old
    for width in WRAP_WIDTHS:
        if old < width:
            wrapped = width - old + new
            return wrapped if wrapped <= width // WRAP_WINDOW_DIVISOR else None
    return None


class CounterRate:
    """Rate of one counter; remembers the last observation."""

    __slots__ = ("_time", "_value", "seen")

    def __init__(self) -> None:
        self._value: int | None = None
        self._time = 0.0
        #: Monotonic time of the latest call, whatever its outcome.
        self.seen = 0.0

    def update(self, value: int, now: float) -> float | None:
        """Record ``value`` observed at ``now``; the per-second rate since the last one."""
        if value < 0:
            raise ValueError(f"counter value must not be negative: {value}")
        self.seen = now
        old, then = self._value, self._time
        dt = now - then
        if old is not None and dt == 0:
            return None
        self._value, self._time = value, now
        if old is None or dt < 0:
            return None
        delta = counter_delta(old, value)
        return None if delta is None else delta / dt


class RateTracker(Generic[K]):
    """Counter rates keyed by name (e.g. ``("sda", "read_bytes")``).

    Keys not updated for ``forget_after`` seconds are dropped by :meth:`prune`, so disks and
    interfaces that disappear do not pile up; one that comes back starts afresh (``None``).
    """

    def __init__(self, forget_after: float = 300.0) -> None:
        self.forget_after = forget_after
        self._rates: dict[K, CounterRate] = {}

    def rate(self, key: K, value: int, now: float) -> float | None:
        """The per-second rate of counter ``key`` (see :meth:`CounterRate.update`)."""
        counter = self._rates.get(key)
        if counter is None:
            counter = self._rates[key] = CounterRate()
        return counter.update(value, now)

    def rate_or_zero(self, key: K, value: int, now: float) -> float:
        """Like :meth:`rate`, with 0.0 where there is no rate (first sample, reset, dt <= 0)."""
        rate = self.rate(key, value, now)
        return 0.0 if rate is None else rate

    def prune(self, now: float) -> list[K]:
        """Forget keys not seen since ``now - forget_after``; returns the forgotten keys."""
        cutoff = now - self.forget_after
        stale = [key for key, counter in self._rates.items() if counter.seen < cutoff]
        for key in stale:
            del self._rates[key]
        return stale

    def __contains__(self, key: object) -> bool:
        return key in self._rates

    def __len__(self) -> int:
        return len(self._rates)
