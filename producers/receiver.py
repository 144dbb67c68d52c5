"""The HTTP edge: verifies Eduzz webhooks and forwards them to Kafka.

A body is answered 2xx only once the broker has acknowledged it, because Eduzz
retries what is not answered 2xx and that retry is what makes delivery
at-least-once. The signature is checked over the raw bytes before anything
parses them.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, generate_latest

from engagement.events import InvalidBody, parse_body, strip_personal_data
from engagement.kafka import TOPIC_MAX_MESSAGE_BYTES, ensure_topic
from engagement.settings import Settings
from producers.signature import SIGNATURE_HEADER, verify

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/eduzz"
PRODUCER_KEY = web.AppKey("producer", AIOKafkaProducer)
SETTINGS_KEY = web.AppKey("settings", Settings)

REQUESTS = Counter(
    "engagement_receiver_requests_total",
    "Webhook deliveries, by outcome and event type",
    ["outcome", "event"],
)


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def receive_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    limit = settings.receiver_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        REQUESTS.labels("too_large", "").inc()
        return _error(413, f"body larger than {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        REQUESTS.labels("too_large", "").inc()
        return _error(413, f"body larger than {limit} bytes")

    if not verify(raw, request.headers.get(SIGNATURE_HEADER), settings.webhook_secrets):
        REQUESTS.labels("bad_signature", "").inc()
        return _error(401, "missing or invalid x-signature")

    try:
        envelope, document = parse_body(raw)
    except InvalidBody as error:
        REQUESTS.labels("invalid", "").inc()
        logger.info("Refused a signed body: %s", error.reason)
        return _error(400, error.reason, details=error.details)

    if envelope.is_ping:
        REQUESTS.labels("ping", envelope.event).inc()
        return web.json_response({"status": "ok", "event": "ping"})

    value = orjson.dumps(strip_personal_data(document))
    try:
        await request.app[PRODUCER_KEY].send_and_wait(
            settings.kafka_topic, value, key=envelope.partition_key()
        )
    except KafkaError as error:
        REQUESTS.labels("kafka_unavailable", envelope.event).inc()
        logger.warning(
            "Kafka did not acknowledge event %s (%s); answered 503 so Eduzz retries",
            envelope.id,
            type(error).__name__,
        )
        return web.json_response(
            {"error": "Kafka unavailable, retry later"},
            status=503,
            headers={"Retry-After": "5"},
        )

    REQUESTS.labels("accepted", envelope.event).inc()
    logger.debug("Forwarded event %s (%s)", envelope.id, envelope.event)
    return web.json_response({"status": "accepted", "id": envelope.id})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), content_type="text/plain")


async def _kafka_producer(app: web.Application):  # noqa: ANN202 - aiohttp context
    settings = app[SETTINGS_KEY]
    await ensure_topic(
        settings.bootstrap_servers,
        settings.kafka_topic,
        settings.kafka_topic_partitions,
        settings.kafka_replication_factor,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        max_request_size=TOPIC_MAX_MESSAGE_BYTES,
        linger_ms=1,
    )
    await producer.start()
    app[PRODUCER_KEY] = producer
    logger.info(
        "Receiver forwarding to topic %s at %s",
        settings.kafka_topic,
        settings.bootstrap_servers,
    )
    yield
    await producer.stop()


def create_app(settings: Settings) -> web.Application:
    settings.require_webhook_secrets()
    # aiohttp refuses bodies above client_max_size while reading them.
    app = web.Application(client_max_size=settings.receiver_max_body_bytes)
    app[SETTINGS_KEY] = settings
    app.cleanup_ctx.append(_kafka_producer)
    app.router.add_post(WEBHOOK_PATH, receive_webhook)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def run(settings: Settings) -> None:
    web.run_app(
        create_app(settings),
        host=settings.receiver_host,
        port=settings.receiver_port,
        access_log=None,
        print=None,
    )
