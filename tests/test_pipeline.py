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
from tests.expected import expected_students, load_documents

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
    _check_alerts(db_path, documents, want)
    return result, documents, want


def _check_alerts(db_path, documents: list[dict], want: dict) -> None:
    """The demo's alerts: the input's, as of the wall clock when checked.

    Every crossing in a history file is days old: each unfinished key gets
    one catch-up alert for the highest default threshold (7, 14, 30 days) it
    crossed, and each student registered 3 days or more ago, with no activity
    in any course, a never_started one.
    """
    with connect_readonly(db_path) as connection:
        rows = connection.execute(
            "SELECT kind, team_id, student_id, course_id, threshold_days, catch_up, "
            "detected_at FROM inactivity_alerts"
        ).fetchall()
    if not rows:
        now = datetime.now(UTC)
    else:
        detected = [row[-1] for row in rows]
        now = min(detected)
        assert (max(detected) - now).total_seconds() < 30
    expected = set()
    for (team, student, course), state in want.items():
        days = (now - state.last_seen_at).total_seconds() / 86_400
        crossed = [t for t in (7.0, 14.0, 30.0) if t <= days]
        if crossed and not state.course_finished:
            expected.add(("inactive", team, student, course, crossed[-1], True))
    active = {(team, student) for team, student, _ in want}
    for (team, student), registered in expected_students(documents).items():
        created = registered.created_at
        if created is None or (team, student) in active:
            continue
        if (now - created).total_seconds() >= 3 * 86_400:
            expected.add(("never_started", team, student, None, 3.0, True))
    assert {row[:-1] for row in rows} == expected
    assert len(rows) == len(expected)  # one row each


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
