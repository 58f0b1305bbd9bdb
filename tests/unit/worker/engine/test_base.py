"""Range bookkeeping and the progress meter."""

from __future__ import annotations

import pytest

from worker.engine.base import Progress, ProgressMeter
from worker.engine.ranges import RangeSet


def test_ranges_merge_and_report_gaps() -> None:
    r = RangeSet([(10, 20), [30, 40]])
    r.add(20, 25)
    r.add(5, 5)  # empty: ignored
    assert r.to_list() == [[10, 25], [30, 40]]
    assert r.total == 25 and r.prefix_end() == 0
    assert r.missing(50) == [(0, 10), (25, 30), (40, 50)]
    r.add(0, 12)
    r.add(24, 45)
    assert r.to_list() == [[0, 45]] and r.prefix_end() == 45
    assert not r.covers(50) and r.missing(50) == [(45, 50)]
    r.add(45, 50)
    assert r.covers(50) and RangeSet().missing(3) == [(0, 3)]


def test_ranges_insert_before_existing() -> None:
    r = RangeSet([(50, 60)])
    r.add(0, 10)
    r.add(20, 30)
    assert r.to_list() == [[0, 10], [20, 30], [50, 60]]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_meter_throttles_smooths_speed_and_computes_eta() -> None:
    clock = Clock()
    seen: list[Progress] = []
    meter = ProgressMeter(seen.append, interval=0.25, window=2.0, clock=clock)
    assert meter.update(0, 1000) is not None  # the first report goes out at once
    clock.now = 0.1
    assert meter.update(10, 1000) is None  # throttled
    clock.now = 1.0
    report = meter.update(100, 1000)
    assert report is not None and report.speed == pytest.approx(100.0)
    assert report.eta == pytest.approx(9.0) and report.percent == 10.0
    clock.now = 5.0  # old samples leave the window: speed reflects the recent rate
    meter.update(900, 1000)
    clock.now = 6.0
    report = meter.update(1000, 1000, status="verifying", force=True)
    assert report is not None and report.speed == pytest.approx(100.0)
    assert report.status == "verifying" and report.eta == 0.0
    assert len(seen) == 4
    assert Progress(5, None, 0.0, None).percent == 0.0
