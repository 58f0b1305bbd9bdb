"""Range bookkeeping: which parts of a partial file are done."""

from __future__ import annotations

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


def test_a_snapshot_of_the_ranges_does_not_follow_later_additions() -> None:
    r = RangeSet([(0, 10), (20, 30)])
    snapshot = tuple(r)
    r.add(10, 20)
    assert snapshot == ((0, 10), (20, 30))
    assert tuple(r) == ((0, 30),) and RangeSet(snapshot).total == 20
