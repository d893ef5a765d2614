"""Lag seconds and lag bytes agree (issue 16, defect 4): one definition, splitter.observe.lag.lag.

The source positions are made up here (a SourceClock fed by hand): what matters is the rule, both 0 when the
service has applied everything the source had written a grace ago, both > 0 otherwise.
"""

from __future__ import annotations

from splitter.observe.lag import SourceClock, lag

GRACE = 2.5
NOW = 1_000_000.0


def _clock(*samples: tuple[float, int]) -> SourceClock:
    clock = SourceClock()
    for age, lsn in samples:
        clock.add(lsn, wall=NOW - age)
    return clock


def test_wal_that_moved_on_without_work_for_the_service_reads_zero_bytes_and_zero_seconds() -> None:
    # The service applied the heartbeat at 0x5000; the WAL moved on since (heartbeats, unrouted tables).
    clock = _clock((10.0, 0x4000), (3.0, 0x5000), (1.0, 0x9000), (0.1, 0x20000))
    found = lag(0x5000, int((NOW - 1.5) * 1000), clock, NOW, GRACE)
    assert found is not None and (found.bytes, found.seconds) == (0, 0.0)


def test_a_service_behind_reads_bytes_and_seconds_both_above_zero() -> None:
    clock = _clock((30.0, 0x1000), (10.0, 0x4000), (3.0, 0x5000), (0.1, 0x20000))
    found = lag(0x4000, int((NOW - 12.0) * 1000), clock, NOW, GRACE)
    assert found is not None
    assert found.bytes == 0x20000 - 0x4000
    assert abs(found.seconds - 12.0) < 1e-6  # since the commit time of the last transaction it applied


def test_behind_without_a_commit_time_is_at_least_the_reference_samples_age() -> None:
    clock = _clock((4.0, 0x5000), (0.2, 0x6000))
    found = lag(0x100, 0, clock, NOW, GRACE)
    assert found is not None and found.bytes == 0x6000 - 0x100 and abs(found.seconds - 4.0) < 1e-6


def test_behind_with_a_commit_time_from_a_clock_ahead_still_reads_behind() -> None:
    clock = _clock((4.0, 0x5000), (0.2, 0x6000))
    found = lag(0x100, int((NOW + 60) * 1000), clock, NOW, GRACE)  # the source's clock runs a minute ahead
    assert found is not None and found.bytes > 0 and found.seconds >= 4.0


def test_no_sample_yet_means_unknown() -> None:
    assert lag(0x100, 0, SourceClock(), NOW, GRACE) is None


def test_bytes_above_zero_always_come_with_seconds_above_zero() -> None:
    clock = _clock(*[(age / 4, 0x1000 + int(100 - age) * 0x100) for age in range(100, -1, -1)])
    for applied in range(0x1000, 0x1000 + 101 * 0x100, 0x80):
        for ts_age in (None, 0.0, 1.0, 30.0):
            ts = 0 if ts_age is None else int((NOW - ts_age) * 1000)
            found = lag(applied, ts, clock, NOW, GRACE)
            assert found is not None
            assert (found.bytes > 0) == (found.seconds > 0), (hex(applied), ts_age, found)
