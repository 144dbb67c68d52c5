"""Copies the worker's tables into Parquet snapshots that DuckDB reads.

Reading the tables happens on the event loop (Faust's stores are not
thread-safe); encoding and writing Parquet happen in a thread, so a snapshot
does not stall the stream.

The worker keeps daily buckets for a horizon only; DuckDB keeps every day. A
bucket that was in a partition's previous snapshot and is gone from the state
was let go by the horizon, so it is archived as it was last seen. The archive
file is named after the snapshot it came from: a snapshot redone after a crash
rewrites the same file instead of archiving the same days twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics.catalog import write_catalog
from analytics.schema import SNAPSHOT_TABLES
from analytics.snapshots import (
    latest_files,
    prune_versions,
    write_file,
    write_partition,
)
from app.state import CourseActivity, Student

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
DAILY_KEY = ("team_id", "student_id", "course_id", "day")


def _instant(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _value(register: list | None) -> object:
    return None if register is None else register[2]


Columns = dict[str, list]


def _empty(table: str) -> Columns:
    return {name: [] for name in SNAPSHOT_TABLES[table].names}


@dataclass
class SnapshotResult:
    partitions: int
    rows: int
    seconds: float
    taken_at: datetime


class Snapshotter:
    """Writes one Parquet file per owned partition and table."""

    def __init__(
        self, db_path: Path, snapshot_dir: Path, grace_seconds: float = 900.0
    ) -> None:
        self.db_path = db_path
        self.snapshot_dir = snapshot_dir
        self.grace_seconds = grace_seconds
        self.last: SnapshotResult | None = None
        self._lock = asyncio.Lock()

    async def snapshot(
        self,
        courses: Iterable[bytes],
        students: Iterable[bytes],
        owned_partitions: set[int],
    ) -> SnapshotResult:
        async with self._lock:
            started = time.perf_counter()
            taken_at = datetime.now(UTC)
            tables = {
                name: {p: _empty(name) for p in owned_partitions}
                for name in ("student_course_activity", "students", "engagement_daily")
            }
            self._collect_courses(courses, tables, taken_at)
            self._collect_students(students, tables["students"], taken_at)
            await asyncio.to_thread(self._write, tables, taken_at)

            written = tables["student_course_activity"].values()
            rows = sum(len(columns["team_id"]) for columns in written)
            self.last = SnapshotResult(
                len(owned_partitions), rows, time.perf_counter() - started, taken_at
            )
            logger.info(
                "Snapshot of %d course rows in %d partitions written in %.3f s",
                rows,
                len(owned_partitions),
                self.last.seconds,
            )
            return self.last

    @staticmethod
    def _collect_courses(
        records: Iterable[bytes], tables: dict[str, dict[int, Columns]], at: datetime
    ) -> None:
        for raw in records:
            state = CourseActivity.loads(raw)
            target = tables["student_course_activity"].get(state.partition)
            if target is None:  # a partition another worker owns now
                continue
            ids = (state.team_id, state.student_id, state.course_id)
            for name, value in zip(
                ("team_id", "student_id", "course_id"), ids, strict=True
            ):
                target[name].append(value)
            target["first_seen_at"].append(_instant(state.first_seen_at))
            target["last_seen_at"].append(_instant(state.last_seen_at))
            target["activity_events"].append(state.activity_events)
            target["lessons_finished"].append(state.lessons_finished)
            target["modules_finished"].append(state.modules_finished)
            target["course_finished"].append(state.course_finished)
            target["favorites"].append(state.favorite_lessons)
            target["comments"].append(state.comments)
            target["certificate_accessed"].append(state.certificate_accessed)
            target["last_event"].append(_value(state.last_event))
            target["student_name"].append(_value(state.student_name))
            target["student_email"].append(_value(state.student_email))
            target["course_name"].append(_value(state.course_name))
            target["team_name"].append(_value(state.team_name))
            target["snapshot_at"].append(at)

            daily = tables["engagement_daily"][state.partition]
            for day, (activity, visits, finishes, comments) in state.days.items():
                daily["team_id"].append(state.team_id)
                daily["student_id"].append(state.student_id)
                daily["course_id"].append(state.course_id)
                daily["day"].append(_EPOCH_DAY + timedelta(days=day))
                daily["activity_events"].append(activity)
                daily["visits"].append(visits)
                daily["lesson_finishes"].append(finishes)
                daily["comments"].append(comments)
                daily["snapshot_at"].append(at)

    @staticmethod
    def _collect_students(
        records: Iterable[bytes], tables: dict[int, Columns], at: datetime
    ) -> None:
        for raw in records:
            state = Student.loads(raw)
            target = tables.get(state.partition)
            if target is None:
                continue
            target["team_id"].append(state.team_id)
            target["student_id"].append(state.student_id)
            target["student_name"].append(_value(state.student_name))
            target["student_email"].append(_value(state.student_email))
            created = _value(state.created)
            target["created_at"].append(_instant(created))  # type: ignore[arg-type]
            target["snapshot_at"].append(at)

    def _write(self, tables: dict[str, dict[int, Columns]], taken_at: datetime) -> None:
        previous = latest_files(self.snapshot_dir, "engagement_daily")
        for partition, columns in tables["engagement_daily"].items():
            if partition in previous:
                self._archive_released_days(partition, previous[partition], columns)
        for name, partitions in tables.items():
            for partition, columns in partitions.items():
                write_partition(self.snapshot_dir, name, partition, columns, taken_at)
        # Last: until the catalog names the new files, readers see the
        # previous snapshot whole, and so does anyone after a crash.
        write_catalog(self.db_path, self.snapshot_dir)
        removed = prune_versions(self.snapshot_dir, self.grace_seconds)
        if removed:
            logger.info("Deleted %d superseded snapshot files", removed)

    def _archive_released_days(
        self, partition: int, previous_path: Path, current: Columns
    ) -> None:
        previous = pq.read_table(previous_path)
        if previous.num_rows == 0:
            return

        kept = set(zip(*(current[name] for name in DAILY_KEY), strict=True))
        previous_keys = zip(
            *(previous.column(name).to_pylist() for name in DAILY_KEY), strict=True
        )
        released = [key not in kept for key in previous_keys]
        if not any(released):
            return

        rows = previous.filter(pa.array(released))
        taken = pc.max(previous.column("snapshot_at")).as_py()
        name = f"partition-{partition:04d}-from-{taken:%Y%m%dT%H%M%S%f}.parquet"
        write_file(self.snapshot_dir / "engagement_daily_archive" / name, rows)
        logger.info(
            "Archived %d daily rows of partition %d past the horizon",
            rows.num_rows,
            partition,
        )
