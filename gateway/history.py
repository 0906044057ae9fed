"""A metric's history: the newest `capacity` (time, value) points, stored compactly.

A deque of (time, value) tuples costs ~100 bytes a point (the tuple, a float object for the time,
the value object); at the default 1,000 points per metric that is 100 KB per metric, and history
was most of what made the gateway's memory grow in the bench. Here times live in an array of
doubles and values in another while they are floats: 16 bytes a point. The first value that is not
a float (an int, whose exact type the history frame keeps, a bool, a string) turns the values into
a plain list. Space is allocated as points arrive, never `capacity` up front: most devices' rings
never fill.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from gateway.models import Value


class HistoryRing:
    __slots__ = ("_capacity", "_next", "_times", "_values")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._times = array("d")
        self._values: array[float] | list[Value] = array("d")
        self._next = 0  # where the next point goes once full: the oldest point

    def __len__(self) -> int:
        return len(self._times)

    def append(self, time: float, value: Value) -> None:
        values = self._values
        if isinstance(values, array) and type(value) is not float:
            values = self._values = list(values)
        full = len(self._times) >= self._capacity
        at = self._next
        if full:
            self._times[at] = time
            self._next = (at + 1) % self._capacity
        else:
            self._times.append(time)
        if isinstance(values, list):
            if full:
                values[at] = value
            else:
                values.append(value)
        elif full:
            values[at] = float(value)  # a float: anything else turned values into a list
        else:
            values.append(float(value))

    def __iter__(self) -> Iterator[tuple[float, Value]]:
        """Oldest first."""
        times, values, start = self._times, self._values, self._next
        for i in range(start, len(times)):
            yield times[i], values[i]
        for i in range(start):
            yield times[i], values[i]
