"""An alert POSTed to a school, signed the way Eduzz signs its webhooks.

The body is the alert's JSON (app.alerts); ``x-signature`` is the hex
HMAC-SHA256 of it under the school's secret, and ``Idempotency-Key`` its
alert_id, since delivery is at least once. Answers 2xx are delivered; 408,
429, 5xx and network errors are retried with exponential backoff; any other
answer is final. Every attempt's outcome is returned, for alert_deliveries.
AlertDeliverer, which the worker runs, reads the alerts topic and calls it
for each alert whose school has a URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from app.alert_records import write_deliveries
from app.alerts import Alert, read_alert
from engagement.alerts_config import AlertRules, Delivery
from engagement.settings import Settings
from producers.signature import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({408, 429})
# Alerts of one school delivered at once; alerts being delivered or waiting
# for their school, beyond which the deliverer stops fetching (a school
# that hangs with more alerts than that does hold the others up); records
# fetched at once; how often attempts are written and offsets committed;
# the wait before a failed deliverer starts again.
PER_SCHOOL = 4
MAX_IN_FLIGHT = 20_000
FETCH_RECORDS = 500
FLUSH_MS = 1_000
RESTART_SECONDS = 5.0


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
    on_attempt: Callable[[Attempt], None] | None = None,
) -> list[Attempt]:
    """POST the alert until it is delivered, refused or out of attempts.

    ``on_attempt`` is told each attempt's outcome as soon as it is known.
    A redirect is not followed (it would turn the POST into a GET without
    the alert): it is a final answer, not a delivery.
    """
    body = alert.to_json()
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign(body, delivery.secret.get_secret_value()),
        "idempotency-key": alert.alert_id,
    }
    outcomes: list[Attempt] = []

    def record(
        started_us: int, status: int | None, error: str | None, delivered: bool
    ) -> None:
        attempt = Attempt(
            alert.alert_id,
            alert.team_id,
            len(outcomes) + 1,
            started_us,
            status,
            error,
            delivered,
        )
        outcomes.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)

    async def post() -> None:
        started_us = time.time_ns() // 1000
        try:
            async with session.post(
                delivery.url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as error:
            # The class, and what it says (host and port, not the alert).
            said = f"{type(error).__name__}: {error}".removesuffix(": ")
            record(started_us, None, said[:300], False)
            raise _Retry from error
        if 200 <= status < 300:
            record(started_us, status, None, True)
        elif status in RETRIED_STATUSES or status >= 500:
            record(started_us, status, f"answered {status}", False)
            raise _Retry
        else:
            record(started_us, status, f"answered {status}, not retried", False)

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


class AlertDeliverer:
    """POSTs the alerts topic's alerts to the schools that configured a URL.

    It reads the topic in a consumer group of its own. Each alert is
    delivered by a task of its own, at most PER_SCHOOL at a time for one
    school, so a school that is down or slow holds up only its own alerts.
    Every second, the attempts made since are written as one file of
    ``alert_deliveries``, and then each partition's offset is committed up
    to its first alert still being delivered: after a crash, what was not
    finished is delivered again (the Idempotency-Key says it is the same).
    """

    def __init__(
        self,
        settings: Settings,
        rules: AlertRules,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.on_attempt = on_attempt  # told each attempt (metrics)
        self.group_id = f"{settings.worker_app_id}-alert-delivery"
        self._attempts: list[Attempt] = []
        self._pending: dict[TopicPartition, dict[int, asyncio.Task]] = {}
        self._fetched: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._per_school: dict[str, asyncio.Semaphore] = {}

    async def run(self) -> None:
        """Deliver until the worker stops; start again after a failure."""
        if not self.rules.delivers():
            return
        while True:
            try:
                await self._consume()
            except Exception as error:  # noqa: BLE001 - logged, then again
                logger.warning(
                    "Alert delivery stopped (%s); starting again in %.0f s",
                    type(error).__name__,
                    RESTART_SECONDS,
                )
                await asyncio.sleep(RESTART_SECONDS)

    def in_flight(self) -> int:
        return sum(len(pending) for pending in self._pending.values())

    async def _consume(self) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=FETCH_RECORDS,
        )
        timeout = aiohttp.ClientTimeout(total=settings.alerts_delivery_timeout_seconds)
        # No shared connection limit: schools are limited one by one
        # (PER_SCHOOL), so one that hangs cannot take a healthy one's slots.
        connector = aiohttp.TCPConnector(limit=0)
        self._pending, self._fetched, self._committed = {}, {}, {}
        await consumer.start()
        try:
            consumer.subscribe([settings.alerts_topic], listener=_Revoked(self))
            async with aiohttp.ClientSession(
                timeout=timeout, connector=connector
            ) as session:
                while True:
                    assigned = consumer.assignment()
                    if self.in_flight() >= MAX_IN_FLIGHT:
                        consumer.pause(*assigned)
                    else:
                        consumer.resume(*assigned)
                    batches = await consumer.getmany(timeout_ms=FLUSH_MS)
                    for tp, records in batches.items():
                        self._start(session, tp, records)
                    await self._flush(consumer)
        finally:
            self._cancel(list(self._pending))
            self._write_attempts()  # what was attempted, even when stopping
            await consumer.stop()

    def _start(
        self,
        session: aiohttp.ClientSession,
        tp: TopicPartition,
        records: list[ConsumerRecord],
    ) -> None:
        pending = self._pending.setdefault(tp, {})
        for record in records:
            alert = read_alert(record, log=False)  # the recorder logs it
            if alert is None:
                continue
            delivery = self.rules.delivery(alert.team_id)
            if delivery is not None:
                task = asyncio.create_task(self._deliver(session, alert, delivery))
                pending[record.offset] = task
        self._fetched[tp] = records[-1].offset + 1

    async def _deliver(
        self, session: aiohttp.ClientSession, alert: Alert, delivery: Delivery
    ) -> None:
        limit = self._per_school.setdefault(
            alert.team_id, asyncio.Semaphore(PER_SCHOOL)
        )
        async with limit:
            try:
                await deliver(
                    alert,
                    delivery,
                    session,
                    self.settings.alerts_delivery_attempts,
                    self.settings.alerts_delivery_first_wait_seconds,
                    on_attempt=self._record,
                )
            except Exception as error:  # noqa: BLE001 - one alert, not the rest
                logger.error(
                    "Could not deliver alert %s (%s)",
                    alert.alert_id,
                    type(error).__name__,
                )

    def _record(self, attempt: Attempt) -> None:
        # Not a bound append of the list: _flush replaces the list.
        self._attempts.append(attempt)
        if self.on_attempt is not None:
            self.on_attempt(attempt)

    async def _flush(self, consumer: AIOKafkaConsumer) -> None:
        """Write the attempts made since the last flush; commit what is done."""
        # Done before the attempts are taken: a finished task's attempts
        # are all in the list by then, so none is committed unwritten.
        for pending in self._pending.values():
            for offset in [o for o, task in pending.items() if task.done()]:
                del pending[offset]
        await asyncio.to_thread(self._write_attempts)
        offsets = {}
        for tp, fetched in self._fetched.items():
            pending = self._pending.get(tp)
            upto = min(pending) if pending else fetched
            if upto > self._committed.get(tp, -1):
                offsets[tp] = upto
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as error:  # a rebalance: the next flush commits
                logger.info("Alert delivery commit deferred (%s)", type(error).__name__)
                return
            self._committed.update(offsets)

    def _write_attempts(self) -> None:
        attempts, self._attempts = self._attempts, []
        if attempts:
            stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
            name = f"{self.group_id}-{os.getpid()}-{stamp}"
            write_deliveries(self.settings.snapshot_dir, name, attempts)

    def _cancel(self, partitions: list[TopicPartition]) -> None:
        """Give up these partitions' deliveries: their next owner makes them."""
        for tp in partitions:
            for task in self._pending.pop(tp, {}).values():
                task.cancel()
            self._fetched.pop(tp, None)
            self._committed.pop(tp, None)


class _Revoked(ConsumerRebalanceListener):
    def __init__(self, deliverer: AlertDeliverer) -> None:
        self.deliverer = deliverer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.deliverer._cancel(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass
