"""Immutable Parquet files, per table, Kafka partition and snapshot.

A key lives in exactly one partition, and one worker owns a partition at a
time, so files per partition let several workers snapshot side by side and
still show every key once. Each file is written under a temporary name,
synced and given its name by a hard link, which fails rather than replace a
file: once named, a file never changes.

A partition of a table is a *base* file (every key) and the *delta* files of
the snapshots after it (only the keys that changed), each named after its
snapshot's time, its *version*::

    student_course_activity/base-0003-20261201T120000000000.parquet
    student_course_activity/delta-0003-20261201T120100000000.parquet

A key's current row is its row in the newest delta that has it, else in the
base. A worker writes a base when it starts owning a partition, and deltas
after; compaction merges a base and its deltas into a new base, named after
the newest delta it merged (of any table). The bases of
student_course_activity, students and engagement_daily are written together,
so a partition's base version is the newest one all three have: a crash
between them leaves the previous base in use. engagement_daily's deltas hold
every day of the keys in the activity delta of the same version, and are
written first, so an activity delta on disk always has its days.

Days the worker let go (engagement_daily_released) are kept forever, in the
same base and delta files; the catalog names those up to the partition's
newest activity version, so the days a snapshot removed from a key appear
with that snapshot, not before.

The catalog (the ``.duckdb`` file) is rebuilt after every snapshot to name
the current files. A reader's views name files that exist, whatever snapshot
runs meanwhile; a crash mid-snapshot leaves the catalog naming the previous
one. Superseded files are deleted once what superseded them is older than a
grace period, long enough for any query that began before to end.

student_course_activity_history keeps every activity base and delta a worker
wrote (not compaction's), for ``retention_days``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analytics.schema import SNAPSHOT_TABLES

EMPTY_FILE = "_empty.parquet"
ACTIVITY = "student_course_activity"
STUDENTS = "students"
DAILY = "engagement_daily"
RELEASED = "engagement_daily_released"
HISTORY = "student_course_activity_history"
BASE_TABLES = (ACTIVITY, STUDENTS, DAILY)
LAYERED_TABLES = (*BASE_TABLES, RELEASED)
KEYS = {
    ACTIVITY: ("team_id", "student_id", "course_id"),
    STUDENTS: ("team_id", "student_id"),
}
_FILE = re.compile(r"^(base|delta|partition)-(\d{4})-(\d{8}T\d{12})\.parquet$")
_VERSION_FORMAT = "%Y%m%dT%H%M%S%f"


def version_of(taken_at: datetime) -> str:
    return taken_at.astimezone(UTC).strftime(_VERSION_FORMAT)


def version_time(version: str) -> datetime:
    return datetime.strptime(version, _VERSION_FORMAT).replace(tzinfo=UTC)


def layer_file(
    snapshot_dir: Path, table: str, kind: str, partition: int, version: str
) -> Path:
    return snapshot_dir / table / f"{kind}-{partition:04d}-{version}.parquet"


@dataclass
class Layers:
    """One table's files of one partition."""

    bases: dict[str, Path] = field(default_factory=dict)  # version -> file
    deltas: dict[str, Path] = field(default_factory=dict)


def list_layers(snapshot_dir: Path, table: str) -> dict[int, Layers]:
    found: dict[int, Layers] = {}
    folder = snapshot_dir / table
    if not folder.is_dir():
        return found
    for path in folder.iterdir():
        match = _FILE.match(path.name)
        if match:
            kind, partition, version = match.groups()
            layers = found.setdefault(int(partition), Layers())
            # "partition-" files are whole snapshots of an earlier layout.
            (layers.deltas if kind == "delta" else layers.bases)[version] = path
    return found


@dataclass
class Current:
    """The files a partition's views read now, per table."""

    base_version: str
    top_version: str  # the newest activity version in use
    newest_version: str  # the newest version of any of its files in use
    files: dict[str, list[Path]]  # table -> base (if any) then its deltas
    bases: dict[str, Path | None]
    deltas: dict[str, list[Path]]


def current_layers(snapshot_dir: Path) -> dict[int, Current]:
    """For every partition that has a complete base, the files in use."""
    layers = {table: list_layers(snapshot_dir, table) for table in LAYERED_TABLES}
    result: dict[int, Current] = {}
    for partition, activity in layers[ACTIVITY].items():
        complete = set(activity.bases)
        for table in (STUDENTS, DAILY):
            complete &= set(layers[table].get(partition, Layers()).bases)
        if not complete:
            continue
        base_version = max(complete)
        bases: dict[str, Path | None] = {}
        deltas: dict[str, list[Path]] = {}
        for table in BASE_TABLES:
            own = layers[table][partition]
            bases[table] = own.bases[base_version]
            deltas[table] = [
                path
                for version, path in sorted(own.deltas.items())
                if version > base_version
            ]
        top_version = max(
            [base_version, *(v for v in activity.deltas if v > base_version)]
        )
        released = layers[RELEASED].get(partition, Layers())
        released_bases = [v for v in released.bases if v <= top_version]
        released_base = max(released_bases) if released_bases else None
        bases[RELEASED] = released.bases[released_base] if released_base else None
        deltas[RELEASED] = [
            path
            for version, path in sorted(released.deltas.items())
            if version <= top_version
            and (released_base is None or version > released_base)
        ]
        files = {
            table: [*([bases[table]] if bases[table] else []), *deltas[table]]
            for table in LAYERED_TABLES
        }
        newest_version = max(
            [base_version, *(version_in(p) for paths in deltas.values() for p in paths)]
        )
        result[partition] = Current(
            base_version, top_version, newest_version, files, bases, deltas
        )
    return result


def version_in(path: Path) -> str:
    match = _FILE.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a snapshot file")
    return match.group(3)


def history_files(snapshot_dir: Path, retention_days: float) -> list[Path]:
    """History files within retention, oldest first."""
    oldest = version_of(
        datetime.fromtimestamp(time.time() - retention_days * 86400, UTC)
    )
    files = []
    for partition_layers in list_layers(snapshot_dir, HISTORY).values():
        files += [p for v, p in partition_layers.deltas.items() if v >= oldest]
    return sorted(files, key=lambda path: path.name[11:])


def prune(snapshot_dir: Path, grace_seconds: float, retention_days: float) -> int:
    """Delete what nothing current names for grace_seconds; return how many."""
    now = time.time()
    removed = 0

    mtimes: dict[Path, float] = {}

    def aged(path: Path) -> bool:
        # Each base's time is read once, before this pass deletes anything:
        # a base superseded itself still times what it superseded.
        if path not in mtimes:
            try:
                mtimes[path] = path.stat().st_mtime
            except FileNotFoundError:
                return False
        return now - mtimes[path] > grace_seconds

    def remove(path: Path) -> None:
        nonlocal removed
        path.unlink(missing_ok=True)  # another worker may have pruned it first
        removed += 1

    layers = {table: list_layers(snapshot_dir, table) for table in LAYERED_TABLES}
    for table, partitions in layers.items():
        for partition, own in partitions.items():
            # A file is superseded by the first base after it (at or after,
            # for a delta: compaction names its base after the last delta it
            # merged). Only a base all three tables have counts: one left
            # incomplete by a crash replaces nothing.
            if table == RELEASED:
                usable = set(own.bases)
            else:
                usable = set.intersection(
                    *(
                        set(layers[t].get(partition, Layers()).bases)
                        for t in BASE_TABLES
                    )
                )
            bases = sorted((v, own.bases.get(v)) for v in usable)
            files = [(v, p, True) for v, p in own.bases.items()]
            files += [(v, p, False) for v, p in own.deltas.items()]
            for _, base in bases:
                if base is not None:
                    aged(base)
            for version, path, is_base in files:
                after = [
                    base
                    for v, base in bases
                    if base is not None and (v > version if is_base else v >= version)
                ]
                if after and aged(after[0]):
                    remove(path)

    oldest = version_of(
        datetime.fromtimestamp(now - retention_days * 86400 - grace_seconds, UTC)
    )
    for own in list_layers(snapshot_dir, HISTORY).values():
        for version, path in own.deltas.items():
            if version < oldest:
                remove(path)
    return removed


def write_file(path: Path, table: pa.Table, exist_ok: bool = False) -> None:
    """Write ``table`` to ``path`` so that a reader sees all of it or none.

    ``exist_ok``: a file already there holds the same rows (one written again
    after a crash); keep it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    publish(temporary, path, exist_ok)


def publish(temporary: Path, path: Path, exist_ok: bool = False) -> None:
    """Sync a finished file and give it its final name, which must be new.

    A hard link, not a rename: it fails rather than replace a file that a
    catalog may name (FileExistsError), so a file never changes once named.
    """
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        if not exist_ok:
            raise
    finally:
        temporary.unlink(missing_ok=True)


def keep_in_history(
    snapshot_dir: Path, path: Path, partition: int, version: str
) -> None:
    """Link an activity file into the history (a copy where links fail)."""
    target = layer_file(snapshot_dir, HISTORY, "delta", partition, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        os.link(path, target)
    except OSError:
        write_file(target, pq.read_table(path))


def ensure_layout(snapshot_dir: Path) -> None:
    """Give every table an empty file, so its view reads before any snapshot."""
    for table, schema in SNAPSHOT_TABLES.items():
        path = snapshot_dir / table / EMPTY_FILE
        if not path.exists():  # another worker may be writing it too
            write_file(path, schema.empty_table(), exist_ok=True)


def empty_file(snapshot_dir: Path, table: str) -> Path:
    return snapshot_dir / table / EMPTY_FILE


def _list(paths: Iterable[Path]) -> str:
    return "[" + ", ".join(sql_literal(path) for path in paths) + "]"


def sql_literal(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "''") + "'"


def _read(snapshot_dir: Path, table: str, paths: Iterable[Path]) -> str:
    files = _list([empty_file(snapshot_dir, table), *paths])
    return f"read_parquet({files}, union_by_name = true)"


def current_sql(
    snapshot_dir: Path,
    table: str,
    bases: Iterable[Path],
    deltas: Iterable[Path],
    activity_deltas: Iterable[Path] = (),
) -> str:
    """The current rows of ``table`` from its base and delta files."""
    base, delta = _read(snapshot_dir, table, bases), _read(snapshot_dir, table, deltas)
    if table in KEYS:
        key = ", ".join(KEYS[table])
        return f"""
            WITH delta AS (
                SELECT * FROM {delta}
                QUALIFY row_number() OVER (
                    PARTITION BY {key} ORDER BY snapshot_at DESC) = 1
            )
            SELECT * FROM {base} ANTI JOIN delta USING ({key})
            UNION ALL BY NAME
            SELECT * FROM delta"""
    if table == DAILY:
        # A changed key's days are those of its newest delta: the days the
        # horizon let go are gone from it (they are in the released table).
        latest = _read(snapshot_dir, ACTIVITY, activity_deltas)
        return f"""
            WITH latest AS (
                SELECT team_id, student_id, course_id, max(snapshot_at) AS snapshot_at
                FROM {latest}
                GROUP BY team_id, student_id, course_id
            )
            SELECT * FROM {base}
            ANTI JOIN latest USING (team_id, student_id, course_id)
            UNION ALL BY NAME
            SELECT * FROM {delta}
            SEMI JOIN latest USING (team_id, student_id, course_id, snapshot_at)"""
    if table == RELEASED:
        # A released day can be written by several snapshots (until the
        # worker knows one is durable): its stamp tells the copies apart.
        return f"""
            SELECT * FROM (
                SELECT * FROM {base} UNION ALL BY NAME SELECT * FROM {delta})
            QUALIFY row_number() OVER (
                PARTITION BY team_id, student_id, course_id, day, released_at) = 1"""
    raise ValueError(f"{table} has no layers")
