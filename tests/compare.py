"""Compare what DuckDB shows with tests/expected.py's computation."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

from analytics.catalog import connect_readonly
from tests.expected import (
    ExpectedActivity,
    ExpectedDay,
    ExpectedStudent,
    expected_activity,
    expected_daily,
    expected_students,
)


def _rows(connection, sql: str, key_width: int, shape: type) -> dict:
    columns = [f.name for f in fields(shape)]
    rows = connection.execute(sql.format(columns=", ".join(columns))).fetchall()
    table = {row[:key_width]: shape(*row[key_width:]) for row in rows}
    assert len(table) == len(rows), "a key appears more than once"
    return table


def read_tables(db_path: Path) -> tuple[dict, dict, dict]:
    with connect_readonly(db_path) as connection:
        activity = _rows(
            connection,
            "SELECT team_id, student_id, course_id, {columns} "
            "FROM student_course_activity",
            3,
            ExpectedActivity,
        )
        students = _rows(
            connection,
            "SELECT team_id, student_id, {columns} FROM students",
            2,
            ExpectedStudent,
        )
        daily = _rows(
            connection,
            "SELECT team_id, student_id, course_id, day, {columns} "
            "FROM engagement_daily",
            4,
            ExpectedDay,
        )
    return activity, students, daily


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, expected in want.items():
        have, should = asdict(got[key]), asdict(expected)
        differing = {f: (have[f], should[f]) for f in should if have[f] != should[f]}
        assert not differing, f"{key}: (got, expected) {differing}"


def assert_exact(db_path: Path, documents: list[dict]) -> dict:
    """Every row of the three tables equals the computation; returns activity."""
    activity, students, daily = read_tables(db_path)
    want = expected_activity(documents)
    _assert_same(activity, want)
    _assert_same(students, expected_students(documents))
    _assert_same(daily, expected_daily(documents))
    return want
