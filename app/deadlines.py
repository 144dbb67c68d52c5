"""When each key is next due for an inactivity check, soonest first.

A check asks for the keys whose deadline has passed; its cost grows with
those keys (and with the superseded deadlines it skips), not with the
table. A key has at most one deadline: setting a new one supersedes the old,
which stays in the heap until it surfaces and is skipped. The heap is
rebuilt when superseded entries outnumber live ones, so it stays within
about twice the number of keys.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)

# Below this many entries the heap is never rebuilt: not worth it.
_REBUILD_FLOOR = 1024


class DeadlineIndex(Generic[Key]):
    def __init__(self) -> None:
        self._deadlines: dict[Key, int] = {}
        self._heap: list[tuple[int, int, Key]] = []
        self._order = 0  # breaks ties, so keys themselves are never compared

    def __len__(self) -> int:
        return len(self._deadlines)

    def get(self, key: Key) -> int | None:
        return self._deadlines.get(key)

    def set(self, key: Key, deadline: int | None) -> None:
        """Make ``deadline`` the key's (None: the key is due for nothing)."""
        if deadline is None:
            self._deadlines.pop(key, None)
            return
        if self._deadlines.get(key) == deadline:
            return
        self._deadlines[key] = deadline
        self._order += 1
        heapq.heappush(self._heap, (deadline, self._order, key))
        if len(self._heap) > max(_REBUILD_FLOOR, 2 * len(self._deadlines)):
            self._rebuild()

    def pop_due(self, now: int, limit: int | None = None) -> list[Key]:
        """The keys whose deadline is at or before ``now``, soonest first;
        at most ``limit`` of them, the others left for the next call.

        They leave the index: whoever handles them sets their next deadline.
        """
        due: list[Key] = []
        heap = self._heap
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            deadline, _, key = heapq.heappop(heap)
            if self._deadlines.get(key) == deadline:
                del self._deadlines[key]
                due.append(key)
        return due

    def next_deadline(self) -> int | None:
        """The soonest live deadline, if any."""
        heap = self._heap
        while heap and self._deadlines.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _rebuild(self) -> None:
        self._heap = [
            (deadline, order, key)
            for order, (key, deadline) in enumerate(self._deadlines.items())
        ]
        self._order = len(self._heap)
        heapq.heapify(self._heap)
