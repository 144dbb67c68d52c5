"""End to end on the real broker: signed POSTs → Kafka → Faust → DuckDB.

Each test runs ``engagement demo``'s code path on an input file, then compares
every row of every table with tests/expected.py's computation from the input.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import UTC, datetime

import pytest

from analytics.catalog import connect_readonly
from engagement.demo import run_demo
from engagement.settings import Settings
from tests.conftest import FIXTURES
from tests.expected import (
    ExpectedActivity,
    ExpectedDay,
    ExpectedStudent,
    expected_activity,
    expected_daily,
    expected_students,
    load_documents,
)

pytestmark = pytest.mark.kafka

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
SINGLE_EVENT_FILES = sorted(p.name for p in (FIXTURES / "alpaclass").glob("*.json"))


def _rows(connection, sql: str, key_width: int, shape: type) -> dict:
    columns = [f.name for f in fields(shape)]
    cursor = connection.execute(sql.format(columns=", ".join(columns)))
    rows = cursor.fetchall()
    table = {row[:key_width]: shape(*row[key_width:]) for row in rows}
    assert len(table) == len(rows), "a key appears more than once"
    return table


def _run(kafka_bootstrap: str, path, tmp_path) -> tuple:
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    db_path = tmp_path / "engagement.duckdb"
    result = run_demo(settings, path, db_path, AS_OF)
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
        risk = {
            row[:3]: row[3]
            for row in connection.execute(
                "SELECT team_id, student_id, course_id, days_since_last_seen "
                "FROM churn_risk_at(?)",
                [AS_OF],
            ).fetchall()
        }
    return result, activity, students, daily, risk


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, expected in want.items():
        assert asdict(got[key]) == asdict(expected), key


def _assert_exact(path, activity, students, daily, risk) -> None:
    documents = load_documents(path)
    want = expected_activity(documents)

    _assert_same(activity, want)
    _assert_same(students, expected_students(documents))
    _assert_same(daily, expected_daily(documents))

    unfinished = {key for key, value in want.items() if not value.course_finished}
    assert set(risk) == unfinished
    for key in unfinished:
        days = (AS_OF - want[key].last_seen_at).total_seconds() / 86_400
        assert risk[key] == pytest.approx(days, abs=1e-9), key


@pytest.mark.parametrize("name", ["alpaclass-sample.jsonl", "alpaclass-tricky.jsonl"])
def test_streams_give_exact_state(name, fixtures_dir, kafka_bootstrap, tmp_path):
    path = fixtures_dir / name
    documents = load_documents(path)

    result, *tables = _run(kafka_bootstrap, path, tmp_path)

    assert result.sent == len(documents)
    assert result.accepted == len(documents)
    assert result.keys == len(tables[0])
    _assert_exact(path, *tables)


@pytest.mark.parametrize("name", SINGLE_EVENT_FILES)
def test_each_example_body_goes_through_alone(
    name, fixtures_dir, kafka_bootstrap, tmp_path
):
    path = fixtures_dir / "alpaclass" / name

    result, *tables = _run(kafka_bootstrap, path, tmp_path)

    assert (result.sent, result.accepted, result.rejected) == (1, 1, 0)
    _assert_exact(path, *tables)
