"""The analysis views on both shared streams, against computations from the input.

Each stream goes through the whole job once (signed POSTs, the broker, the
worker, its snapshot); then every view's rows, as of 2026-12-01T00:00:00Z,
are compared with what this file computes from tests/expected.py's tables,
which are themselves computed from the input files with the standard library.
The rules below are the views' documented definitions, written again here in
Python on purpose.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from analytics.catalog import connect_readonly
from analytics.query import QueryError
from tests.expected import (
    expected_activity,
    expected_daily,
    expected_students,
    load_documents,
)

pytestmark = pytest.mark.kafka

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)
STREAMS = ["alpaclass-sample.jsonl", "alpaclass-tricky.jsonl"]
VIEWS = [
    "churn_risk",
    "risk_bands",
    "inactive_students",
    "never_started",
    "daily_active",
    "cohort_retention",
    "weekly_lifecycle",
    "course_funnel",
]


class Stream:
    def __init__(self, documents: list[dict], db_path) -> None:
        self.db_path = db_path
        self.activity = expected_activity(documents)
        self.students = expected_students(documents)
        self.daily = expected_daily(documents)

    def rows(self, sql: str, *parameters) -> list[dict]:
        with connect_readonly(self.db_path) as connection:
            cursor = connection.execute(sql, list(parameters))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def active_days(self) -> dict[tuple, set[date]]:
        """(team, student, course) -> the UTC days before AS_OF it was active."""
        days: dict[tuple, set[date]] = defaultdict(set)
        for (team, student, course, day), counts in self.daily.items():
            if counts.activity_events > 0 and _start(day) < AS_OF:
                days[(team, student, course)].add(day)
        return days

    def active_weeks(self) -> dict[tuple, set[date]]:
        """(team, student) -> the Mondays of the weeks it was active."""
        weeks: dict[tuple, set[date]] = defaultdict(set)
        for (team, student, _), days in self.active_days().items():
            weeks[team, student].update(_monday(day) for day in days)
        return weeks


@pytest.fixture(scope="module", params=STREAMS)
def stream(request, fixtures_dir, stream_database) -> Stream:
    db_path = stream_database(request.param)
    return Stream(load_documents(fixtures_dir / request.param), db_path)


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _in_window(day: date, days: int) -> bool:
    return AS_OF - days * DAY <= _start(day) < AS_OF


def _days_since(instant: datetime) -> float:
    return (AS_OF - instant).total_seconds() / 86_400


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


@pytest.mark.parametrize("cutoffs", [None, (3, 10, 20)])
def test_churn_risk(stream, cutoffs):
    if cutoffs is None:
        got = stream.rows("SELECT * FROM churn_risk_at(?)", AS_OF)
        cutoffs = (7, 14, 30)
    else:
        got = stream.rows(
            "SELECT * FROM churn_risk_at(?, cooling := ?, at_risk := ?, churned := ?)",
            AS_OF,
            *cutoffs,
        )
    cooling, at_risk, churned = cutoffs
    course_lessons: dict[tuple, int] = defaultdict(int)
    for (team, _, course), state in stream.activity.items():
        course_lessons[team, course] = max(
            course_lessons[team, course], state.lessons_finished
        )

    want = {}
    for key, state in stream.activity.items():
        if state.course_finished:
            continue
        team, student, course = key
        days = {
            day: counts.activity_events
            for (t, s, c, day), counts in stream.daily.items()
            if (t, s, c) == key and counts.activity_events > 0
        }
        events_7 = sum(n for day, n in days.items() if _in_window(day, 7))
        events_28 = sum(n for day, n in days.items() if _in_window(day, 28))
        rate_7, rate_21 = events_7 / 7, (events_28 - events_7) / 21
        trend = (
            0.0 if rate_7 == rate_21 == 0 else (rate_7 - rate_21) / max(rate_7, rate_21)
        )
        size = course_lessons[team, course]
        progress = state.lessons_finished / size if size else None
        since = _days_since(state.last_seen_at)
        active_7 = sum(1 for day in days if _in_window(day, 7))
        active_28 = sum(1 for day in days if _in_window(day, 28))
        registered = stream.students.get((team, student))
        created = registered.created_at if registered else None
        onboarding = created is not None and AS_OF - 7 * DAY < created <= AS_OF
        score = 100 * (
            0.5 * min(max(since, 0) / churned, 1)
            + 0.2 * (1 - min(active_28, 14) / 14)
            + 0.2 * (1 if active_28 == 0 else max(-trend, 0))
            + 0.1 * (1 - (progress or 0))
        )
        if onboarding:
            band = "onboarding"
        elif since < cooling:
            band = "active"
        elif since < at_risk:
            band = "cooling"
        elif since < churned:
            band = "at_risk"
        else:
            band = "churned"
        reasons = []
        if onboarding:
            reasons.append("registered less than 7 days ago")
        if since >= cooling:
            reasons.append(f"not seen for {math.floor(since)} days")
        if active_28 <= 2:
            reasons.append(f"active on {active_28} of the last 28 days")
        if trend <= -0.5 and rate_21 > 0:
            reasons.append(
                f"activity down {_half_up(-trend * 100)}% against the 3 weeks before"
            )
        if progress is not None and progress < 0.25:
            reasons.append(f"{state.lessons_finished} of about {size} lessons finished")
        want[key] = {
            "student_name": state.student_name,
            "student_email": state.student_email,
            "days_since_last_seen": pytest.approx(since, abs=1e-9),
            "active_days_7": active_7,
            "active_days_28": active_28,
            "trend": pytest.approx(trend, abs=1e-12),
            "progress": None if progress is None else pytest.approx(progress),
            "risk_score": pytest.approx(score, abs=1e-9),
            "risk_band": band,
            "reasons": "; ".join(reasons) or None,
        }

    by_key = {(r["team_id"], r["student_id"], r["course_id"]): r for r in got}
    assert len(by_key) == len(got)
    assert set(by_key) == set(want)
    for key, expected in want.items():
        row = {name: by_key[key][name] for name in expected}
        assert row == expected, key
    scores = [row["risk_score"] for row in got]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= score <= 100 for score in scores)


def test_churn_risk_as_of_a_past_time_leaves_out_later_keys(stream):
    past = datetime(2026, 11, 15, tzinfo=UTC)
    got = stream.rows("SELECT * FROM churn_risk_at(?)", past)
    want = {
        key
        for key, state in stream.activity.items()
        if not state.course_finished and state.first_seen_at <= past
    }
    assert {(r["team_id"], r["student_id"], r["course_id"]) for r in got} == want
    for row in got:
        key = (row["team_id"], row["student_id"], row["course_id"])
        since = max((past - stream.activity[key].last_seen_at).total_seconds(), 0)
        assert row["days_since_last_seen"] == pytest.approx(since / 86_400, abs=1e-9)
        assert 0 <= row["risk_score"] <= 100


def _band(since: float, onboarding: bool) -> str:
    if onboarding:
        return "onboarding"
    for band, below in (("active", 7), ("cooling", 14), ("at_risk", 30)):
        if since < below:
            return band
    return "churned"


def test_risk_bands_count_churn_risk_bands_week_by_week(stream):
    got = {
        (r["team_id"], r["course_id"], r["point_at"], r["risk_band"]): r["keys"]
        for r in stream.rows("SELECT * FROM risk_bands_at(?, weeks := 6)", AS_OF)
    }

    want: dict[tuple, int] = defaultdict(int)
    for back in range(6):
        point = AS_OF - back * 7 * DAY
        for (team, student, course), state in stream.activity.items():
            if state.course_finished or state.first_seen_at > point:
                continue
            since = max((point - state.last_seen_at).total_seconds(), 0) / 86_400
            registered = stream.students.get((team, student))
            created = registered.created_at if registered else None
            onboarding = created is not None and point - 7 * DAY < created <= point
            want[team, course, point, _band(since, onboarding)] += 1
    assert got == dict(want)
    assert len({key[2] for key in got}) == 6


@pytest.mark.parametrize("min_days", [7, 14])
def test_inactive_students(stream, min_days):
    sql = "SELECT * FROM inactive_students_at(?, min_days := ?)"
    got = {
        (r["team_id"], r["student_id"], r["course_id"]): r["days_since_last_seen"]
        for r in stream.rows(sql, AS_OF, min_days)
    }
    want = {
        key: pytest.approx(_days_since(state.last_seen_at), abs=1e-9)
        for key, state in stream.activity.items()
        if not state.course_finished and _days_since(state.last_seen_at) >= min_days
    }
    assert got == want


def test_never_started(stream):
    got = {
        (r["team_id"], r["student_id"]): r["created_at"]
        for r in stream.rows("SELECT * FROM never_started_at(?)", AS_OF)
    }
    started = {(team, student) for team, student, _ in stream.activity}
    want = {
        key: student.created_at
        for key, student in stream.students.items()
        if student.created_at is not None
        and student.created_at <= AS_OF - 3 * DAY
        and key not in started
    }
    assert got == want


def test_daily_active(stream):
    got = {
        (r["team_id"], r["course_id"], r["day"]): (
            r["active_students"],
            r["active_students_7d"],
            r["active_students_28d"],
            r["stickiness"],
        )
        for r in stream.rows("SELECT * FROM daily_active_at(?)", AS_OF)
    }
    # Who was active on which day, per course and school-wide (None).
    active: dict[tuple, set[date]] = defaultdict(set)
    groups: dict[tuple, set] = defaultdict(set)
    for (team, student, course), days in stream.active_days().items():
        for group in ((team, course), (team, None)):
            groups[group].add(student)
            for day in days:
                active[(*group, student)].add(day)

    first_day = (AS_OF - 35 * DAY).date()
    window = [first_day + timedelta(days=n) for n in range(35)]
    want = {}
    for (team, course), members in groups.items():
        for day in window:

            def count(span: int, team=team, course=course, day=day, members=members):
                return sum(
                    1
                    for s in members
                    if any(
                        day - timedelta(days=span) < d <= day
                        for d in active[(team, course, s)]
                    )
                )

            monthly = count(28)
            if monthly:
                daily = count(1)
                want[(team, course, day)] = (daily, count(7), monthly, daily / monthly)
    assert got == want


def test_cohort_retention(stream):
    got = {
        (r["team_id"], r["cohort_week"], r["weeks_since_registration"]): (
            r["cohort_size"],
            r["active_students"],
            r["share_active"],
        )
        for r in stream.rows("SELECT * FROM cohort_retention_at(?)", AS_OF)
    }
    weeks_active = stream.active_weeks()
    cohorts: dict[tuple, list[str]] = defaultdict(list)
    for (team, student), info in stream.students.items():
        if info.created_at is not None and info.created_at < AS_OF:
            cohorts[team, _monday(info.created_at.astimezone(UTC).date())].append(
                student
            )

    current = _monday(AS_OF.date())
    want = {}
    for (team, week), members in cohorts.items():
        for k in range((current - week).days // 7 + 1):
            target = week + timedelta(weeks=k)
            retained = sum(1 for s in members if target in weeks_active[team, s])
            want[(team, week, k)] = (len(members), retained, retained / len(members))
    assert got == want


def test_weekly_lifecycle(stream):
    got = {
        (r["team_id"], r["week"]): (
            r["new_students"],
            r["returning_students"],
            r["resurrecting_students"],
            r["dormant_students"],
        )
        for r in stream.rows("SELECT * FROM weekly_lifecycle_at(?)", AS_OF)
    }
    weeks_active = stream.active_weeks()
    by_team: dict[str, dict[str, set[date]]] = defaultdict(dict)
    for (team, student), weeks in weeks_active.items():
        by_team[team][student] = weeks

    # The last week that ended by AS_OF.
    current = _monday((AS_OF - 7 * DAY).date())
    want = {}
    for team, students in by_team.items():
        week = min(min(weeks) for weeks in students.values())
        while week <= current:
            before = week - timedelta(weeks=1)
            counts = [0, 0, 0, 0]
            for weeks in students.values():
                first = min(weeks)
                if first > week:
                    continue
                now, was = week in weeks, before in weeks
                counts[0] += now and first == week
                counts[1] += now and was
                counts[2] += now and not was and first < week
                counts[3] += was and not now
            want[(team, week)] = tuple(counts)
            week += timedelta(weeks=1)
    assert got == want


def test_course_funnel(stream):
    got = {
        (r["team_id"], r["course_id"]): (
            r["started"],
            r["finished_a_lesson"],
            r["finished_a_module"],
            r["finished_course"],
            r["accessed_certificate"],
        )
        for r in stream.rows("SELECT * FROM course_funnel_at(?)", AS_OF)
    }
    want: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for (team, _, course), state in stream.activity.items():
        if state.first_seen_at < AS_OF:
            counts = want[team, course]
            counts[0] += 1
            counts[1] += state.lessons_finished >= 1
            counts[2] += state.modules_finished >= 1
            counts[3] += state.course_finished
            counts[4] += state.certificate_accessed
    assert got == {key: tuple(counts) for key, counts in want.items()}


@pytest.mark.parametrize("zone", ["America/Sao_Paulo", "Asia/Kolkata"])
def test_views_do_not_depend_on_the_session_time_zone(stream, zone):
    with connect_readonly(stream.db_path) as connection:
        answers = []
        for setting in ("UTC", zone):
            connection.execute(f"SET TimeZone = '{setting}'")
            answers.append(
                {
                    view: connection.execute(
                        f"SELECT * FROM {view}_at(?)", [AS_OF]
                    ).fetchall()
                    for view in VIEWS
                }
            )
    assert answers[0] == answers[1]
    assert all(answers[0][view] for view in ("churn_risk", "daily_active"))


def test_every_view_has_team_id_and_no_document_or_phone(stream):
    with connect_readonly(stream.db_path) as connection:
        for view in [*VIEWS, "student_course_activity", "students", "engagement_daily"]:
            columns = [
                row[0]
                for row in connection.execute(
                    f"DESCRIBE SELECT * FROM {view}"
                ).fetchall()
            ]
            assert "team_id" in columns, view
            assert not {"document", "phone", "cpf"} & set(columns), view


def _cli(*args: str, env: dict | None = None):
    from typer.testing import CliRunner

    from engagement.cli import cli

    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=True)


def test_query_prints_a_view_filtered_by_team_and_course(stream):
    (team, _, course), _state = next(iter(stream.activity.items()))
    args = ["--as-of", AS_OF.isoformat(), "--duckdb", str(stream.db_path)]
    result = _cli(
        "query",
        "inactive_students",
        *args,
        "--team",
        team,
        "--course",
        course,
        "--format",
        "json",
        "--limit",
        "1000",
    )
    assert result.exit_code == 0, result.output
    printed = {
        (r["student_id"], r["days_since_last_seen"]) for r in json.loads(result.stdout)
    }
    want = {
        (student, _days_since(state.last_seen_at))
        for (t, student, c), state in stream.activity.items()
        if (t, c) == (team, course)
        and not state.course_finished
        and _days_since(state.last_seen_at) >= 7
    }
    assert {s for s, _ in printed} == {s for s, _ in want}

    table = _cli("query", "course_funnel", *args)
    assert table.exit_code == 0 and "started" in table.stdout


def test_query_refuses_what_a_view_cannot_answer(stream):
    db = ["--duckdb", str(stream.db_path)]
    unknown = _cli("query", "churn", *db)
    assert isinstance(unknown.exception, QueryError)
    assert "churn_risk" in str(unknown.exception)  # the list of views
    no_course = _cli("query", "never_started", "--course", "7", *db)
    assert isinstance(no_course.exception, QueryError)


def test_export_pseudonymizes_names_and_emails_with_a_stable_key(stream, tmp_path):
    args = ["--as-of", AS_OF.isoformat(), "--duckdb", str(stream.db_path)]
    plain, hidden, again, other = (tmp_path / f"{n}.parquet" for n in "phao")
    key = {"ENGAGEMENT_PSEUDONYM_KEY": "school secret"}
    for path, env, extra in (
        (plain, None, []),
        (hidden, key, ["--pseudonymize"]),
        (again, key, ["--pseudonymize"]),
        (other, {"ENGAGEMENT_PSEUDONYM_KEY": "another"}, ["--pseudonymize"]),
    ):
        result = _cli(
            "export",
            "churn_risk",
            "--output",
            str(path),
            "--format",
            "parquet",
            *args,
            *extra,
            env=env,
        )
        assert result.exit_code == 0, result.output

    tables = [pq.read_table(path).to_pylist() for path in (plain, hidden, again, other)]
    names = {row["student_name"] for row in tables[0]} | {
        row["student_email"] for row in tables[0]
    }
    assert len(tables[1]) == len(tables[0]) > 0
    for row, clear in zip(tables[1], tables[0], strict=True):
        assert row["student_id"] == clear["student_id"]
        for column in ("student_name", "student_email"):
            assert (row[column] is None) == (clear[column] is None)
            assert row[column] is None or row[column] not in names
    assert tables[1] == tables[2]  # the same key, the same pseudonyms
    assert [r["student_name"] for r in tables[1]] != [
        r["student_name"] for r in tables[3]
    ]
    # Without a key there is nothing to hash with: a clear error, no file.
    missing = _cli(
        "export",
        "churn_risk",
        "--output",
        str(tmp_path / "x.csv"),
        "--pseudonymize",
        *args,
        env={"ENGAGEMENT_PSEUDONYM_KEY": ""},
    )
    assert isinstance(missing.exception, QueryError)
    assert not (tmp_path / "x.csv").exists()


def test_export_takes_its_format_from_the_file_name(stream, tmp_path):
    args = ["--as-of", AS_OF.isoformat(), "--duckdb", str(stream.db_path)]
    output = tmp_path / "funnel.parquet"
    result = _cli("export", "course_funnel", "--output", str(output), *args)
    assert result.exit_code == 0, result.output
    assert pq.read_table(output).num_rows == len(
        {(t, c) for t, _, c in stream.activity}
    )


def test_unusable_paths_get_an_error_not_a_traceback(stream, tmp_path):
    not_a_database = tmp_path / "notes.duckdb"
    not_a_database.write_text("hello")
    args = ["--as-of", AS_OF.isoformat()]
    for database in (not_a_database, tmp_path):
        result = _cli("query", "churn_risk", *args, "--duckdb", str(database))
        assert isinstance(result.exception, QueryError), result.exception
    folder = _cli(
        "export",
        "churn_risk",
        "--output",
        str(tmp_path),
        "--duckdb",
        str(stream.db_path),
        *args,
    )
    assert isinstance(folder.exception, QueryError), folder.exception


def test_export_csv_has_every_row_of_the_view(stream, tmp_path):
    output = tmp_path / "funnel.csv"
    result = _cli(
        "export",
        "course_funnel",
        "--output",
        str(output),
        "--as-of",
        AS_OF.isoformat(),
        "--duckdb",
        str(stream.db_path),
    )
    assert result.exit_code == 0, result.output
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    courses = {(t, c) for t, _, c in stream.activity}
    assert {(r["team_id"], r["course_id"]) for r in rows} == courses
