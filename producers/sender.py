"""Sends webhook bodies to a receiver as signed POSTs, concurrently.

What a backfill needs: every body delivered once it can be, so 5xx answers
(the receiver busy, or Kafka down with a full spool) and connection errors
are retried with a growing wait; 4xx answers are final, and counted. Sending
the same file twice is safe: the worker knows each event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from producers.signature import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)

RETRY_ATTEMPTS = 8


class RetryableAnswer(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass
class SendSummary:
    sent: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    errors: int = 0  # connection errors and timeouts, after every retry
    retries: int = 0

    @property
    def accepted(self) -> int:
        return sum(n for status, n in self.by_status.items() if 200 <= status < 300)

    @property
    def rejected(self) -> int:
        return self.sent - self.accepted


async def send_bodies(
    bodies: Sequence[bytes],
    url: str,
    secret: str,
    concurrency: int = 16,
    on_done: Callable[[int], None] | None = None,
    timeout: float = 30.0,
    attempts: int = RETRY_ATTEMPTS,
    max_wait: float = 10.0,
) -> SendSummary:
    """POST every body, signed with ``secret``, retrying 5xx; count the answers."""
    summary = SendSummary()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def post(session: aiohttp.ClientSession, body: bytes) -> int:
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(body, secret),
        }
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            if response.status >= 500:
                raise RetryableAnswer(response.status)
            return response.status

    def count_retry(state: object) -> None:
        summary.retries += 1

    async def deliver(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            retrying = AsyncRetrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=0.2, max=max_wait),
                retry=retry_if_exception_type(
                    (RetryableAnswer, aiohttp.ClientError, TimeoutError)
                ),
                before_sleep=count_retry,
                reraise=True,
            )
            try:
                status = await retrying(post, session, body)
                summary.by_status[status] += 1
            except RetryableAnswer as answer:
                summary.by_status[answer.status] += 1
            except (aiohttp.ClientError, TimeoutError) as error:
                summary.errors += 1
                logger.warning("Delivery failed: %s", type(error).__name__)
            summary.sent += 1
            if on_done is not None:
                on_done(1)

    # aiohttp rather than httpx here: on this path httpx's async client
    # managed a tenth of the requests per second against the same receiver.
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as s:
        await asyncio.gather(*(deliver(s) for _ in range(concurrency)))
    return summary
