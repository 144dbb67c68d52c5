"""Reading the analysis views for the CLI: filters, as-of time, export.

Only the views named here can be asked for, so a name never reaches SQL
unchecked; every other value goes in as a query parameter.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from analytics.catalog import connect_readonly
from analytics.views import VIEWS
from engagement.errors import EngagementError

PERSONAL_COLUMNS = ("student_name", "student_email")


class QueryError(EngagementError):
    """A request the views cannot answer; the message says why."""


def read_view(
    db_path: Path,
    name: str,
    as_of: datetime | None = None,
    team: str | None = None,
    course: str | None = None,
    limit: int | None = None,
) -> pa.Table:
    """The rows of one view, as of a time, for a team and a course."""
    view = VIEWS.get(name)
    if view is None:
        raise QueryError(f"No view {name!r}; the views are: {', '.join(VIEWS)}.")
    if team is not None and not view.has_team:
        raise QueryError(f"{name} has no team_id column to filter on.")
    if course is not None and not view.has_course:
        raise QueryError(f"{name} has no course_id column to filter on.")
    if as_of is not None and not view.as_of:
        raise QueryError(f"{name} is the state as it stands; it takes no --as-of.")
    if not db_path.exists():
        raise QueryError(
            f"{db_path} does not exist yet: the worker writes it at its first "
            "snapshot. `engagement demo` writes var/demo/engagement.duckdb: "
            "pass --duckdb var/demo/engagement.duckdb to query that one."
        )

    if view.as_of:
        moment = as_of or datetime.now(UTC)
        source, parameters = f"{name}_at(?)", [moment]
    else:
        source, parameters = name, []
    conditions = []
    if team is not None:
        conditions.append("team_id = ?")
        parameters.append(team)
    if course is not None:
        conditions.append("course_id = ?")
        parameters.append(course)
    sql = f"SELECT * FROM {source}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    if limit is not None:
        sql += " LIMIT ?"
        parameters.append(limit)
    if not db_path.is_file():
        raise QueryError(f"{db_path} is not a file: name the .duckdb database.")
    try:
        with connect_readonly(db_path) as connection:
            return connection.sql(sql, params=parameters).to_arrow_table()
    except duckdb.Error as error:
        raise QueryError(explain(db_path, error)) from None


def explain(db_path: Path, error: duckdb.Error) -> str:
    """What a DuckDB failure means for someone querying the engagement database."""
    text = str(error).splitlines()[0]
    if isinstance(error, duckdb.CatalogException):
        return (
            f"{db_path} has no engagement views ({text}); it is not the worker's "
            "database, or was written by an older version: a snapshot rewrites it."
        )
    if isinstance(error, duckdb.IOException):
        return (
            f"Could not read {db_path} or its snapshot files ({text}). The views "
            "name the snapshot folder by its absolute path, so the database "
            "cannot be moved or copied without it; a database replaced by a new "
            "demo run loses its old files."
        )
    return f"The query failed: {text}"


def pseudonymize(table: pa.Table, key: bytes) -> pa.Table:
    """Names and e-mails replaced by keyed hashes, stable for the same key."""
    if not key:
        raise QueryError(
            "Pseudonymising needs a key: set ENGAGEMENT_PSEUDONYM_KEY to a secret "
            "kept by the school (the same key gives the same pseudonyms)."
        )
    for column in PERSONAL_COLUMNS:
        if column not in table.column_names:
            continue
        values = table.column(column).to_pylist()
        hashed = [
            None
            if value is None
            else hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:20]
            for value in values
        ]
        index = table.column_names.index(column)
        table = table.set_column(index, column, pa.array(hashed, pa.string()))
    return table


def export_format(output: Path, file_format: str | None) -> str:
    """The format asked for, or the one the file name says (.parquet, else csv)."""
    if file_format is None:
        return "parquet" if output.suffix.lower() == ".parquet" else "csv"
    return file_format


def write_export(table: pa.Table, output: Path, file_format: str) -> None:
    if output.is_dir() or not output.name:
        raise QueryError(f"{output} is a folder: name the file to write.")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if file_format == "parquet":
            pq.write_table(table, output, compression="zstd")
        elif file_format == "csv":
            # Lists (none in the views today) would not fit a CSV cell.
            pa_csv.write_csv(_flat(table), output)
        else:
            raise QueryError(f"Unknown export format {file_format!r}: csv or parquet.")
    except OSError as error:
        raise QueryError(
            f"Could not write {output}: {error.strerror or error}"
        ) from None


def _flat(table: pa.Table) -> pa.Table:
    for index, field in enumerate(table.schema):
        if pa.types.is_list(field.type):
            joined = pc.binary_join(table.column(index), "; ")
            table = table.set_column(index, field.name, joined)
    return table
