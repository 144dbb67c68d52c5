"""The worker's batch handler: a partition's records folded into the tables.

The Tracker sees each Faust table through a TableWrites: reads and writes go
to the table's local RocksDB store for the batch's partition, and the records
written are sent to the table's changelog together once the batch is folded
(one send per key and batch, however many events touched it). When they are
all delivered, the store remembers the changelog offset it holds, as Faust's
own table writes do, so that a restart recovers only what came after it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from typing import Any

import faust
from aiokafka.structs import ConsumerRecord

# TODO: use a public way to name the partition a table write belongs to, once
# Faust has one; faust-streaming is pinned below 0.16 for this private name.
from faust.streams import _current_event
from faust.types import TP

from app.alert_checker import AlertChecker
from app.tracking import Tracker

logger = logging.getLogger(__name__)

FOLD_ATTEMPTS = 5
# A batch holding an event older than this is history arriving (a backfill, a
# resend), not live traffic: see PartitionFolder.replayed_at.
REPLAY_AGE_US = 15 * 60 * 1_000_000


class TableWrites(MutableMapping[bytes, bytes]):
    """A table as one partition's batch sees it; its writes kept for the changelog."""

    def __init__(self, table: faust.Table) -> None:
        self.table = table
        self.store = table.data
        self.written: dict[bytes, bytes] = {}
        # What the batch read, to tell the keys it changed from those it only
        # rewrote (a redelivery rewrites its key unchanged, see app.tracking).
        self.read: dict[bytes, bytes | None] = {}
        self.modified: set[bytes] = set()
        # Keys changed since the last snapshot took them, by partition.
        self.changed: dict[int, set[bytes]] = {}

    def begin(self) -> None:
        """Forget what an earlier (or failed) attempt at a batch did."""
        self.written.clear()
        self.read.clear()
        self.modified.clear()

    def __getitem__(self, key: bytes) -> bytes:
        return self.store[key]

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        value = self.store.get(key, default)
        self.read.setdefault(key, value)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.store[key] = value
        self.written[key] = value
        if self.read.get(key) != value:
            self.modified.add(key)

    def __delitem__(self, key: bytes) -> None:
        raise NotImplementedError("engagement records are never deleted")

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)

    def mark_changed(self, partition: int) -> None:
        self.changed.setdefault(partition, set()).update(self.modified)
        self.read.clear()
        self.modified.clear()

    async def send(self, producer: Any, partition: int) -> list[Awaitable[Any]]:
        topic = self.table.changelog_topic_name
        futures = [
            await producer.send(topic, key, value, partition, None, None)
            for key, value in self.written.items()
        ]
        self.written.clear()
        return futures


class _PartitionEvent:
    """What Faust's stores read from the current event: the record's partition."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, tp: TP) -> None:
        self.message = _Message(tp)


class _Message:
    __slots__ = ("topic", "partition", "tp")

    def __init__(self, tp: TP) -> None:
        self.topic, self.partition, self.tp = tp.topic, tp.partition, tp


def as_partition(tp: TP) -> _PartitionEvent:
    """Make the stores read and write ``tp``'s partition, as long as the
    returned event is kept alive (Faust's current event is a weak reference)."""
    event = _PartitionEvent(tp)
    _current_event.set(weakref.ref(event))
    return event


class TableSource:
    """The tables as a snapshot reads them (an app.snapshot.StateSource)."""

    def __init__(self, writes: dict[str, TableWrites]) -> None:
        self.writes = writes

    def records(self, table: str) -> Iterator[bytes]:
        return iter(self.writes[table].table.values())

    def take_changed(self, table: str) -> dict[int, list[bytes]]:
        writes = self.writes[table]
        changed, writes.changed = writes.changed, {}
        taken: dict[int, list[bytes]] = {}
        for partition, keys in changed.items():
            event = as_partition(TP(writes.table.changelog_topic_name, partition))
            values = (writes.store.get(key) for key in keys)
            taken[partition] = [value for value in values if value is not None]
            del event
        return taken


class PartitionFolder:
    """Folds the webhooks topic's records into the tables, a partition at a time."""

    def __init__(
        self,
        app: faust.App,
        tables: Sequence[faust.Table],
        on_outcomes: Callable[[Counter[str], Tracker], None],
        snapshotted: Mapping[int, int] | None = None,
        checker: AlertChecker | None = None,
    ) -> None:
        self.app = app
        courses, students = (TableWrites(table) for table in tables)
        self.writes = (courses, students)
        self.source = TableSource(
            {"student_course_activity": courses, "students": students}
        )
        self.tracker = Tracker(
            courses,
            students,
            snapshotted,
            None if checker is None else checker.observe_course,
            None if checker is None else checker.observe_student,
        )
        self.on_outcomes = on_outcomes
        # Partition -> time.monotonic() of its last fold that held history.
        # The alert check waits until a partition has had none for a while,
        # so that a key is not alerted from the first half of its history.
        self.replayed_at: dict[int, float] = {}

    async def fold(self, tp: TP, records: Sequence[ConsumerRecord]) -> Awaitable[Any]:
        _alive = as_partition(tp)  # the stores' weak reference needs it kept
        outcomes = await self._fold_with_retries(tp, records)
        oldest = self.tracker.oldest_sent_us
        if oldest is not None and oldest < time.time_ns() // 1000 - REPLAY_AGE_US:
            self.replayed_at[tp.partition] = time.monotonic()
        self.on_outcomes(outcomes, self.tracker)
        for writes in self.writes:  # before any await: a snapshot may run then
            writes.mark_changed(tp.partition)
        producer = self.app.producer
        sent = [await writes.send(producer, tp.partition) for writes in self.writes]
        return asyncio.gather(*(asyncio.gather(*futures) for futures in sent))

    def settle(self, tp: TP, delivered: list[list[Any]]) -> None:
        for writes, metadata in zip(self.writes, delivered, strict=True):
            if metadata:
                changelog = TP(writes.table.changelog_topic_name, tp.partition)
                writes.store.set_persisted_offset(changelog, metadata[-1].offset)

    async def _fold_with_retries(
        self, tp: TP, records: Sequence[ConsumerRecord]
    ) -> Counter[str]:
        """Fold a partition's records; never let a failure drop them.

        fold() refuses bad input itself, so an exception here is the
        machinery, e.g. a store that cannot be written. The state is
        idempotent, so the batch is simply folded again. Should it keep
        failing, the worker exits at once, before the batch is acknowledged,
        so that its records are consumed again after a restart.
        """
        for attempt in range(1, FOLD_ATTEMPTS + 1):
            for writes in self.writes:
                writes.begin()
            try:
                return self.tracker.fold(tp.partition, (r.value for r in records))
            except Exception:
                logger.exception(
                    "Could not fold records %s[%d]@%d..%d (attempt %d of %d)",
                    tp.topic,
                    tp.partition,
                    records[0].offset,
                    records[-1].offset,
                    attempt,
                    FOLD_ATTEMPTS,
                )
                await asyncio.sleep(attempt)
        logger.critical("Exiting without committing, so the records are read again")
        os._exit(70)
