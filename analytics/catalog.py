"""The ``.duckdb`` file: views and macros over the Parquet snapshots, nothing else.

DuckDB lets one process write a database file, and a reader holding it blocks
that writer. So the file is never written in place: after every snapshot a new
one is built under a temporary name and renamed over the old. Readers that
hold the old file keep reading it, and the files its views name (they are kept
for a grace period); the next one to open the path sees the new snapshot.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

import duckdb

from analytics.snapshots import (
    ACTIVITY,
    HISTORY,
    LAYERED_TABLES,
    current_layers,
    current_sql,
    empty_file,
    ensure_layout,
    history_files,
    sql_literal,
)

DEFAULT_RETENTION_DAYS = 90.0


def _sql(name: str) -> str:
    return resources.files("analytics").joinpath(f"sql/{name}").read_text()


def tables_sql(snapshot_dir: Path, retention_days: float) -> str:
    """The tables' views, naming the current files of every partition."""
    sql = _sql("tables.sql")
    current = current_layers(snapshot_dir)
    activity = [path for c in current.values() for path in c.deltas[ACTIVITY]]
    for table in LAYERED_TABLES:
        bases = [base for c in current.values() if (base := c.bases[table])]
        deltas = [path for c in current.values() for path in c.deltas[table]]
        query = current_sql(snapshot_dir, table, bases, deltas, activity)
        sql = sql.replace(f"{{current:{table}}}", query)
    history = [empty_file(snapshot_dir, HISTORY)]
    history += history_files(snapshot_dir, retention_days)
    return sql.replace(
        "{files:history}", "[" + ", ".join(map(sql_literal, history)) + "]"
    )


def views_sql(
    snapshot_dir: Path, retention_days: float = DEFAULT_RETENTION_DAYS
) -> str:
    """Every view and macro of the database."""
    analyses = _sql("views.sql").replace("{snapshots}", sql_literal(snapshot_dir)[1:-1])
    return tables_sql(snapshot_dir, retention_days) + "\n" + analyses


def write_catalog(
    db_path: Path,
    snapshot_dir: Path,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    refresh: bool = False,
) -> None:
    """(Re)build ``db_path`` with views over the snapshots in ``snapshot_dir``.

    ``refresh``: the database at ``db_path`` was built by this code; copy it
    and replace the tables' views only (the analyses name them, and DuckDB
    binds a view when it is queried), which is much faster than a rebuild.
    """
    ensure_layout(snapshot_dir)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    Path(f"{temporary}.wal").unlink(missing_ok=True)
    refresh = refresh and db_path.exists()
    if refresh:
        shutil.copyfile(db_path, temporary)

    with duckdb.connect(str(temporary)) as connection:
        if refresh:
            connection.execute(tables_sql(snapshot_dir, retention_days))
        else:
            connection.execute(views_sql(snapshot_dir, retention_days))
        connection.execute("CHECKPOINT")
    os.replace(temporary, db_path)
    Path(f"{temporary}.wal").unlink(missing_ok=True)


def connect_readonly(db_path: Path) -> duckdb.DuckDBPyConnection:
    """Open the database the way analysts and the dashboard should."""
    return duckdb.connect(str(db_path), read_only=True)
