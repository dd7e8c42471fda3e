"""A heap of one-shot timers on the monotonic clock.

The loop's ``select()`` timeout is the time to the nearest timer. Timers
are not cancelled; a callback checks whether it still applies (the
connection may have closed), which keeps the heap free of bookkeeping.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable


class Timers:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), callback))

    def timeout(self, now: float, longest: float | None = None) -> float | None:
        """Seconds until the nearest timer (0 if due), or LONGEST if none."""
        if not self._heap:
            return longest
        wait = max(0.0, self._heap[0][0] - now)
        return wait if longest is None else min(wait, longest)

    def pop_due(self, now: float) -> list[Callable[[], None]]:
        """Remove and return the callbacks due at NOW, earliest first."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due
