"""The dashboard's server: its CSV, its answers to bad requests, its page.

The page as a browser shows it is tested in test_dashboard_browser.py; here
the server is asked over HTTP, as `engagement dashboard` runs it, over the
database the demo writes for the shared sample stream.
"""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, date, datetime

import httpx
import pytest

from analytics.catalog import connect_readonly
from analytics.dashboard import data, figures
from analytics.dashboard.server import (
    allowed_hosts,
    at_risk_csv,
    page_context,
    render_page,
)
from tests.dashboards import running_dashboard

SAMPLE = "alpaclass-sample.jsonl"
AS_OF = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sample(stream_database):
    return stream_database(SAMPLE)


@pytest.fixture(scope="module")
def dashboard_url(sample):
    with running_dashboard(sample) as url:
        yield url


def _rows(db_path, sql: str, *parameters) -> list[dict]:
    with connect_readonly(db_path) as connection:
        cursor = connection.execute(sql, list(parameters))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.mark.kafka
def test_csv_has_every_churn_risk_row_of_the_school_and_course(sample, dashboard_url):
    teams = [
        r["team_id"] for r in _rows(sample, "SELECT DISTINCT team_id FROM students")
    ]
    assert len(teams) == 2

    for team in teams:
        want = _rows(
            sample, "SELECT * FROM churn_risk_at(?) WHERE team_id = ?", AS_OF, team
        )
        response = httpx.get(
            f"{dashboard_url}/at-risk.csv",
            params={"school": team, "as_of": "2026-12-01"},
        )

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        assert response.headers["cache-control"] == "no-store"
        assert response.text.startswith("\ufeff")  # for Excel
        got = list(csv.DictReader(io.StringIO(response.text.removeprefix("\ufeff"))))
        assert [(r["student_id"], r["course_id"]) for r in got] == [
            (w["student_id"], w["course_id"]) for w in want
        ]
        for row, expected in zip(got, want, strict=True):
            assert row["student_name"] == expected["student_name"]
            assert row["student_email"] == expected["student_email"]
            assert row["risk_band"] == expected["risk_band"]
            assert row["reasons"] == (expected["reasons"] or "")
            score = float(row["risk_score"])
            assert score == pytest.approx(expected["risk_score"], abs=0.05)
            assert int(row["active_days_28"]) == expected["active_days_28"]
            seen = datetime.fromisoformat(row["last_seen_at"])
            assert seen == expected["last_seen_at"]

    course = want[0]["course_id"]
    response = httpx.get(
        f"{dashboard_url}/at-risk.csv",
        params={"school": team, "course": course, "as_of": "2026-12-01"},
    )
    got = list(csv.DictReader(io.StringIO(response.text.removeprefix("\ufeff"))))
    assert {r["course_id"] for r in got} == {course}
    name = f"at-risk-{team}-{course}-2026-12-01.csv"
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert len(got) == sum(1 for w in want if w["course_id"] == course)


@pytest.mark.kafka
def test_bad_requests_are_answered_in_words(dashboard_url):
    unknown = httpx.get(dashboard_url, params={"school": "no-such-school"})
    assert unknown.status_code == 404
    assert "No school 'no-such-school'" in html.unescape(unknown.text)
    assert unknown.text.count("<option") == 2 + 1  # the schools, "all courses"

    bad_date = httpx.get(dashboard_url, params={"as_of": "yesterday"})
    assert bad_date.status_code == 400
    assert "is not a date" in bad_date.text

    for far in ("0002-12-01", "9999-12-31", "1969-12-31T23:59:59Z"):
        out_of_range = httpx.get(dashboard_url, params={"as_of": far})
        assert out_of_range.status_code == 400, far
        assert "is out of range" in out_of_range.text

    other_course = httpx.get(dashboard_url, params={"course": "not-a-course"})
    assert other_course.status_code == 200
    assert "not one of this school" in other_course.text

    csv_of_nothing = httpx.get(f"{dashboard_url}/at-risk.csv", params={"school": "x"})
    assert csv_of_nothing.status_code == 404
    csv_of_no_course = httpx.get(f"{dashboard_url}/at-risk.csv", params={"course": "x"})
    assert csv_of_no_course.status_code == 404
    assert "not one of this school" in csv_of_no_course.text

    # A page elsewhere whose name resolves to 127.0.0.1 gets nothing.
    for host in ("evil.example", "evil.example:8050", "localhost:abc"):
        rebound = httpx.get(f"{dashboard_url}/at-risk.csv", headers={"Host": host})
        assert rebound.status_code == 421, host
        assert "@" not in rebound.text
    assert (
        httpx.get(dashboard_url, headers={"Host": "localhost:8050"}).status_code == 200
    )


@pytest.mark.kafka
def test_an_error_page_keeps_the_school_asked_for(sample, dashboard_url):
    (team,) = _rows(sample, "SELECT max(team_id) AS t FROM students")[0].values()

    page = httpx.get(dashboard_url, params={"school": team, "as_of": "1999-12-31"})

    assert page.status_code == 400
    assert "is out of range" in page.text
    assert f'<option value="{team}" selected>' in page.text


def test_only_this_machines_names_are_answered_on_every_address():
    for bound in ("127.0.0.1", "0.0.0.0"):
        hosts = allowed_hosts(bound, ["dash.example"])
        assert {"127.0.0.1", "localhost", "::1", "dash.example"} <= hosts
        assert "evil.example" not in hosts and "" not in hosts
    assert "10.0.0.5" in allowed_hosts("10.0.0.5")


def test_a_missing_database_is_explained_until_it_appears(tmp_path):
    with running_dashboard(tmp_path / "engagement.duckdb") as url:
        page = httpx.get(url)
        version = httpx.get(f"{url}/version").json()

    assert page.status_code == 503
    assert "does not exist yet" in page.text
    assert version == {"version": "missing"}


@pytest.mark.kafka
def test_the_page_needs_nothing_from_the_network(dashboard_url):
    page = httpx.get(dashboard_url, params={"as_of": "2026-12-01"})

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assets = [s for s in sources if s.startswith("/static/")]
    assert len(assets) == 3
    assert all(s.startswith(("/", "?", "data:")) for s in sources), sources
    for asset in assets:
        response = httpx.get(dashboard_url + asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000, asset
    plotly_js = httpx.get(f"{dashboard_url}/static/plotly.min.js").text
    assert "plotly.js v" in plotly_js[:500]


def _dashboard_with(name: str) -> data.Dashboard:
    selection = data.Selection("school-1", None, AS_OF)
    row = dict.fromkeys(data.AT_RISK_COLUMNS)
    row.update(
        student_name=name,
        student_email="x@example.org",
        course_name=name,
        course_id="course-1",
        student_id="student-1",
        risk_band="churned",
        risk_score=90.0,
        days_since_last_seen=40.0,
    )
    funnel = dict.fromkeys(s for s, _ in data.FUNNEL_STAGES)
    funnel.update(
        {stage: 1 for stage, _ in data.FUNNEL_STAGES},
        course_id="course-1",
        course_name=name,
    )
    return data.Dashboard(
        selection=selection,
        headline=data.Headline(1, 1, 1, 1.0, 1, 0),
        daily=[(date(2026, 11, 30), 1, 1 / 7)],
        risk_bands=[(date(2026, 11, 30), dict.fromkeys(data.RISK_BANDS, 0))],
        cohorts=[],
        funnel=[funnel],
        at_risk=[row],
        at_risk_total=1,
        alerts=[],
    )


def test_markup_in_a_name_is_shown_as_text():
    name = '<img src=x onerror="alert(1)">'
    choices = {
        "schools": [("school-1", name)],
        "courses": [("course-1", name)],
        "course_names": {"course-1": name},
        "school": "school-1",
        "school_name": name,
        "as_of": AS_OF,
    }

    page = render_page(page_context(_dashboard_with(name), choices, AS_OF))

    assert "<img src=x" not in page
    assert page.count("&lt;img src=x onerror=") >= 4
    # Plotly draws some HTML in names; the funnel's legend gets it as text.
    (trace,) = figures.funnel(_dashboard_with(name)).data
    assert trace.name == html.escape(name, quote=False)


def test_csv_cells_that_a_spreadsheet_would_run_are_kept_as_text():
    row = dict.fromkeys(data.AT_RISK_COLUMNS)
    row.update(
        student_name='=HYPERLINK("http://x")',
        student_email="a\r=1+1",
        reasons="@SUM(1)",
        trend=-0.5,
    )

    text = at_risk_csv([row]).removeprefix("\ufeff")
    (got,) = csv.DictReader(io.StringIO(text, newline=""))

    assert got["student_name"] == '\'=HYPERLINK("http://x")'
    assert got["student_email"] == "a\r=1+1"  # one cell: a CR does not end the row
    assert got["reasons"] == "'@SUM(1)"
    assert got["trend"] == "-0.5"
    assert got["progress"] == ""
