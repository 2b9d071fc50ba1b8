"""Counter rates: increases, wraps, resets, odd clocks, and keys that come and go."""

from __future__ import annotations

import pytest

from agent.rates import WRAP_WINDOW_DIVISOR, CounterRate, RateTracker, counter_delta

U32, U64 = 2**32, 2**64
WINDOW_32 = U32 // WRAP_WINDOW_DIVISOR

# Each case: a list of (value, monotonic time) observations and the rate expected after each.
CASES: dict[str, tuple[list[tuple[int, float]], list[float | None]]] = {
    "first sample has no rate": ([(1000, 5.0)], [None]),
    "normal increase": ([(1000, 10.0), (3000, 12.0)], [None, 1000.0]),
    "unchanged counter": ([(500, 1.0), (500, 2.0)], [None, 0.0]),
    "fractional interval": ([(0, 1.0), (300, 1.5)], [None, 600.0]),
    "32-bit wrap": ([(U32 - 100, 0.0), (300, 2.0)], [None, 200.0]),
    "32-bit wrap at the edge of the window": ([(U32 - WINDOW_32, 0.0), (0, 1.0)],
                                              [None, float(WINDOW_32)]),
    "32-bit decrease just outside the window is a reset": ([(U32 - WINDOW_32, 0.0), (1, 1.0)],
                                                           [None, None]),
    "64-bit wrap": ([(U64 - 1000, 0.0), (1000, 4.0)], [None, 500.0]),
    "64-bit counter above 2**32 is never taken for a 32-bit wrap": (
        [(U32 + 10, 0.0), (5, 1.0)], [None, None]),
    "reset to 0, then resume": ([(5000, 0.0), (0, 1.0), (800, 2.0)], [None, None, 800.0]),
    "reset to a smaller value far from any boundary": (
        [(2**31, 0.0), (1000, 1.0), (3000, 3.0)], [None, None, 1000.0]),
    "dt = 0 keeps the older baseline": ([(100, 1.0), (150, 1.0), (300, 2.0)],
                                        [None, None, 200.0]),
    "negative dt takes the new point as baseline": ([(100, 5.0), (200, 4.0), (400, 6.0)],
                                                    [None, None, 100.0]),
}


@pytest.mark.parametrize("name", CASES)
def test_counter_rate(name: str) -> None:
    observations, expected = CASES[name]
    counter = CounterRate()
    rates = [counter.update(value, now) for value, now in observations]
    assert rates == expected


@pytest.mark.parametrize(
    ("old", "new", "delta"),
    [(10, 15, 5), (U32 - 1, 0, 1), (U64 - 1, 0, 1), (U32 // 2, 0, None), (U64 // 2, 1, None)],
)
def test_counter_delta(old: int, new: int, delta: int | None) -> None:
    assert counter_delta(old, new) == delta


def test_negative_counter_is_rejected() -> None:
    with pytest.raises(ValueError):
        CounterRate().update(-1, 1.0)


def test_tracker_keeps_keys_apart() -> None:
    tracker: RateTracker[tuple[str, str]] = RateTracker()
    assert tracker.rate(("sda", "read"), 0, 0.0) is None
    assert tracker.rate(("sdb", "read"), 100, 0.0) is None
    assert tracker.rate(("sda", "read"), 50, 1.0) == 50.0
    assert tracker.rate(("sdb", "read"), 400, 1.0) == 300.0
    assert tracker.rate_or_zero(("sdc", "read"), 7, 1.0) == 0.0


def test_tracker_forgets_keys_not_seen() -> None:
    tracker: RateTracker[str] = RateTracker(forget_after=10.0)
    tracker.rate("eth0", 0, 0.0)
    tracker.rate("eth1", 0, 0.0)
    for now in (5.0, 10.0, 15.0):
        tracker.rate("eth0", int(now) * 100, now)
    assert tracker.prune(9.0) == []
    assert tracker.prune(15.0) == ["eth1"]
    assert "eth1" not in tracker and "eth0" in tracker and len(tracker) == 1
    # A key that comes back after being forgotten starts afresh: no rate for its first point.
    assert tracker.rate("eth1", 10_000, 16.0) is None
    assert tracker.rate("eth1", 10_100, 17.0) == 100.0
