"""Immutable Parquet files, one per table and Kafka partition.

A key lives in exactly one partition, and one worker owns a partition at a
time, so a file per partition lets several workers snapshot side by side and
still show every key once. Each file is written under a temporary name, synced
and renamed: a reader, or a crash mid-write, only ever sees whole files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analytics.schema import SNAPSHOT_TABLES

EMPTY_FILE = "_empty.parquet"


def partition_file(snapshot_dir: Path, table: str, partition: int) -> Path:
    return snapshot_dir / table / f"partition-{partition:04d}.parquet"


def write_file(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` so that a reader sees all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, path)


def write_partition(
    snapshot_dir: Path, table: str, partition: int, columns: dict[str, list]
) -> Path:
    """Replace the snapshot of one partition of ``table`` with ``columns``."""
    data = pa.Table.from_pydict(columns, schema=SNAPSHOT_TABLES[table])
    path = partition_file(snapshot_dir, table, partition)
    write_file(path, data)
    return path


def ensure_layout(snapshot_dir: Path) -> None:
    """Give every table an empty file, so its view reads before any snapshot."""
    for table, schema in SNAPSHOT_TABLES.items():
        path = snapshot_dir / table / EMPTY_FILE
        if not path.exists():
            write_file(path, schema.empty_table())
