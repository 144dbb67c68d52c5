"""The HTTP edge: verifies Eduzz webhooks and forwards them to Kafka.

Eduzz retries what is not answered 2xx and switches off a URL that keeps
failing, so a body is answered 2xx only once it is safe: acknowledged by the
broker, or, when the broker has not answered in time, written to the disk
spool (producers.spool), which drains to Kafka in order once it is back.

- The signature is checked over the raw bytes before anything parses them; a
  body without a valid one is counted, never stored (401).
- A signed body that cannot be used is answered 400 with the reason, and kept
  with that reason on the rejected topic, which the worker turns into the
  ``rejected_events`` rows of DuckDB.
- ``document`` and ``phone`` leave every body before it goes on (their values
  only, from the text of a body that does not parse).
- Bodies over the size limit are refused unread (413) and counted.

Logs carry event ids, reasons and counts, never bodies or personal data.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram, generate_latest

from engagement.errors import ConfigurationError, EngagementError, KafkaUnavailable
from engagement.events import (
    Envelope,
    InvalidBody,
    canonical_name,
    parse_body,
    scrub_personal_text,
    strip_personal_data,
)
from engagement.kafka import TOPIC_MAX_MESSAGE_BYTES, ensure_webhook_topics
from engagement.settings import Settings
from producers.signature import SIGNATURE_HEADER, SecretBook
from producers.spool import Spool

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/eduzz"
RETRY_AFTER_SECONDS = "5"

REQUESTS = Counter(
    "engagement_receiver_requests_total",
    "Webhook deliveries, by outcome and event type",
    ["outcome", "event"],
)
SIGNATURE_FAILURES = Counter(
    "engagement_receiver_signature_failures_total",
    "Deliveries refused for their signature, by reason",
    ["reason"],
)
REJECTED = Counter(
    "engagement_receiver_rejected_total",
    "Signed bodies kept on the rejected topic, by reason",
    ["reason"],
)
SPOOL_DEPTH = Gauge(
    "engagement_receiver_spool_depth", "Records spooled to disk, waiting for Kafka"
)
SPOOL_BYTES = Gauge("engagement_receiver_spool_bytes", "Bytes of the spooled records")
LATENCY = Histogram(
    "engagement_receiver_request_seconds",
    "Time from a delivery's arrival to its answer",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class SpoolFull(EngagementError):
    """Kafka is not answering and the spool is at its limit."""


def _event_label(envelope: Envelope | None) -> str:
    """A bounded label: today's AlpaClass names, ping, or other."""
    if envelope is None:
        return ""
    if envelope.is_ping:
        return "ping"
    return canonical_name(envelope.event) or "other"


def _error(status: int, message: str, **extra: object) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return web.json_response(
        {"error": message, **extra}, status=status, headers=headers
    )


class Forwarder:
    """Gets records to Kafka, or to the spool when Kafka does not answer in time.

    While anything is spooled, new records are spooled behind it, so that the
    topic receives them in the order they came.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(
            settings.receiver_spool_path, settings.receiver_spool_max_bytes
        )
        # SQLite blocks: one thread of its own keeps the appends in order.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.producer: AIOKafkaProducer | None = None
        self._spooled = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._update_gauges()

    @property
    def kafka_ready(self) -> bool:
        return self.producer is not None

    @property
    def degraded(self) -> bool:
        return not self.kafka_ready or self.spool.depth > 0

    def _update_gauges(self) -> None:
        SPOOL_DEPTH.set(self.spool.depth)
        SPOOL_BYTES.set(self.spool.bytes)

    async def start(self) -> None:
        """Connect to Kafka; if it is away, spool meanwhile and keep trying.

        A configuration error (the topic exists with other partitions) stops
        the receiver at start, when Kafka answers then.
        """
        if self.spool.depth:
            logger.info("Spool holds %d earlier records; draining", self.spool.depth)
            self._spooled.set()
        try:
            await self._connect_once()
        except (KafkaUnavailable, KafkaError, OSError) as error:
            self._unreachable(error)
            self._tasks.append(asyncio.create_task(self._connect(), name="connect"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.producer is not None:
            await self.producer.stop()
        self._disk.shutdown(wait=True)
        self.spool.close()

    def _unreachable(self, error: Exception) -> None:
        logger.warning(
            "Kafka at %s not reachable (%s); spooling, retrying every 2 s",
            self.settings.bootstrap_servers,
            type(error).__name__,
        )

    async def _connect(self) -> None:
        while True:
            await asyncio.sleep(2)
            try:
                await self._connect_once()
                return
            except (KafkaUnavailable, KafkaError, OSError):
                continue
            except ConfigurationError as error:
                logger.critical("%s (still spooling; retrying in 30 s)", error)
                await asyncio.sleep(30)

    async def _connect_once(self) -> None:
        """Create the topics, start the producer and the spool's drain."""
        settings = self.settings
        await ensure_webhook_topics(settings)
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            max_request_size=TOPIC_MAX_MESSAGE_BYTES,
            linger_ms=1,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self.producer = producer
        logger.info(
            "Receiver forwarding to topic %s at %s",
            settings.kafka_topic,
            settings.bootstrap_servers,
        )
        self._tasks.append(asyncio.create_task(self._drain(), name="spool-drain"))

    async def forward(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> str:
        """ "sent" once Kafka acknowledged, or "spooled"; SpoolFull if neither."""
        if self.producer is not None and self.spool.depth == 0:
            try:
                await self._send(topic, key, value, headers)
                return "sent"
            except (TimeoutError, KafkaError) as error:
                logger.warning(
                    "Kafka did not acknowledge within %.1f s (%s); spooling",
                    self.settings.receiver_kafka_wait_seconds,
                    type(error).__name__,
                )
        loop = asyncio.get_running_loop()
        appended = await loop.run_in_executor(
            self._disk, self.spool.append, topic, key, value, headers
        )
        self._update_gauges()
        if not appended:
            raise SpoolFull("spool full")
        self._spooled.set()
        return "spooled"

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> None:
        assert self.producer is not None
        async with asyncio.timeout(self.settings.receiver_kafka_wait_seconds):
            delivered = await self.producer.send(
                topic, value, key=key, headers=headers or None
            )
            # Shielded: a record the wait gave up on may still be delivered,
            # and then again from the spool, which the worker takes as a
            # redelivery. Its outcome is then of no interest.
            delivered.add_done_callback(_outcome_seen)
            await asyncio.shield(delivered)

    async def _drain(self) -> None:
        """Send the spool to Kafka, oldest first, until it is empty; forever."""
        assert self.producer is not None
        loop = asyncio.get_running_loop()
        backoff = 0.5
        while True:
            await self._spooled.wait()
            records = await loop.run_in_executor(self._disk, self.spool.oldest, 500)
            if not records:
                self._spooled.clear()
                if self.spool.depth == 0:
                    logger.info("Spool drained")
                continue
            try:
                futures = [
                    await self.producer.send(
                        r.topic, r.value, key=r.key, headers=r.headers or None
                    )
                    for r in records
                ]
                async with asyncio.timeout(30):
                    await asyncio.gather(*futures)
            except (TimeoutError, KafkaError) as error:
                logger.warning(
                    "Spool drain paused (%s), %d records waiting; retrying in %.1f s",
                    type(error).__name__,
                    self.spool.depth,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            backoff = 0.5
            await loop.run_in_executor(self._disk, self.spool.remove, records)
            self._update_gauges()
            logger.info("Drained %d spooled records to Kafka", len(records))


def _outcome_seen(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class Admission:
    """At most ``concurrency`` deliveries at once, ``queue_size`` more waiting."""

    def __init__(self, concurrency: int, queue_size: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._queue_size = queue_size
        self.waiting = 0

    def full(self) -> bool:
        return self._slots.locked() and self.waiting >= self._queue_size

    async def run(self, handle: Callable[[], Awaitable[web.Response]]) -> web.Response:
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            return await handle()
        finally:
            self._slots.release()


def _loads(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _known(document: object, field: str) -> str | None:
    """A string or integer field of a JSON object, as a short string."""
    value = document.get(field) if isinstance(document, dict) else None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value).strip()[:200]
    return None


def _team_of(document: object) -> str | None:
    data = document.get("data") if isinstance(document, dict) else None
    return _known(data.get("team") if isinstance(data, dict) else None, "id")


class Receiver:
    def __init__(self, settings: Settings) -> None:
        settings.require_webhook_secrets()
        self.settings = settings
        self.secrets = SecretBook.load(
            settings.webhook_secrets, settings.webhook_secrets_file
        )
        self.admission = Admission(
            settings.receiver_concurrency, settings.receiver_queue_size
        )
        self.forwarder: Forwarder | None = None

    async def webhook(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            if self.admission.full():
                REQUESTS.labels("busy", "").inc()
                return _error(503, "too many deliveries at once, retry later")
            try:
                async with asyncio.timeout(
                    self.settings.receiver_request_timeout_seconds
                ):
                    return await self.admission.run(lambda: self._handle(request))
            except TimeoutError:
                REQUESTS.labels("timeout", "").inc()
                logger.warning("A delivery timed out before it could be answered")
                return _error(503, "timed out, retry later")
        finally:
            LATENCY.observe(time.perf_counter() - started)

    async def _handle(self, request: web.Request) -> web.Response:
        limit = self.settings.receiver_max_body_bytes
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            # The signature covers the bytes as sent; aiohttp would inflate
            # them first. Eduzz does not compress.
            REQUESTS.labels("unsupported_encoding", "").inc()
            return _error(415, "Content-Encoding is not supported; send the body as is")
        if request.content_length is not None and request.content_length > limit:
            REQUESTS.labels("too_large", "").inc()
            return _error(413, f"body larger than {limit} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            REQUESTS.labels("too_large", "").inc()
            return _error(413, f"body larger than {limit} bytes")
        received_at = datetime.now(UTC)

        signature = request.headers.get(SIGNATURE_HEADER)
        scopes = self.secrets.scopes(raw, signature)
        if not scopes:
            reason = "missing" if not signature else "invalid"
            SIGNATURE_FAILURES.labels(reason).inc()
            REQUESTS.labels("bad_signature", "").inc()
            return _error(401, "missing or invalid x-signature")

        try:
            envelope, document = parse_body(raw)
            self._check_sent_date(envelope, received_at)
        except InvalidBody as error:
            document = _loads(raw)
            team = _team_of(document)
            if team is not None and not self.secrets.allows(scopes, team):
                return self._wrong_team()
            return await self._reject(raw, document, error, received_at)

        if not self.secrets.allows(scopes, envelope.team_id):
            return self._wrong_team()
        label = _event_label(envelope)
        if envelope.is_ping:
            REQUESTS.labels("ping", label).inc()
            return web.json_response({"status": "ok", "event": "ping"})

        value = orjson.dumps(strip_personal_data(document))
        try:
            outcome = await self._forwarder().forward(
                self.settings.kafka_topic, envelope.partition_key(), value, []
            )
        except SpoolFull:
            REQUESTS.labels("spool_full", label).inc()
            logger.error("Kafka unavailable and the spool is full; answered 503")
            return _error(503, "Kafka unavailable and spool full, retry later")
        REQUESTS.labels(outcome, label).inc()
        logger.debug("Event %s (%s) %s", envelope.id, label, outcome)
        status = 200 if outcome == "sent" else 202
        return web.json_response(
            {"status": "accepted", "id": envelope.id}, status=status
        )

    def _check_sent_date(self, envelope: Envelope, received_at: datetime) -> None:
        tolerance = self.settings.receiver_future_tolerance_seconds
        if envelope.sentDate > received_at + timedelta(seconds=tolerance):
            raise InvalidBody(
                f"sentDate lies more than {tolerance:g} s in the future",
                kind="future_sent_date",
            )

    def _wrong_team(self) -> web.Response:
        SIGNATURE_FAILURES.labels("wrong_team").inc()
        REQUESTS.labels("bad_signature", "").inc()
        return _error(401, "x-signature is not one of this team's secrets")

    async def _reject(
        self, raw: bytes, document: object, error: InvalidBody, received_at: datetime
    ) -> web.Response:
        """Keep a signed body that cannot be used, with its reason; answer 400.

        What is kept is the body without its personal data: the fields when
        it parses, their values in its text when it does not.
        """
        kept = scrub_personal_text(raw)
        if isinstance(document, dict):
            kept = orjson.dumps(strip_personal_data(document))
        elif isinstance(document, list):  # e.g. an export pasted whole
            for item in document:
                if isinstance(item, dict):
                    strip_personal_data(item)
            kept = orjson.dumps(document)
        headers = [
            ("reason", error.reason.encode()),
            ("kind", error.kind.encode()),
            ("received_at", received_at.isoformat().encode()),
            ("size_bytes", str(len(raw)).encode()),
            ("sha256", hashlib.sha256(raw).hexdigest().encode()),
        ]
        for field, header in (("id", "event_id"), ("event", "event_name")):
            if (known := _known(document, field)) is not None:
                headers.append((header, known.encode()))
        try:
            outcome = await self._forwarder().forward(
                self.settings.rejected_topic, None, kept, headers
            )
        except SpoolFull:
            REQUESTS.labels("spool_full", "").inc()
            return _error(503, "Kafka unavailable and spool full, retry later")
        REQUESTS.labels("rejected", "").inc()
        REJECTED.labels(error.kind).inc()
        logger.info(
            "Rejected a body (%s), %s to the rejected topic: %s",
            error.kind,
            "kept" if outcome == "sent" else "spooled on its way",
            error.reason,
        )
        return _error(400, error.reason, details=error.details)

    def _forwarder(self) -> Forwarder:
        assert self.forwarder is not None, "the receiver's forwarder is not running"
        return self.forwarder

    async def health(self, request: web.Request) -> web.Response:
        forwarder = self._forwarder()
        if not forwarder.degraded:
            return web.json_response({"status": "ok"})
        spool = forwarder.spool
        full = not spool.has_room(self.settings.receiver_max_body_bytes)
        body = {
            "status": "unavailable" if full else "degraded",
            # The producer may be up while the broker does not acknowledge.
            "kafka": "not acknowledging" if forwarder.kafka_ready else "unreachable",
            "spool_depth": spool.depth,
            "spool_bytes": spool.bytes,
        }
        return web.json_response(body, status=503 if full else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), content_type="text/plain")

    async def _lifecycle(self, app: web.Application):  # noqa: ANN202 - aiohttp's
        self.forwarder = Forwarder(self.settings)
        await self.forwarder.start()
        yield
        await self.forwarder.stop()


def create_app(settings: Settings) -> web.Application:
    receiver = Receiver(settings)
    # aiohttp refuses bodies above client_max_size while reading them.
    app = web.Application(client_max_size=settings.receiver_max_body_bytes)
    app.cleanup_ctx.append(receiver._lifecycle)
    app.router.add_post(WEBHOOK_PATH, receiver.webhook)
    app.router.add_get("/health", receiver.health)
    app.router.add_get("/metrics", receiver.metrics)
    return app


def run(settings: Settings) -> None:
    web.run_app(
        create_app(settings),
        host=settings.receiver_host,
        port=settings.receiver_port,
        access_log=None,
        print=None,
    )
