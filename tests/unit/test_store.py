from datetime import UTC, datetime

from schemas import ProcessHealth
from streams.store.logic import Rollups, escape_label, to_lines
from tests.factories import sample

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_lines_have_labels_values_and_millisecond_timestamps() -> None:
    lines = to_lines(sample(cpu=12.5, ts=T0, processes=[ProcessHealth(name="ng\"x", up=True)]))
    ts = int(T0.timestamp() * 1000)
    assert f'fd_cpu_total{{server="srv-1",tenant="default"}} 12.5 {ts}' in lines
    assert f'fd_cpu_core{{server="srv-1",tenant="default",core="1"}} 12.5 {ts}' in lines
    assert f'fd_proc_up{{server="srv-1",tenant="default",process="ng\\"x"}} 1.0 {ts}' in lines


def test_escape_label() -> None:
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_rollups_min_avg_max_after_the_minute_closes() -> None:
    rollups = Rollups(grace_s=5)
    for second, cpu in ((0, 10.0), (20, 30.0), (59, 20.0)):
        rollups.add(sample(cpu=cpu, ts=T0.replace(second=second)))
    start = T0.timestamp()
    assert rollups.flush(start + 60) == []  # still within the grace period
    lines = rollups.flush(start + 66)
    ms = int(start * 1000)
    labels = '{server="srv-1",tenant="default"}'
    assert f"fd_cpu_total:1m_min{labels} 10.0 {ms}" in lines
    assert f"fd_cpu_total:1m_avg{labels} 20.0 {ms}" in lines
    assert f"fd_cpu_total:1m_max{labels} 30.0 {ms}" in lines
    assert not any("fd_cpu_core" in line for line in lines)  # only total channels
    assert rollups.flush(start + 67) == []  # nothing changed since


def test_late_sample_reflushes_the_whole_minute() -> None:
    rollups = Rollups(grace_s=5)
    rollups.add(sample(cpu=10.0, ts=T0))
    start = T0.timestamp()
    rollups.flush(start + 70)
    rollups.add(sample(cpu=50.0, ts=T0.replace(second=30)))
    lines = rollups.flush(start + 300)
    assert any(line.startswith("fd_cpu_total:1m_avg") and " 30.0 " in line for line in lines)


def test_old_buckets_are_forgotten() -> None:
    rollups = Rollups(grace_s=5, keep_s=60)
    rollups.add(sample(ts=T0))
    rollups.flush(T0.timestamp() + 70)
    rollups.flush(T0.timestamp() + 200)
    assert rollups.minutes == {}
