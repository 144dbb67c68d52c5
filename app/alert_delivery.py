"""An alert POSTed to a school, signed the way Eduzz signs its webhooks.

The body is the alert's JSON (app.alerts); ``x-signature`` is the hex
HMAC-SHA256 of it under the school's secret, and ``Idempotency-Key`` its
alert_id, since delivery is at least once. Answers 2xx are delivered; 408,
429, 5xx and network errors are retried with exponential backoff; any other
answer is final. Every attempt's outcome is returned, for alert_deliveries.
The worker's AlertDeliverer (app.alert_flow) calls it for each alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from app.alerts import Alert
from engagement.alerts_config import Delivery
from producers.signature import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Attempt:
    alert_id: str
    team_id: str
    attempt: int
    at_us: int
    status: int | None  # the HTTP answer; None when there was none
    error: str | None  # why there was no answer, or why it counts as failed
    delivered: bool


class _Retry(Exception):
    """An answer worth trying again."""


async def deliver(
    alert: Alert,
    delivery: Delivery,
    session: aiohttp.ClientSession,
    attempts: int = 5,
    first_wait_seconds: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Attempt]:
    """POST the alert until it is delivered, refused or out of attempts."""
    body = alert.to_json()
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign(body, delivery.secret.get_secret_value()),
        "idempotency-key": alert.alert_id,
    }
    outcomes: list[Attempt] = []

    def record(status: int | None, error: str | None, delivered: bool) -> None:
        outcomes.append(
            Attempt(
                alert.alert_id,
                alert.team_id,
                len(outcomes) + 1,
                time.time_ns() // 1000,
                status,
                error,
                delivered,
            )
        )

    async def post() -> None:
        try:
            async with session.post(delivery.url, data=body, headers=headers) as answer:
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as error:
            record(None, type(error).__name__, False)
            raise _Retry from error
        if 200 <= status < 300:
            record(status, None, True)
        elif status in RETRIED_STATUSES or status >= 500:
            record(status, f"answered {status}", False)
            raise _Retry
        else:
            record(status, f"answered {status}, not retried", False)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=first_wait_seconds, max=300),
        retry=retry_if_exception_type(_Retry),
        sleep=sleep,
    )
    with contextlib.suppress(RetryError):  # out of attempts: the last one says why
        await retrying(post)
    last = outcomes[-1]
    if not last.delivered:
        logger.warning(
            "Alert %s not delivered to team %s after %d attempts (%s)",
            alert.alert_id,
            alert.team_id,
            len(outcomes),
            last.error,
        )
    return outcomes
