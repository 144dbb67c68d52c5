"""Inactivity alerts raised by real workers on the real broker.

The bodies are placed in time around the thresholds, relative to the wall
clock: a crossing the test waits for is seconds away, not days. Expected
alerts are worked out here from the bodies and the thresholds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from analytics.catalog import connect_readonly
from app.alerts import DAY_US
from engagement.kafka import wait_for_lag_zero
from tests.alert_bodies import course_event, days_ago, registration, visit
from tests.streams import PARTITIONS, Job, produce

pytestmark = pytest.mark.kafka

TEAM = "school-t"


def _alerts_topic(job: Job) -> str:
    return job.topic.removesuffix("webhooks") + "inactivity-alerts"


def _written(job: Job, table: str) -> list[dict]:
    """Every row the workers wrote to ``table``, duplicates included."""
    folder = job.db_path.with_suffix(".snapshots") / table
    if not any(folder.glob("*.parquet")):
        return []
    with duckdb.connect() as connection:
        cursor = connection.execute(f"SELECT * FROM '{folder}/*.parquet'")
        return _dicts(cursor)


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict]:
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _wait_for(job: Job, table: str, done, workers, timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    while True:
        rows = _written(job, table)
        if done(rows) or time.monotonic() > deadline:
            return rows
        for worker in workers:
            worker.check_alive()
        time.sleep(0.25)


def _wait_checked(job: Job, workers, after: float, timeout: float = 90) -> None:
    """Until every partition had a check, caught up, after ``after`` (epoch s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checked: dict[str, float] = {}
        for worker in workers:
            for partition, at in job.health(worker)["alerts"]["checked_at"].items():
                checked[partition] = datetime.fromisoformat(at).timestamp()
        if len(checked) == PARTITIONS and min(checked.values()) > after:
            return
        time.sleep(0.25)
    raise AssertionError("the workers did not check every partition in time")


def _wait_recorded(job: Job, timeout: float = 120) -> None:
    asyncio.run(
        wait_for_lag_zero(job.bootstrap, job.app_id, _alerts_topic(job), timeout)
    )


def _view(job: Job, table: str) -> list[dict]:
    with connect_readonly(job.db_path) as connection:
        return _dicts(connection.execute(f"SELECT * FROM {table}"))


def _about(rows: list[dict]) -> set[tuple]:
    return {
        (row["student_id"], row["kind"], row["threshold_days"], row["catch_up"])
        for row in rows
    }


def _lateness_s(row: dict) -> float:
    crossed = row["last_seen_at"] + timedelta(days=row["threshold_days"])
    return (row["detected_at"] - crossed).total_seconds()


def test_alerts_live_and_caught_up_each_once_across_a_kill(job):
    # Already past when the worker starts: caught up, one alert each, for the
    # highest threshold crossed (20 days: 14), or silent (finished, active).
    backlog = [
        visit(TEAM, "gone", "c1", days_ago(20)),
        visit(TEAM, "finished", "c1", days_ago(40)),
        course_event("student_course_finished", TEAM, "finished", "c1", days_ago(40)),
        registration(TEAM, "idle", days_ago(10)),
        registration(TEAM, "started", days_ago(5)),
        visit(TEAM, "started", "c1", days_ago(1)),
    ]
    produce(job.bootstrap, job.topic, backlog)
    worker = job.start_worker("worker")
    try:
        job.wait_processed(worker)
        # Crossings seconds ahead, seen live: 7 days and 3 days (never started).
        soon = days_ago(7) + timedelta(seconds=8)
        produce(
            job.bootstrap,
            job.topic,
            [
                visit(TEAM, "soon", "c1", soon),
                registration(TEAM, "new", days_ago(3) + timedelta(seconds=8)),
            ],
        )
        expected = {
            ("gone", "inactive", 14.0, True),
            ("idle", "never_started", 3.0, True),
            ("soon", "inactive", 7.0, False),
            ("new", "never_started", 3.0, False),
        }
        rows = _wait_for(
            job, "inactivity_alerts", lambda r: _about(r) >= expected, [worker]
        )
        assert _about(rows) == expected
        # Never before the crossing. How soon after is measured, not asserted
        # (benchmarks/alert_checks.py); live means within the catch-up bound.
        assert all(_lateness_s(row) >= 0 for row in rows), rows
        first_ids = {row["alert_id"] for row in rows}

        # Killed before it may have recorded them: raised again after the
        # restart, with the same ids, and still one row each in DuckDB.
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        restarted = time.time()
        worker = job.start_worker("worker")
        job.wait_processed(worker)
        _wait_checked(job, [worker], after=restarted)
        _wait_recorded(job)

        # Back after the alert: one reactivated alert, about the absence.
        back = days_ago(1 / 86_400)
        produce(job.bootstrap, job.topic, [visit(TEAM, "soon", "c1", back)])
        rows = _wait_for(
            job,
            "inactivity_alerts",
            lambda r: any(row["kind"] == "reactivated" for row in r),
            [worker],
        )
        [reactivated] = [row for row in rows if row["kind"] == "reactivated"]
        assert reactivated["student_id"] == "soon"
        assert reactivated["last_seen_at"] == soon
        gap = (back - soon) / timedelta(days=1)
        assert reactivated["days_inactive"] == pytest.approx(gap, abs=1e-6)
        time.sleep(3)  # a few more checks: nothing else is due
        job.snapshot(worker)
    finally:
        worker.stop()

    view = _view(job, "inactivity_alerts")
    assert len(view) == len({row["alert_id"] for row in view}) == 5
    assert {row["alert_id"] for row in view} >= first_ids
    assert _about(view) == expected | {("soon", "reactivated", 7.0, False)}
    assert {row["student_name"] for row in view} == {
        f"Name {student}" for student in ("gone", "idle", "soon", "new")
    }

    # `engagement alerts tail` prints each once, though the topic may repeat.
    tail = subprocess.run(
        [sys.executable, "-m", "engagement", "alerts", "tail", "--format", "json"],
        env={
            **os.environ,
            "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": job.bootstrap,
            "ENGAGEMENT_KAFKA_TOPIC": job.topic,
        },
        capture_output=True,
        timeout=60,
        check=True,
    )
    printed = [json.loads(line) for line in tail.stdout.splitlines()]
    assert sorted(a["alert_id"] for a in printed) == sorted(
        row["alert_id"] for row in view
    )
    detected = [a["detected_at"] for a in printed]
    assert detected == sorted(detected)


def test_two_workers_and_a_rebalance_alert_each_key_once(job):
    # 8 to 13 days without activity: each key crossed 7 days, not 14.
    keys = [(f"s{n:03d}", f"c{n % 3}") for n in range(240)]
    documents = [
        visit(TEAM, student, course, days_ago(8 + (n % 50) / 10))
        for n, (student, course) in enumerate(keys)
    ]
    produce(job.bootstrap, job.topic, documents)
    workers = [job.start_worker("one")]
    try:
        workers.append(job.start_worker("two"))  # joins while one checks
        job.wait_processed(*workers)
        settled = time.time()
        _wait_checked(job, workers, after=settled)
        _wait_recorded(job)
        workers.pop().stop()  # two leaves: one takes its partitions over
        left = time.time()
        _wait_checked(job, workers, after=left)
        _wait_recorded(job)
        job.snapshot(workers[0])
    finally:
        for worker in workers:
            worker.stop()

    view = _view(job, "inactivity_alerts")
    assert len(view) == len({row["alert_id"] for row in view})
    assert sorted((r["student_id"], r["course_id"]) for r in view) == sorted(keys)
    assert {r["threshold_days"] for r in view} == {7.0}


HANG_SECONDS = 15


class _School(BaseHTTPRequestHandler):
    """A school's endpoint: answers the statuses of its path's plan in turn
    (0: hang for HANG_SECONDS, then 200)."""

    plans: dict[str, list[int]] = {}
    received: list[tuple[str, dict, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.received.append((self.path, headers, body))
        plan = self.plans[self.path]
        tries = sum(1 for path, _, _ in self.received if path == self.path)
        status = plan[min(tries, len(plan)) - 1]
        if status == 0:
            time.sleep(HANG_SECONDS)
        self.send_response(status or 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def school() -> Iterator[str]:
    _School.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _School)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_school_gets_its_alert_signed_after_two_failures_another_never(
    job, school, tmp_path: Path
):
    # a: fails twice, then takes it; b: always down; h: hangs, then takes it.
    _School.plans = {"/a": [500, 503, 200], "/b": [503], "/h": [0]}
    config = tmp_path / "alerts.toml"
    config.write_text(
        f"""
[teams.school-a]
url = "{school}/a"
secret = "secret of a"

[teams.school-b]
url = "{school}/b"
secret = "secret of b"

[teams.school-h]
url = "{school}/h"
secret = "secret of h"
"""
    )
    produce(
        job.bootstrap,
        job.topic,
        [
            visit("school-a", "ana", "c1", days_ago(8)),
            visit("school-b", "bia", "c1", days_ago(8)),
            visit("school-c", "cai", "c1", days_ago(8)),  # no url: not POSTed
            visit("school-h", "hal", "c1", days_ago(8)),
        ],
    )
    worker = job.start_worker(
        "worker",
        extra_env={
            "ENGAGEMENT_ALERTS_CONFIG": str(config),
            "ENGAGEMENT_ALERTS_DELIVERY_ATTEMPTS": "3",
            "ENGAGEMENT_ALERTS_DELIVERY_FIRST_WAIT_SECONDS": "0.2",
            "ENGAGEMENT_ALERTS_DELIVERY_TIMEOUT_SECONDS": str(HANG_SECONDS * 4),
        },
    )

    def teams(rows: list[dict]) -> list[str]:
        return [row["team_id"] for row in rows]

    try:
        rows = _wait_for(
            job,
            "alert_deliveries",
            lambda r: teams(r).count("school-a") + teams(r).count("school-b") >= 6,
            [worker],
        )
        # A and b were served while h's POST still hung: h holds up only h.
        assert "school-h" not in teams(rows)
        hung = _wait_for(
            job, "alert_deliveries", lambda r: "school-h" in teams(r), [worker]
        )
        job.snapshot(worker)
    finally:
        worker.stop()

    [of_h] = [row for row in hung if row["team_id"] == "school-h"]
    assert (of_h["attempt"], of_h["status"], of_h["delivered"]) == (1, 200, True)
    alerts = {row["team_id"]: row for row in _view(job, "inactivity_alerts")}
    assert set(alerts) == {"school-a", "school-b", "school-c", "school-h"}
    outcomes = sorted(
        (row["team_id"], row["attempt"], row["status"], row["delivered"])
        for row in rows
    )
    assert outcomes == [
        ("school-a", 1, 500, False),
        ("school-a", 2, 503, False),
        ("school-a", 3, 200, True),
        ("school-b", 1, 503, False),
        ("school-b", 2, 503, False),
        ("school-b", 3, 503, False),
    ]
    assert {row["alert_id"] for row in hung} == {
        alerts[team]["alert_id"] for team in ("school-a", "school-b", "school-h")
    }
    for path, headers, body in _School.received:
        team = f"school-{path[1:]}"
        secret = f"secret of {team[-1]}".encode()
        signed = hmac.new(secret, body, hashlib.sha256).hexdigest()
        assert headers["x-signature"] == signed
        sent = json.loads(body)
        assert headers["idempotency-key"] == sent["alert_id"]
        assert sent["alert_id"] == alerts[team]["alert_id"]
        assert sent["version"] == 1 and sent["team_id"] == team
        seen = datetime.fromisoformat(sent["last_seen_at"])
        assert seen == alerts[team]["last_seen_at"]
        assert sent["days_inactive"] * DAY_US > 8 * DAY_US - 60e6
