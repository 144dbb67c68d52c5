"""Alerts POSTed to a real local HTTP server standing in for a school."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from app.alert_delivery import deliver
from app.alerts import Alert, AlertKind
from engagement.alerts_config import Delivery

SECRET = "the school's secret"
ALERT = Alert(
    AlertKind.INACTIVE,
    "team",
    "student",
    "course",
    7.0,
    1_796_000_000_000_000,
    1_796_604_800_000_000,
    student_name="Ana",
    student_email="ana@example.org",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _school(answers: list[int]):
    """A server answering ``answers`` in turn (the last one from then on)."""
    received: list[tuple[Any, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers.copy(), await request.read()))
        return web.Response(status=answers[min(len(received), len(answers)) - 1])

    app = web.Application()
    app.router.add_post("/hooks", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hooks", received


def _run(answers: list[int] | None, attempts: int = 5):
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:  # time moves on, nobody waits
        sleeps.append(seconds)

    async def go():
        if answers is None:  # nobody listens there
            runner, url, received = None, f"http://127.0.0.1:{_free_port()}/", []
        else:
            runner, url, received = await _school(answers)
        try:
            async with aiohttp.ClientSession() as session:
                outcome = await deliver(
                    ALERT,
                    Delivery(url, SecretStr(SECRET)),
                    session,
                    attempts=attempts,
                    first_wait_seconds=0.5,
                    sleep=sleep,
                )
        finally:
            if runner is not None:
                await runner.cleanup()
        return outcome, received

    outcome, received = asyncio.run(go())
    return outcome, received, sleeps


def test_a_school_that_fails_twice_gets_the_alert_on_the_third_try():
    outcome, received, sleeps = _run([503, 502, 200])

    assert [(a.attempt, a.status, a.delivered) for a in outcome] == [
        (1, 503, False),
        (2, 502, False),
        (3, 200, True),
    ]
    assert sleeps == [0.5, 1.0]  # exponential backoff between the tries
    body = ALERT.to_json()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    for headers, sent in received:
        assert sent == body
        assert headers["x-signature"] == expected
        assert headers["Idempotency-Key"] == ALERT.alert_id
    assert {a.alert_id for a in outcome} == {ALERT.alert_id}


def test_a_school_that_always_fails_keeps_the_alert_as_failed(caplog):
    outcome, received, sleeps = _run([500], attempts=4)

    assert [(a.status, a.delivered) for a in outcome] == [(500, False)] * 4
    assert len(received) == 4 and sleeps == [0.5, 1.0, 2.0]
    assert "not delivered" in caplog.text
    assert "Ana" not in caplog.text and "ana@example.org" not in caplog.text


def test_a_refusal_is_final_and_no_answer_is_retried():
    refused, received, sleeps = _run([400])
    assert [(a.status, a.delivered) for a in refused] == [(400, False)]
    assert len(received) == 1 and sleeps == []

    # A redirect is not followed: that would be a GET without the alert.
    redirected, received, sleeps = _run([302])
    assert [(a.status, a.delivered) for a in redirected] == [(302, False)]
    assert len(received) == 1 and sleeps == []

    unreachable, _, sleeps = _run(None, attempts=2)
    assert [a.status for a in unreachable] == [None, None]
    for attempt in unreachable:  # what failed, and where
        assert attempt.error.startswith("ClientConnectorError: Cannot connect")
    assert sleeps == [0.5]


def test_alerts_and_attempts_show_once_each_in_duckdb(tmp_path):
    from dataclasses import replace

    from analytics.catalog import connect_readonly, write_catalog
    from app.alert_records import write_alerts, write_deliveries

    snapshot_dir = tmp_path / "snapshots"
    later = replace(ALERT, detected_us=ALERT.detected_us + 5_000_000, catch_up=True)
    other = replace(ALERT, threshold_days=14.0, detected_us=1_797_209_600_000_000)
    # Raised by one worker, and again by the next owner after a crash.
    write_alerts(snapshot_dir, "partition-0001-a", [ALERT, other])
    write_alerts(snapshot_dir, "partition-0001-b", [later])
    outcome, _, _ = _run([503, 200])
    write_deliveries(snapshot_dir, "deliveries-1", outcome)
    write_deliveries(snapshot_dir, "deliveries-1", outcome)  # written again
    write_catalog(tmp_path / "engagement.duckdb", snapshot_dir)

    with connect_readonly(tmp_path / "engagement.duckdb") as connection:
        alerts = connection.execute(
            "SELECT alert_id, threshold_days, catch_up, epoch_us(detected_at), "
            "days_inactive, student_email FROM inactivity_alerts ORDER BY 2"
        ).fetchall()
        attempts = connection.execute(
            "SELECT attempt, status, delivered FROM alert_deliveries ORDER BY 1"
        ).fetchall()
    assert alerts == [
        (ALERT.alert_id, 7.0, False, ALERT.detected_us, 7.0, "ana@example.org"),
        (other.alert_id, 14.0, False, other.detected_us, 14.0, "ana@example.org"),
    ]
    assert attempts == [(1, 503, False), (2, 200, True)]
