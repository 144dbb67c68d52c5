"""End to end on the real broker: signed POSTs → Kafka → Faust → DuckDB.

Each test runs ``engagement demo``'s code path on an input file, then compares
every row of every table with tests/expected.py's computation from the input.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analytics.catalog import connect_readonly
from engagement.demo import run_demo
from engagement.settings import Settings
from tests.compare import assert_exact
from tests.conftest import FIXTURES
from tests.expected import load_documents

pytestmark = pytest.mark.kafka

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
SINGLE_EVENT_FILES = sorted(p.name for p in (FIXTURES / "alpaclass").glob("*.json"))


def _run_and_check(kafka_bootstrap: str, path, tmp_path):
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    db_path = tmp_path / "engagement.duckdb"
    documents = load_documents(path)

    result = run_demo(settings, path, db_path, AS_OF)

    want = assert_exact(db_path, documents)
    with connect_readonly(db_path) as connection:
        risk = {
            row[:3]: row[3]
            for row in connection.execute(
                "SELECT team_id, student_id, course_id, days_since_last_seen "
                "FROM churn_risk_at(?)",
                [AS_OF],
            ).fetchall()
        }
    unfinished = {key for key, value in want.items() if not value.course_finished}
    assert set(risk) == unfinished
    for key in unfinished:
        days = (AS_OF - want[key].last_seen_at).total_seconds() / 86_400
        assert risk[key] == pytest.approx(days, abs=1e-9), key
    return result, documents, want


@pytest.mark.parametrize("name", ["alpaclass-sample.jsonl", "alpaclass-tricky.jsonl"])
def test_streams_give_exact_state(name, fixtures_dir, kafka_bootstrap, tmp_path):
    result, documents, want = _run_and_check(
        kafka_bootstrap, fixtures_dir / name, tmp_path
    )

    assert result.sent == len(documents)
    assert result.accepted == len(documents)
    assert result.keys == len(want)


@pytest.mark.parametrize("name", SINGLE_EVENT_FILES)
def test_each_example_body_goes_through_alone(
    name, fixtures_dir, kafka_bootstrap, tmp_path
):
    path = fixtures_dir / "alpaclass" / name

    result, _, _ = _run_and_check(kafka_bootstrap, path, tmp_path)

    assert (result.sent, result.accepted, result.rejected) == (1, 1, 0)
