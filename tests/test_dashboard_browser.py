"""The dashboard in headless Chromium, over the sample stream's database.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them).
Without them the test is skipped, unless ENGAGEMENT_REQUIRE_BROWSER=1 (as
in CI), when it fails instead: a browser test that silently skips proves
nothing.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from analytics.catalog import connect_readonly, write_catalog
from analytics.dashboard.server import REFRESH_SECONDS
from tests.dashboards import running_dashboard

pytestmark = pytest.mark.kafka

SAMPLE = "alpaclass-sample.jsonl"
AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
LAST_DAY = date(2026, 11, 30)  # the day under way at AS_OF's midnight: the one before
WAIT_SECONDS = 60
METRICS = (
    "active_today",
    "active_7d",
    "active_28d",
    "stickiness",
    "at_risk",
    "alerts_7d",
)


def _find(name: str, *paths: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((path for path in paths if Path(path).exists()), None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = _find("chromium", "/usr/bin/chromium")
    driver_path = _find("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        message = (
            "Chromium is not installed, so the dashboard's browser test cannot run: "
            "apt-get install chromium chromium-driver (Debian) installs it."
        )
        if os.environ.get("ENGAGEMENT_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root, in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
        },
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(WAIT_SECONDS)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior",
        {"behavior": "allow", "downloadPath": str(downloads)},
    )
    try:
        yield driver, downloads
    finally:
        driver.quit()


def _rows(db_path, sql: str, *parameters) -> list[tuple]:
    with connect_readonly(db_path) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def _expected(db_path, team: str, as_of: datetime, day: date) -> dict[str, float]:
    """The headline numbers, asked of the views directly."""
    daily = _rows(
        db_path,
        "SELECT active_students, active_students_7d, active_students_28d, stickiness"
        " FROM daily_active_at(?) WHERE team_id = ? AND course_id IS NULL AND day = ?",
        as_of,
        team,
        day,
    )
    today, week, month, stickiness = daily[0] if daily else (0, 0, 0, None)
    ((at_risk,),) = _rows(
        db_path,
        "SELECT count(DISTINCT student_id) FROM churn_risk_at(?)"
        " WHERE team_id = ? AND risk_band IN ('at_risk', 'churned')",
        as_of,
        team,
    )
    return {
        "active_today": today,
        "active_7d": week,
        "active_28d": month,
        "stickiness": stickiness,
        "at_risk": at_risk,
        "alerts_7d": _alerts_in_week(db_path, team, as_of),
    }


def _alerts_in_week(db_path, team: str, as_of: datetime) -> int:
    ((alerts,),) = _rows(
        db_path,
        "SELECT count(*) FROM inactivity_alerts"
        " WHERE team_id = ? AND detected_at >= ? AND detected_at < ?",
        team,
        as_of - timedelta(days=7),
        as_of,
    )
    return alerts


def _shown(driver) -> dict[str, float | None]:
    from selenium.webdriver.common.by import By

    shown = {}
    for metric in METRICS:
        element = driver.find_element(By.CSS_SELECTOR, f'[data-metric="{metric}"]')
        value = element.get_attribute("data-value")
        shown[metric] = float(value) if value else None
        assert element.find_element(By.CLASS_NAME, "value").text.strip()
    return shown


def _approx(expected: dict) -> dict:
    return {k: None if v is None else pytest.approx(v) for k, v in expected.items()}


def _wait_for_charts(driver) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.execute_script("return document.body.dataset.chartsDrawn") == "4"
    )
    drawn = driver.execute_script(
        "return Array.from(document.querySelectorAll('.chart'))"
        ".map(c => c.querySelectorAll('svg.main-svg').length)"
    )
    assert len(drawn) == 4 and all(drawn), drawn


def _severe_console_messages(driver) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
    ]


def _wait_for_file(folder: Path, suffix: str) -> Path:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.name.endswith(suffix)]
        if done and not any(p.name.endswith(".crdownload") for p in folder.iterdir()):
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"nothing was downloaded to {folder}")


def test_dashboard_in_a_browser(browser, stream_database, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver, downloads = browser
    db_path = stream_database(SAMPLE)
    schools = [
        team for (team,) in _rows(db_path, "SELECT DISTINCT team_id FROM students")
    ]
    assert len(schools) == 2

    with running_dashboard(db_path) as url:
        # One school, as of 2026-12-01: the headline numbers are the views'.
        first, second = schools
        driver.get(f"{url}/?school={first}&as_of=2026-12-01")
        _wait_for_charts(driver)
        first_numbers = _expected(db_path, first, AS_OF, LAST_DAY)
        assert _shown(driver) == _approx(first_numbers)
        assert first_numbers["active_28d"] > 0

        # So is the daily plot: the view's count for each of the 90 days.
        plotted = driver.execute_script(
            "const t = document.getElementById('chart-daily-active').data[0];"
            "return [t.x, t.y];"
        )
        counts = dict(
            _rows(
                db_path,
                "SELECT day, active_students FROM daily_active_at(?, days := 90)"
                " WHERE team_id = ? AND course_id IS NULL",
                AS_OF,
                first,
            )
        )
        days = [LAST_DAY - timedelta(days=back) for back in range(89, -1, -1)]
        assert plotted[0] == [day.isoformat() for day in days]
        assert plotted[1] == [counts.get(day, 0) for day in days]

        # Another school: the page reloads with its numbers.
        page = driver.find_element(By.TAG_NAME, "body")
        Select(driver.find_element(By.ID, "school")).select_by_value(second)
        WebDriverWait(driver, WAIT_SECONDS).until(
            expected_conditions.staleness_of(page)
        )
        _wait_for_charts(driver)
        assert f"school={second}" in driver.current_url
        assert "as_of=2026-12-01" in driver.current_url
        second_numbers = _expected(db_path, second, AS_OF, LAST_DAY)
        assert _shown(driver) == _approx(second_numbers)
        assert second_numbers != first_numbers

        # The at-risk list sorts by a column when its header is clicked.
        header = driver.find_element(
            By.XPATH, "//table[@id='at-risk']//th[text()='Days since seen']"
        )
        header.click()
        column = driver.execute_script(
            "return Array.from(document.querySelectorAll('#at-risk tbody tr'))"
            ".map(r => parseFloat(r.cells[2].dataset.value));"
        )
        assert column == sorted(column) and len(column) > 1

        # The CSV: every churn_risk row of the school, in its order.
        driver.find_element(By.ID, "csv").click()
        downloaded = _wait_for_file(downloads, ".csv")
        with downloaded.open(newline="", encoding="utf-8-sig") as file:
            rows = list(csv.DictReader(file))
        want = _rows(
            db_path,
            "SELECT student_id, course_id, student_name, risk_band"
            " FROM churn_risk_at(?) WHERE team_id = ?",
            AS_OF,
            second,
        )
        got = [
            (r["student_id"], r["course_id"], r["student_name"], r["risk_band"])
            for r in rows
        ]
        assert got == want and want

        # A snapshot replaces the database: the page reloads by itself.
        page = driver.find_element(By.TAG_NAME, "body")
        shown = page.get_attribute("data-version")
        write_catalog(db_path, db_path.with_suffix(".snapshots"))
        WebDriverWait(driver, 3 * REFRESH_SECONDS).until(
            expected_conditions.staleness_of(page)
        )
        _wait_for_charts(driver)
        reloaded = driver.find_element(By.TAG_NAME, "body").get_attribute(
            "data-version"
        )
        assert reloaded != shown
        assert _shown(driver) == _approx(second_numbers)

        # The screenshot, then the same page at a phone's width, with no
        # sideways scrolling of the page itself.
        screenshot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        phone = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
        driver.refresh()
        _wait_for_charts(driver)
        width, overflow = driver.execute_script(
            "return [window.innerWidth,"
            " document.documentElement.scrollWidth - window.innerWidth]"
        )
        assert width == 390
        assert overflow <= 1

        # As of now (the default), the alerts the demo raised are counted.
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.get(f"{url}/?school={second}")
        _wait_for_charts(driver)
        alerts = _alerts_in_week(db_path, second, datetime.now(UTC))
        assert _shown(driver)["alerts_7d"] == alerts > 0

        assert _severe_console_messages(driver) == []
