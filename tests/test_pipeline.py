"""End to end on the real broker: signed POSTs → Kafka → Faust → DuckDB.

Each test runs ``engagement demo``'s code path on an input file, then compares
every row of ``student_course_activity`` with tests/expected.py's computation.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analytics.catalog import connect_readonly
from engagement.demo import run_demo
from engagement.settings import Settings
from tests.conftest import FIXTURES
from tests.expected import expected_activity, load_documents

pytestmark = pytest.mark.kafka

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
SINGLE_EVENT_FILES = sorted(p.name for p in (FIXTURES / "alpaclass").glob("*.json"))


def _run(kafka_bootstrap: str, path, tmp_path):
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    db_path = tmp_path / "engagement.duckdb"
    result = run_demo(settings, path, db_path, AS_OF)
    with connect_readonly(db_path) as connection:
        rows = connection.execute(
            "SELECT team_id, student_id, course_id, first_seen_at, last_seen_at, "
            "activity_events FROM student_course_activity"
        ).fetchall()
        risk = dict(
            ((r[0], r[1], r[2]), r[3])
            for r in connection.execute(
                "SELECT team_id, student_id, course_id, days_since_last_seen "
                "FROM churn_risk_at(?)",
                [AS_OF],
            ).fetchall()
        )
    return result, rows, risk


def _assert_exact(path, rows, risk) -> None:
    expected = expected_activity(load_documents(path))
    got = {
        (team, student, course): (first, last, count)
        for team, student, course, first, last, count in rows
    }

    assert len(rows) == len(got), "a key appears more than once"
    assert set(got) == set(expected)
    for key, want in expected.items():
        first, last, count = got[key]
        assert first == want.first_seen_at, key
        assert last == want.last_seen_at, key
        assert count == want.activity_events, key
        days = (AS_OF - want.last_seen_at).total_seconds() / 86_400
        assert risk[key] == pytest.approx(days, abs=1e-9), key


@pytest.mark.parametrize("name", ["alpaclass-sample.jsonl", "alpaclass-tricky.jsonl"])
def test_streams_give_exact_activity(name, fixtures_dir, kafka_bootstrap, tmp_path):
    path = fixtures_dir / name
    documents = load_documents(path)

    result, rows, risk = _run(kafka_bootstrap, path, tmp_path)

    assert result.sent == len(documents)
    assert result.accepted == len(documents)
    assert result.keys == len(rows)
    _assert_exact(path, rows, risk)


@pytest.mark.parametrize("name", SINGLE_EVENT_FILES)
def test_each_example_body_goes_through_alone(
    name, fixtures_dir, kafka_bootstrap, tmp_path
):
    path = fixtures_dir / "alpaclass" / name

    result, rows, risk = _run(kafka_bootstrap, path, tmp_path)

    assert (result.sent, result.accepted, result.rejected) == (1, 1, 0)
    _assert_exact(path, rows, risk)
