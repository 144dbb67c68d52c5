"""Immutable Parquet files, one per table, Kafka partition and snapshot.

A key lives in exactly one partition, and one worker owns a partition at a
time, so a file per partition lets several workers snapshot side by side and
still show every key once. Each file is written under a temporary name, synced
and renamed, and never written again: a snapshot adds a new version of each
partition's file, named after the snapshot's time, and the catalog (the
``.duckdb`` file) is then rebuilt to name the newest version of every
partition. A reader's views name files that exist, whatever snapshot runs
meanwhile; a crash mid-snapshot leaves the catalog naming the previous one.

Superseded versions are deleted once their successor is older than a grace
period, long enough for any query that began before it to end.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analytics.schema import SNAPSHOT_TABLES

EMPTY_FILE = "_empty.parquet"
# The tables whose partitions are snapshotted whole, in versions. The others
# (the daily archive, rejected events) only ever gain files.
VERSIONED_TABLES = ("student_course_activity", "students", "engagement_daily")
_VERSION = re.compile(r"^partition-(\d{4})-(\d{8}T\d{12})\.parquet$")


def partition_file(
    snapshot_dir: Path, table: str, partition: int, taken_at: datetime
) -> Path:
    version = taken_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")
    return snapshot_dir / table / f"partition-{partition:04d}-{version}.parquet"


def _versions(snapshot_dir: Path, table: str) -> dict[int, list[Path]]:
    """Each partition's files, oldest first."""
    found: dict[int, list[Path]] = {}
    folder = snapshot_dir / table
    if not folder.is_dir():
        return found
    for path in folder.iterdir():
        match = _VERSION.match(path.name)
        if match:
            found.setdefault(int(match.group(1)), []).append(path)
    for paths in found.values():
        paths.sort()
    return found


def latest_files(snapshot_dir: Path, table: str) -> dict[int, Path]:
    """The newest version of each partition's file."""
    return {p: paths[-1] for p, paths in _versions(snapshot_dir, table).items()}


def current_files(snapshot_dir: Path, table: str) -> list[Path]:
    """The newest version of every partition, and the empty file."""
    newest = [path for _, path in sorted(latest_files(snapshot_dir, table).items())]
    return [snapshot_dir / table / EMPTY_FILE, *newest]


def prune_versions(snapshot_dir: Path, grace_seconds: float) -> int:
    """Delete versions superseded more than grace_seconds ago; return how many."""
    now = time.time()
    removed = 0
    for table in VERSIONED_TABLES:
        for paths in _versions(snapshot_dir, table).values():
            for old, successor in zip(paths, paths[1:], strict=False):
                try:
                    if now - successor.stat().st_mtime > grace_seconds:
                        old.unlink(missing_ok=True)
                        removed += 1
                except FileNotFoundError:  # another worker pruned it first
                    continue
    return removed


def write_file(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` so that a reader sees all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, path)


def write_partition(
    snapshot_dir: Path,
    table: str,
    partition: int,
    columns: dict[str, list],
    taken_at: datetime,
) -> Path:
    """Write the version ``taken_at`` of one partition of ``table``."""
    data = pa.Table.from_pydict(columns, schema=SNAPSHOT_TABLES[table])
    path = partition_file(snapshot_dir, table, partition, taken_at)
    write_file(path, data)
    return path


def ensure_layout(snapshot_dir: Path) -> None:
    """Give every table an empty file, so its view reads before any snapshot."""
    for table, schema in SNAPSHOT_TABLES.items():
        path = snapshot_dir / table / EMPTY_FILE
        if not path.exists():
            write_file(path, schema.empty_table())
