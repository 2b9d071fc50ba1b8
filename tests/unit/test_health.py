from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas import HealthState, ProcessHealth
from streams.health.logic import HealthPolicy, HealthTracker, Threshold, evaluate
from tests.factories import sample

POLICY = HealthPolicy()


@pytest.mark.parametrize(("cpu", "mem", "state"), [
    (10, 20, HealthState.OK),
    (84.9, 20, HealthState.OK),
    (85, 20, HealthState.WARNING),
    (95, 20, HealthState.CRITICAL),
    (10, 96, HealthState.CRITICAL),
    (90, 90, HealthState.WARNING),
])
def test_thresholds(cpu: float, mem: float, state: HealthState) -> None:
    assert evaluate(sample(cpu=cpu, mem=mem), POLICY)[0] is state


def test_reasons_name_channel_value_and_bound() -> None:
    state, reasons = evaluate(sample(cpu=97.0, fs_pct=90.0), POLICY)
    assert state is HealthState.CRITICAL
    assert reasons == ["cpu.total 97.0 >= 95", "fs.used_pct[/data] 90.0 >= 85"]


def test_process_down_is_critical() -> None:
    procs = [ProcessHealth(name="nginx", up=False)]
    assert evaluate(sample(processes=procs), POLICY) == (HealthState.CRITICAL,
                                                         ["process nginx down"])


def test_threshold_validation_names_the_problem() -> None:
    with pytest.raises(ValidationError, match="unknown channel"):
        Threshold(channel="cpu.nope", warning=1, critical=2)
    with pytest.raises(ValidationError, match="critical must be >= warning"):
        Threshold(channel="cpu.total", warning=90, critical=80)


def test_tracker_emits_only_changes() -> None:
    tracker = HealthTracker(POLICY)
    first = tracker.observe(sample(cpu=10), now=0)
    assert first is not None and first.state is HealthState.OK and first.previous is None
    assert tracker.observe(sample(cpu=12), now=1) is None
    change = tracker.observe(sample(cpu=99), now=2)
    assert change is not None and (change.previous, change.state) == (
        HealthState.OK, HealthState.CRITICAL)
    assert tracker.observe(sample(cpu=98), now=3) is None


def test_tracker_stale_then_offline_then_back() -> None:
    tracker = HealthTracker(HealthPolicy(stale_after_s=5, offline_after_s=30))
    tracker.observe(sample(cpu=10), now=100)
    assert tracker.sweep(104) == []
    stale = tracker.sweep(105)
    assert [c.state for c in stale] == [HealthState.STALE]
    assert tracker.sweep(106) == []
    assert [c.state for c in tracker.sweep(131)] == [HealthState.OFFLINE]
    back = tracker.observe(sample(cpu=10), now=140)
    assert back is not None and (back.previous, back.state) == (HealthState.OFFLINE,
                                                                HealthState.OK)


def test_late_sample_does_not_move_health_back() -> None:
    tracker = HealthTracker(POLICY)
    now = datetime.now(UTC)
    tracker.observe(sample(cpu=99, ts=now), now=0)
    assert tracker.observe(sample(cpu=1, ts=now - timedelta(seconds=30)), now=1) is None
    assert tracker.servers["srv-1"].state is HealthState.CRITICAL
