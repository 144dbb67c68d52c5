"""Copies the worker's table into Parquet snapshots that DuckDB reads.

Reading the table happens on the event loop (Faust's stores are not
thread-safe); encoding and writing Parquet happen in a thread, so a snapshot
does not stall the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analytics.catalog import write_catalog
from analytics.snapshots import write_partition
from app.state import CourseActivity

logger = logging.getLogger(__name__)

TABLE = "student_course_activity"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_epoch_us(value: int | None) -> datetime | None:
    if value is None:
        return None
    return _EPOCH + timedelta(microseconds=value)


@dataclass
class SnapshotResult:
    partitions: int
    rows: int
    seconds: float
    taken_at: datetime


class Snapshotter:
    """Writes one Parquet file per owned partition, then makes sure views exist."""

    def __init__(self, db_path: Path, snapshot_dir: Path) -> None:
        self.db_path = db_path
        self.snapshot_dir = snapshot_dir
        self.last: SnapshotResult | None = None
        self._lock = asyncio.Lock()
        self._catalog_written = False

    async def snapshot(
        self, records: Iterable[bytes], owned_partitions: set[int]
    ) -> SnapshotResult:
        async with self._lock:
            started = time.perf_counter()
            taken_at = datetime.now(UTC)
            columns = self._collect(records, owned_partitions, taken_at)
            await asyncio.to_thread(self._write, columns)

            rows = sum(len(c["team_id"]) for c in columns.values())
            self.last = SnapshotResult(
                len(columns), rows, time.perf_counter() - started, taken_at
            )
            logger.info(
                "Snapshot of %d rows in %d partitions written in %.3f s",
                rows,
                len(columns),
                self.last.seconds,
            )
            return self.last

    @staticmethod
    def _collect(
        records: Iterable[bytes], owned: set[int], taken_at: datetime
    ) -> dict[int, dict[str, list]]:
        columns: dict[int, dict[str, list]] = {
            p: {
                "team_id": [],
                "student_id": [],
                "course_id": [],
                "first_seen_at": [],
                "last_seen_at": [],
                "activity_events": [],
                "snapshot_at": [],
            }
            for p in owned
        }
        for raw in records:
            state = CourseActivity.loads(raw)
            target = columns.get(state.partition)
            if target is None:  # a partition another worker owns now
                continue
            target["team_id"].append(state.team_id)
            target["student_id"].append(state.student_id)
            target["course_id"].append(state.course_id)
            target["first_seen_at"].append(_from_epoch_us(state.first_seen_at))
            target["last_seen_at"].append(_from_epoch_us(state.last_seen_at))
            target["activity_events"].append(state.activity_events)
            target["snapshot_at"].append(taken_at)
        return columns

    def _write(self, columns: dict[int, dict[str, list]]) -> None:
        if not self._catalog_written:
            write_catalog(self.db_path, self.snapshot_dir)
            self._catalog_written = True
        for partition, data in columns.items():
            write_partition(self.snapshot_dir, TABLE, partition, data)
