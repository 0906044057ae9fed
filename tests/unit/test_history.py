"""gateway.history.HistoryRing: newest points kept in order, exact value types, compact storage."""

from __future__ import annotations

import sys

from gateway.history import HistoryRing


def test_keeps_the_newest_points_oldest_first():
    ring = HistoryRing(3)
    for i in range(1, 8):
        ring.append(float(i), float(i * 10))
        assert list(ring) == [(float(t), float(t * 10)) for t in range(max(1, i - 2), i + 1)]
    assert len(ring) == 3


def test_values_keep_their_type_once_they_are_not_all_floats():
    ring = HistoryRing(4)
    ring.append(1.0, 1.5)
    ring.append(2.0, 2)
    ring.append(3.0, True)
    ring.append(4.0, "heat")
    ring.append(5.0, 5.5)
    points = list(ring)
    assert points == [(2.0, 2), (3.0, True), (4.0, "heat"), (5.0, 5.5)]
    assert [type(v) for _, v in points] == [int, bool, str, float]


def test_float_points_cost_two_doubles():
    ring = HistoryRing(1000)
    for i in range(1000):
        ring.append(1764090000.0 + i, 20.0 + i / 100)
    storage = sys.getsizeof(ring._times) + sys.getsizeof(ring._values)
    assert storage < 1000 * 16 * 1.2  # arrays over-allocate a little while growing
