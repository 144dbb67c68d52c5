"""The ``.duckdb`` file: views and macros over the Parquet snapshots, nothing else.

DuckDB lets one process write a database file, and a reader holding it blocks
that writer. So the file is never written in place: after every snapshot a new
one is built under a temporary name and renamed over the old. Readers that
hold the old file keep reading it, and the files its views name (they are kept
for a grace period); the next one to open the path sees the new snapshot.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import duckdb

from analytics.snapshots import VERSIONED_TABLES, current_files, ensure_layout


def _literal(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "''") + "'"


def views_sql(snapshot_dir: Path) -> str:
    """The views, naming the newest file of every partition of every table."""
    sql = resources.files("analytics").joinpath("sql/views.sql").read_text()
    for table in VERSIONED_TABLES:
        files = ", ".join(_literal(path) for path in current_files(snapshot_dir, table))
        sql = sql.replace(f"{{files:{table}}}", f"[{files}]")
    return sql.replace("{snapshots}", _literal(snapshot_dir)[1:-1])


def write_catalog(db_path: Path, snapshot_dir: Path) -> None:
    """(Re)build ``db_path`` with views over the snapshots in ``snapshot_dir``."""
    ensure_layout(snapshot_dir)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)

    with duckdb.connect(str(temporary)) as connection:
        connection.execute(views_sql(snapshot_dir))
        connection.execute("CHECKPOINT")
    os.replace(temporary, db_path)
    Path(f"{temporary}.wal").unlink(missing_ok=True)


def connect_readonly(db_path: Path) -> duckdb.DuckDBPyConnection:
    """Open the database the way analysts and the dashboard should."""
    return duckdb.connect(str(db_path), read_only=True)
