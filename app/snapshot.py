"""Copies the worker's tables into the Parquet files that DuckDB reads.

The first snapshot of a partition after the worker took it writes every key
(a base); later ones write only the keys written since the previous snapshot
(a delta), so their cost follows the traffic, not the table. Every few deltas
a partition is compacted: its base and deltas are merged into a new base, by
DuckDB, from the files. See analytics.snapshots for the layout.

Reading the tables happens on the event loop (Faust's stores are not
thread-safe); building the columns, writing Parquet and compacting happen in
a thread, so a snapshot does not stall the stream for long.

The state keeps the daily buckets its horizon let go until a snapshot has
them (app.state); once a snapshot read at time T is durable, the worker's
folds may drop the buckets released before T (``snapshotted``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any, Protocol

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from analytics.catalog import DEFAULT_RETENTION_DAYS, write_catalog
from analytics.schema import SNAPSHOT_TABLES
from analytics.snapshots import (
    ACTIVITY,
    DAILY,
    RELEASED,
    STUDENTS,
    Current,
    current_layers,
    current_sql,
    keep_in_history,
    layer_file,
    prune,
    publish,
    sql_literal,
    version_of,
    write_file,
)
from app.state import (
    DAY_FIELDS,
    HEADER,
    RELEASED_FIELDS,
    STATE_VERSION,
    CourseActivity,
    register_value,
)

logger = logging.getLogger(__name__)

# A partition is compacted once it has this many deltas, or once they hold
# this share of its base's rows.
COMPACT_AFTER_DELTAS = 10
COMPACT_AFTER_SHARE = 0.25
# Records a full snapshot reads from the store between two turns of the loop.
READ_CHUNK = 20_000


class StateSource(Protocol):
    """The worker's tables, as a snapshot reads them (on the event loop)."""

    def records(self, table: str) -> Iterable[bytes]:
        """Every record of ``table`` in the worker's store."""

    def take_changed(self, table: str) -> dict[int, list[bytes]]:
        """Records written since the previous call, by partition; forgets them."""


class RecordSource:
    """A StateSource over plain dicts of key -> record, for tools and tests."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[bytes, bytes]] = {ACTIVITY: {}, STUDENTS: {}}
        self.changed: dict[str, dict[bytes, int]] = {ACTIVITY: {}, STUDENTS: {}}

    def put(self, table: str, key: bytes, record: bytes, partition: int) -> None:
        self.tables[table][key] = record
        self.changed[table][key] = partition

    def records(self, table: str) -> Iterable[bytes]:
        return self.tables[table].values()

    def take_changed(self, table: str) -> dict[int, list[bytes]]:
        taken: dict[int, list[bytes]] = {}
        for key, partition in self.changed[table].items():
            taken.setdefault(partition, []).append(self.tables[table][key])
        self.changed[table] = {}
        return taken


Columns = dict[str, list]


def _columns(table: str) -> Columns:
    """Empty lists for the columns of ``table`` but snapshot_at."""
    return {n: [] for n in SNAPSHOT_TABLES[table].names if n != "snapshot_at"}


@dataclass
class CourseRows:
    """One partition's rows of the tables that course records fill.

    The days are kept as the records have them, flat (app.state.DAY_FIELDS
    numbers a day), with how many days each activity row has: Arrow makes
    the columns of engagement_daily from those (daily_table).
    """

    activity: Columns = field(default_factory=lambda: _columns(ACTIVITY))
    days: list[int] = field(default_factory=list)
    day_counts: list[int] = field(default_factory=list)
    released: Columns = field(default_factory=lambda: _columns(RELEASED))


def collect_courses(records: Iterable[bytes], targets: dict[int, CourseRows]) -> None:
    """Add each record's rows to its partition's, if it is one of ``targets``.

    This runs once per key of a full snapshot, so it does as little as it
    can: only the record's header is decoded (app.state.HEADER), the column
    lists are bound once, and a record's days are added a column at a time.
    """
    loads, version = orjson.loads, STATE_VERSION
    bound = {p: _bind(rows) for p, rows in targets.items()}
    for raw in records:
        end = raw.find(b"\n")
        header = loads(raw[:end]) if end > 0 else None
        if header is None or header[0] != version:  # an earlier version
            raw = CourseActivity.loads(raw).dumps()
            header = loads(raw[: raw.find(b"\n")])
        lists = bound.get(header[1])
        if lists is None:  # a partition another worker owns now
            continue
        activity, add_days, count_days, released = lists
        for append, value in zip(activity, header[2:_ACTIVITY_END]):  # noqa: B905
            append(value)
        team, student, course = header[2:5]
        days = header[_DAYS]
        add_days(days)
        count_days(len(days) // DAY_FIELDS)
        gone = header[_RELEASED]
        if gone:  # day, released_at, the four counts, folded at
            n = len(gone) // RELEASED_FIELDS
            columns = ([team] * n, [student] * n, [course] * n)
            columns += tuple(gone[i::RELEASED_FIELDS] for i in range(6))
            for extend, values in zip(released, columns, strict=True):
                extend(values)


_ACTIVITY_END = HEADER.index("team_name") + 1
_DAYS = HEADER.index("days")
_RELEASED = HEADER.index("released")


def _bind(rows: CourseRows) -> tuple[list, Any, Any, list]:
    activity = [rows.activity[name].append for name in HEADER[2:_ACTIVITY_END]]
    order = ("team_id", "student_id", "course_id", "day", "released_at")
    order += ("activity_events", "visits", "lesson_finishes", "comments")
    released = [rows.released[name].extend for name in order]
    return activity, rows.days.extend, rows.day_counts.append, released


def collect_students(records: Iterable[bytes], targets: dict[int, Columns]) -> None:
    bound = {
        p: [column.append for column in rows.values()] for p, rows in targets.items()
    }
    for raw in records:
        record = orjson.loads(raw)
        lists = bound.get(record["p"])
        if lists is None:
            continue
        team, student = record["key"]
        name, email = record["names"]
        for column, value in zip(
            lists,
            (team, student, *map(register_value, (name, email, record["created"]))),
            strict=True,
        ):
            column(value)


def to_table(table: str, columns: Columns, at_us: int) -> pa.Table:
    """Columns of ``table`` (without snapshot_at) as Arrow, snapshot_at = at_us."""
    schema = SNAPSHOT_TABLES[table]
    length = len(columns["team_id"])
    arrays = []
    for name in schema.names:
        kind = schema.field(name).type
        if name == "snapshot_at":
            arrays.append(pa.repeat(pa.scalar(at_us, type=kind), length))
        else:
            arrays.append(pa.array(columns[name], type=kind))
    return pa.table(arrays, schema=schema)


def daily_table(rows: CourseRows, activity: pa.Table) -> pa.Table:
    """engagement_daily's rows: each activity row's days, with its key."""
    schema = SNAPSHOT_TABLES[DAILY]
    offsets = pa.array(accumulate(rows.day_counts, initial=0), pa.int64())
    flat = pa.FixedSizeListArray.from_arrays(
        pa.array(rows.days, pa.int64()), DAY_FIELDS
    )
    per_row = pa.LargeListArray.from_arrays(offsets, flat)
    owners = pc.list_parent_indices(per_row)
    days = per_row.flatten()
    arrays = [pc.take(activity[name], owners) for name in schema.names[:3]]
    arrays.append(pc.list_element(days, 0).cast(pa.int32()).cast(pa.date32()))
    arrays += [pc.list_element(days, i) for i in range(1, DAY_FIELDS)]
    arrays.append(pc.take(activity["snapshot_at"], owners))
    return pa.table(arrays, schema=schema)


@dataclass
class SnapshotResult:
    partitions: int
    rows: int  # activity rows written
    full_partitions: int
    seconds: float  # reading the state and writing its files
    compacted: int  # partitions whose deltas were merged into a new base
    compact_seconds: float  # merging them, after the snapshot
    taken_at: datetime


@dataclass
class _Partition:
    """What this worker knows of a partition it owns."""

    base_rows: int = 0
    deltas: int = 0
    delta_rows: int = 0


@dataclass
class _Read:
    """A snapshot's rows, as read on the event loop."""

    full: set[int]
    courses: dict[int, list[bytes]]
    students: dict[int, list[bytes]]


class Snapshotter:
    """Writes the owned partitions' base or delta files, then the catalog."""

    def __init__(
        self,
        db_path: Path,
        snapshot_dir: Path,
        grace_seconds: float = 900.0,
        retention_days: float = DEFAULT_RETENTION_DAYS,
    ) -> None:
        self.db_path = db_path
        self.snapshot_dir = snapshot_dir
        self.grace_seconds = grace_seconds
        self.retention_days = retention_days
        self.last: SnapshotResult | None = None
        # Partition -> wall-clock us: every fold before it is in a durable
        # snapshot. Read by the folds (app.tracking), to let released days go.
        self.snapshotted: dict[int, int] = {}
        self._partitions: dict[int, _Partition] = {}  # those with a base from us
        self._generation = 0
        self._published = False  # the catalog was built whole by this process
        self._lock = asyncio.Lock()

    def forget(self, partitions: Iterable[int]) -> None:
        """These partitions left the worker: their next snapshot is whole."""
        self._generation += 1
        for partition in partitions:
            self._partitions.pop(partition, None)
            self.snapshotted.pop(partition, None)

    async def snapshot(self, source: StateSource, owned: set[int]) -> SnapshotResult:
        async with self._lock:
            started = time.perf_counter()
            taken_at = datetime.now(UTC)
            generation = self._generation
            full = owned - set(self._partitions)
            courses = await self._read(source, ACTIVITY, owned, full)
            students = await self._read(source, STUDENTS, owned, full)
            read = _Read(full, courses, students)
            try:
                rows, student_rows = await asyncio.to_thread(
                    self._write, read, taken_at
                )
            except BaseException:
                # What was taken from the source is not on disk: start over.
                self.forget(owned)
                raise
            if generation == self._generation:
                at_us = int(taken_at.timestamp() * 1_000_000)
                for partition in owned:
                    self.snapshotted[partition] = at_us
            written = time.perf_counter()
            due = [p for p, known in self._partitions.items() if self._due(known)]
            if due and generation == self._generation:
                try:
                    await asyncio.to_thread(self._compact, due)
                except Exception:
                    # The snapshot itself is published; the deltas stay in
                    # use, and the next snapshot tries again.
                    logger.exception("Could not compact partitions %s", due)
                    due = []
            else:
                due = []
            self.last = SnapshotResult(
                len(owned),
                rows,
                len(full),
                written - started,
                len(due),
                time.perf_counter() - written if due else 0.0,
                taken_at,
            )
            logger.info(
                "Snapshot of %d course and %d student rows (%d of %d partitions "
                "whole) in %.3f s, %d partitions compacted in %.3f s",
                rows,
                student_rows,
                len(full),
                len(owned),
                self.last.seconds,
                self.last.compacted,
                self.last.compact_seconds,
            )
            return self.last

    @staticmethod
    async def _read(
        source: StateSource, table: str, owned: set[int], full: set[int]
    ) -> dict[int, list[bytes]]:
        """The records to write: all of the full partitions, else the changed.

        A full read lets the event loop run every READ_CHUNK records (a store
        iterator reads the store as it was when it began); what the batches
        write meanwhile is in the changed keys the next snapshot takes.
        """
        changed = source.take_changed(table)
        taken = {p: changed.get(p, []) for p in owned - full}
        if full:
            # Records name their partition; collect_* skip the others.
            everything: list[bytes] = []
            for count, record in enumerate(source.records(table), 1):
                everything.append(record)
                if count % READ_CHUNK == 0:
                    await asyncio.sleep(0)
            for partition in full:
                taken[partition] = everything
        return taken

    @staticmethod
    def _due(known: _Partition) -> bool:
        return known.deltas >= COMPACT_AFTER_DELTAS or (
            known.deltas > 0
            and known.delta_rows > COMPACT_AFTER_SHARE * known.base_rows
        )

    def _write(self, read: _Read, taken_at: datetime) -> tuple[int, int]:
        """Write the partitions' files and the catalog; the rows written."""
        at_us = int(taken_at.timestamp() * 1_000_000)
        version = version_of(taken_at)
        owned = set(read.courses)
        courses = {p: CourseRows() for p in owned}
        students = {p: _columns(STUDENTS) for p in owned}
        if read.full:
            # A full partition's records are the whole table: read it once.
            first = next(iter(read.full))
            collect_courses(read.courses[first], {p: courses[p] for p in read.full})
            collect_students(read.students[first], {p: students[p] for p in read.full})
        for partition in owned - read.full:
            collect_courses(read.courses[partition], {partition: courses[partition]})
            collect_students(read.students[partition], {partition: students[partition]})

        rows = student_count = 0
        wrote = False
        for partition in sorted(owned):
            base = partition in read.full
            kind = "base" if base else "delta"
            course_rows, student_rows = courses[partition], students[partition]
            count = len(course_rows.activity["team_id"])
            rows += count
            student_count += len(student_rows["team_id"])
            if not (base or count or student_rows["team_id"]):
                continue  # nothing changed in this partition
            wrote = True
            self._write_partition(
                partition, kind, course_rows, student_rows, version, at_us
            )
            known = self._partitions.setdefault(partition, _Partition())
            if base:
                known.base_rows, known.deltas, known.delta_rows = count, 0, 0
            else:
                known.deltas += 1
                known.delta_rows += count + len(student_rows["team_id"])
        if wrote or not self.db_path.exists():
            self._publish()
        return rows, student_count

    def _write_partition(
        self,
        partition: int,
        kind: str,
        course_rows: CourseRows,
        student_rows: Columns,
        version: str,
        at_us: int,
    ) -> None:
        """A partition's files of one snapshot: a whole base, or the changes."""

        def write(table: str, data: pa.Table, kind: str = kind) -> Path:
            path = layer_file(self.snapshot_dir, table, kind, partition, version)
            write_file(path, data)
            return path

        base = kind == "base"
        activity = to_table(ACTIVITY, course_rows.activity, at_us)
        # Released days first, then the days, then the activity rows: an
        # activity file on disk always has its days (analytics.snapshots).
        if course_rows.released["team_id"]:
            write(RELEASED, to_table(RELEASED, course_rows.released, at_us), "delta")
        if base or activity.num_rows:
            write(DAILY, daily_table(course_rows, activity))
        if base or student_rows["team_id"]:
            write(STUDENTS, to_table(STUDENTS, student_rows, at_us))
        if base or activity.num_rows:
            path = write(ACTIVITY, activity)
            if self.retention_days > 0:
                keep_in_history(self.snapshot_dir, path, partition, version)

    def _publish(self) -> None:
        # Last: until the catalog names the new files, readers see the
        # previous snapshot whole, and so does anyone after a crash.
        write_catalog(
            self.db_path, self.snapshot_dir, self.retention_days, self._published
        )
        self._published = True
        removed = prune(self.snapshot_dir, self.grace_seconds, self.retention_days)
        if removed:
            logger.info("Deleted %d superseded snapshot files", removed)

    async def compact(self, partitions: Iterable[int] | None = None) -> float:
        """Compact these partitions (default: all this worker has); seconds taken."""
        async with self._lock:
            started = time.perf_counter()
            chosen = list(self._partitions if partitions is None else partitions)
            await asyncio.to_thread(self._compact, chosen)
            return time.perf_counter() - started

    def _compact(self, partitions: list[int]) -> None:
        """Merge each partition's base and deltas into a new base, in DuckDB."""
        current = current_layers(self.snapshot_dir)
        with duckdb.connect() as connection:
            for partition in partitions:
                layers = current.get(partition)
                if (
                    layers is None
                    or not layers.deltas[ACTIVITY] + layers.deltas[STUDENTS]
                ):
                    continue
                # Named after the newest delta it merges, of any table: the
                # deltas up to it are then superseded, and no name is reused.
                version = layers.newest_version
                for table in (RELEASED, DAILY, STUDENTS):
                    if table == RELEASED and not layers.deltas[RELEASED]:
                        continue
                    self._merge(connection, layers, table, partition, version)
                rows = self._merge(connection, layers, ACTIVITY, partition, version)
                self._partitions[partition] = _Partition(base_rows=rows)
        self._publish()

    def _merge(
        self,
        connection: duckdb.DuckDBPyConnection,
        layers: Current,
        table: str,
        partition: int,
        version: str,
    ) -> int:
        bases = [layers.bases[table]] if layers.bases[table] else []
        query = current_sql(
            self.snapshot_dir,
            table,
            bases,
            layers.deltas[table],
            layers.deltas[ACTIVITY],
        )
        path = layer_file(self.snapshot_dir, table, "base", partition, version)
        temporary = path.with_name(f".{path.name}.compact.tmp")
        connection.execute(
            f"COPY ({query}) TO {sql_literal(temporary)} "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        publish(temporary, path)
        return connection.execute(
            f"SELECT count(*) FROM read_parquet({sql_literal(path)})"
        ).fetchone()[0]
