"""What the dashboard shows, read from the analysis views.

Every number here is a view's, asked as of one instant for one school (and,
where the view has courses, one course): the page adds nothing of its own to
the definitions, so what an operator sees is what an analyst's query gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

DAY = timedelta(days=1)
# The daily plot covers 90 days; its 7-day line needs the 6 days before them.
DAILY_DAYS = 90
ROLLING_DAYS = 7
RISK_WEEKS = 13
RISK_BANDS = ("onboarding", "active", "cooling", "at_risk", "churned")
AT_RISK_BANDS = ("at_risk", "churned")
COHORT_WEEKS = 12
COHORT_WEEKS_SINCE = 26  # the heatmap's columns: half a year since registering
FUNNEL_COURSES = 6
FUNNEL_STAGES = (
    ("started", "Started"),
    ("finished_a_lesson", "Finished a lesson"),
    ("finished_a_module", "Finished a module"),
    ("finished_course", "Finished the course"),
    ("accessed_certificate", "Opened the certificate"),
)
# churn_risk's own order, for the list and the CSV.
RISK_ORDER = "risk_score DESC, team_id, student_id, course_id"
# The columns of the at-risk list and of its CSV, in order.
AT_RISK_COLUMNS = (
    "student_name",
    "student_email",
    "course_name",
    "days_since_last_seen",
    "active_days_28",
    "trend",
    "progress",
    "risk_score",
    "risk_band",
    "reasons",
    "last_seen_at",
    "student_id",
    "course_id",
)


@dataclass(frozen=True)
class Selection:
    """One school, optionally one of its courses, as of one instant."""

    team: str
    course: str | None
    as_of: datetime

    @property
    def last_day(self) -> date:
        """The day the daily counts end on: the one under way at ``as_of``."""
        moment = self.as_of.astimezone(UTC)
        midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return moment.date() if moment > midnight else moment.date() - DAY


@dataclass(frozen=True)
class Headline:
    active_today: int
    active_7d: int
    active_28d: int
    stickiness: float | None
    at_risk: int
    alerts_7d: int


@dataclass(frozen=True)
class Activity:
    series: list[tuple[date, int, float]]  # day, active, 7-day mean
    last: tuple  # the last day's active, 7-day, 28-day counts and stickiness


@dataclass(frozen=True)
class Risk:
    at_risk_students: int  # distinct, with a course at_risk or churned
    total: int
    top: list[dict[str, Any]]


@dataclass
class Dashboard:
    selection: Selection
    headline: Headline
    daily: list[tuple[date, int, float]]
    risk_bands: list[tuple[date, dict[str, int]]]
    cohorts: list[dict[str, Any]]
    funnel: list[dict[str, Any]]
    at_risk: list[dict[str, Any]]
    at_risk_total: int
    alerts: list[dict[str, Any]]
    alert_kinds: dict[str, int] = field(default_factory=dict)


def _rows(
    connection: duckdb.DuckDBPyConnection, sql: str, parameters: list
) -> list[dict[str, Any]]:
    cursor = connection.execute(sql, parameters)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _course_filter(selection: Selection, parameters: list) -> str:
    if selection.course is None:
        return ""
    parameters.append(selection.course)
    return " AND course_id = ?"


def schools(connection: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(team id, name) of every school in the state, by name."""
    rows = connection.execute(
        """
        SELECT team_id, coalesce(arg_max(team_name, seen), team_id) AS name
        FROM (SELECT team_id, team_name, last_seen_at AS seen
              FROM student_course_activity
              UNION ALL
              SELECT team_id, NULL, NULL FROM students)
        GROUP BY team_id
        ORDER BY lower(name), team_id
        """
    ).fetchall()
    # Events without a team id are kept under ''.
    return [(team, name or "(no school id)") for team, name in rows]


def courses(connection: duckdb.DuckDBPyConnection, team: str) -> list[tuple[str, str]]:
    """(course id, name) of a school's courses, by name."""
    rows = connection.execute(
        """
        SELECT course_id, coalesce(arg_max(course_name, last_seen_at), course_id)
        FROM student_course_activity
        WHERE team_id = ?
        GROUP BY course_id
        """,
        [team],
    ).fetchall()
    return sorted(((course, name) for course, name in rows), key=_by_name)


def _by_name(item: tuple[str, str]) -> tuple[str, str]:
    return (item[1].lower(), item[0])


def _alerts_sql(selection: Selection, columns: list[str]) -> str:
    sql = (
        f"SELECT {', '.join(columns)} FROM inactivity_alerts"
        " WHERE team_id = ? AND detected_at >= ? AND detected_at < ?"
    )
    if selection.course is not None:
        sql += " AND course_id = ?"
    return sql


def _alerts_parameters(selection: Selection, since: datetime) -> list:
    parameters: list = [selection.team, since, selection.as_of]
    if selection.course is not None:
        parameters.append(selection.course)
    return parameters


def activity(connection: duckdb.DuckDBPyConnection, selection: Selection) -> Activity:
    """daily_active for the plot's 90 days (and the 6 before, for its mean)."""
    span = DAILY_DAYS + ROLLING_DAYS - 1
    parameters: list = [selection.as_of, span, selection.team]
    if selection.course is None:
        course_sql = " AND course_id IS NULL"
    else:
        course_sql = _course_filter(selection, parameters)
    by_day = {
        day: counts
        for day, *counts in connection.execute(
            "SELECT day, active_students, active_students_7d, active_students_28d,"
            " stickiness FROM daily_active_at(?, days := ?)"
            " WHERE team_id = ?" + course_sql,
            parameters,
        ).fetchall()
    }

    # Days nobody was active in the 28 days ending then have no row: 0.
    days = [selection.last_day - back * DAY for back in range(span - 1, -1, -1)]
    values = [by_day[day][0] if day in by_day else 0 for day in days]
    series = []
    for index in range(ROLLING_DAYS - 1, span):
        window = values[index - ROLLING_DAYS + 1 : index + 1]
        series.append((days[index], values[index], sum(window) / ROLLING_DAYS))
    last = tuple(by_day.get(selection.last_day, (0, 0, 0, None)))
    return Activity(series, last)


def churn_risk(
    connection: duckdb.DuckDBPyConnection, selection: Selection, list_rows: int
) -> Risk:
    """churn_risk for the selection, scored once for its counts and its top."""
    parameters: list = [selection.as_of, selection.team]
    course_sql = _course_filter(selection, parameters)
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE dashboard_churn_risk AS"
        " SELECT * FROM churn_risk_at(?) WHERE team_id = ?" + course_sql,
        parameters,
    )
    total, students = connection.execute(
        "SELECT count(*), count(DISTINCT student_id) FILTER (WHERE risk_band IN (?, ?))"
        " FROM dashboard_churn_risk",
        list(AT_RISK_BANDS),
    ).fetchone()
    top = _rows(
        connection,
        f"SELECT {', '.join(AT_RISK_COLUMNS)} FROM dashboard_churn_risk"
        f" ORDER BY {RISK_ORDER} LIMIT ?",
        [list_rows],
    )
    connection.execute("DROP TABLE dashboard_churn_risk")
    return Risk(students, total, top)


def risk_bands(
    connection: duckdb.DuckDBPyConnection, selection: Selection
) -> list[tuple[date, dict[str, int]]]:
    """Student-course pairs per risk band, weekly for 13 weeks up to ``as_of``.

    Each point is churn_risk's as of that instant (risk_bands_at), so like
    the view it is approximate for the past.
    """
    parameters: list = [selection.as_of, RISK_WEEKS, selection.team]
    course_sql = _course_filter(selection, parameters)
    counts: dict[datetime, dict[str, int]] = {}
    for point, band, keys in connection.execute(
        "SELECT point_at, risk_band, sum(keys) FROM risk_bands_at(?, weeks := ?)"
        " WHERE team_id = ?" + course_sql + " GROUP BY point_at, risk_band",
        parameters,
    ).fetchall():
        counts.setdefault(point, {})[band] = int(keys)

    points = []
    for back in range(RISK_WEEKS - 1, -1, -1):
        moment = selection.as_of - back * 7 * DAY
        found = counts.get(moment, {})
        day = Selection(selection.team, selection.course, moment).last_day
        points.append((day, {band: found.get(band, 0) for band in RISK_BANDS}))
    return points


def cohorts(
    connection: duckdb.DuckDBPyConnection, selection: Selection
) -> list[dict[str, Any]]:
    """cohort_retention: the school's last 12 registration weeks, 26 weeks on."""
    return _rows(
        connection,
        """
        WITH cohorts AS (
            SELECT * FROM cohort_retention_at(?) WHERE team_id = ?
        ),
        latest AS (
            SELECT DISTINCT cohort_week FROM cohorts
            ORDER BY cohort_week DESC LIMIT ?
        )
        SELECT cohort_week, weeks_since_registration, cohort_size,
               active_students, share_active
        FROM cohorts SEMI JOIN latest USING (cohort_week)
        WHERE weeks_since_registration < ?
        ORDER BY cohort_week, weeks_since_registration
        """,
        [selection.as_of, selection.team, COHORT_WEEKS, COHORT_WEEKS_SINCE],
    )


def funnel(
    connection: duckdb.DuckDBPyConnection, selection: Selection
) -> list[dict[str, Any]]:
    """course_funnel for the course chosen, else the 6 most started."""
    parameters: list = [selection.as_of, selection.team]
    course_sql = _course_filter(selection, parameters)
    parameters.append(FUNNEL_COURSES)
    return _rows(
        connection,
        "SELECT * FROM course_funnel_at(?) WHERE team_id = ?"
        + course_sql
        + " ORDER BY started DESC, course_id LIMIT ?",
        parameters,
    )


def at_risk_rows(
    connection: duckdb.DuckDBPyConnection,
    selection: Selection,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The top of churn_risk: its order, its columns for the list."""
    parameters: list = [selection.as_of, selection.team]
    course_sql = _course_filter(selection, parameters)
    sql = (
        f"SELECT {', '.join(AT_RISK_COLUMNS)} FROM churn_risk_at(?)"
        " WHERE team_id = ?" + course_sql
    )
    sql += f" ORDER BY {RISK_ORDER}"
    if limit is not None:
        sql += " LIMIT ?"
        parameters.append(limit)
    return _rows(connection, sql, parameters)


def recent_alerts(
    connection: duckdb.DuckDBPyConnection, selection: Selection, limit: int = 20
) -> list[dict[str, Any]]:
    """The school's latest alerts detected before ``as_of``, newest first."""
    columns = [
        "alert_id",
        "kind",
        "detected_at",
        "student_name",
        "course_id",
        "threshold_days",
        "days_inactive",
        "last_seen_at",
        "active_again_at",
        "catch_up",
    ]
    sql = _alerts_sql(selection, columns)
    sql += " ORDER BY detected_at DESC, alert_id LIMIT ?"
    parameters = _alerts_parameters(selection, datetime(1970, 1, 1, tzinfo=UTC))
    return _rows(connection, sql, [*parameters, limit])


def alert_kinds(
    connection: duckdb.DuckDBPyConnection, selection: Selection
) -> dict[str, int]:
    """Alerts of the last 7 days before ``as_of`` by kind."""
    sql = _alerts_sql(selection, ["kind"])
    rows = connection.execute(
        f"SELECT kind, count(*) FROM ({sql}) GROUP BY kind ORDER BY kind",
        _alerts_parameters(selection, selection.as_of - 7 * DAY),
    ).fetchall()
    return dict(rows)


def load(
    connection: duckdb.DuckDBPyConnection,
    selection: Selection,
    list_rows: int,
    alert_rows: int,
) -> Dashboard:
    """Everything the page shows for one selection."""
    daily = activity(connection, selection)
    risk = churn_risk(connection, selection, list_rows)
    kinds = alert_kinds(connection, selection)
    return Dashboard(
        selection=selection,
        headline=Headline(*daily.last, risk.at_risk_students, sum(kinds.values())),
        daily=daily.series,
        risk_bands=risk_bands(connection, selection),
        cohorts=cohorts(connection, selection),
        funnel=funnel(connection, selection),
        at_risk=risk.top,
        at_risk_total=risk.total,
        alerts=recent_alerts(connection, selection, alert_rows),
        alert_kinds=kinds,
    )
