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

    unreachable, _, sleeps = _run(None, attempts=2)
    assert [(a.status, a.error) for a in unreachable] == [
        (None, "ClientConnectorError"),
        (None, "ClientConnectorError"),
    ]
    assert sleeps == [0.5]
