"""The Faust application: ``faust -A app.main worker`` or ``engagement worker``.

One agent consumes the webhooks topic and folds each AlpaClass event into a
table keyed by (team, student, course). Delivery is at-least-once: Faust's
exactly-once mode is not reliable on aiokafka, so the state is made idempotent
instead (see app.state).
"""

from __future__ import annotations

import logging
import time

import faust
from prometheus_client import Counter, Gauge, generate_latest

from app.snapshot import Snapshotter
from app.tracking import Outcome, track
from engagement.kafka import ensure_topic
from engagement.settings import Settings

logger = logging.getLogger(__name__)

settings = Settings()


class EngagementApp(faust.App):
    async def on_first_start(self) -> None:
        # The broker does not create topics implicitly, and Faust creates only
        # its own; the source topic must exist, with the table's partitions.
        await ensure_topic(
            settings.bootstrap_servers,
            settings.kafka_topic,
            settings.kafka_topic_partitions,
            settings.kafka_replication_factor,
        )
        await super().on_first_start()


app = EngagementApp(
    settings.worker_app_id,
    broker=[f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",")],
    store="rocksdb://",
    datadir=str(settings.worker_data_dir),
    topic_partitions=settings.kafka_topic_partitions,
    topic_replication_factor=settings.kafka_replication_factor,
    web_host=settings.worker_web_host,
    web_port=settings.worker_web_port,
    web_bind=settings.worker_web_host,
    # A record may hold a body of up to 1 MiB.
    consumer_max_fetch_size=4 * 1024 * 1024,
)

# Bytes in, bytes out: bodies are parsed by engagement.events and table records
# encoded by app.state, so no Faust codec can fail on a record and skip it.
webhooks = app.topic(
    settings.kafka_topic,
    schema=faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    ),
    partitions=settings.kafka_topic_partitions,
)

# Faust derives a table's codecs from key_type and value_type: bytes means raw.
activity = app.Table(
    "student_course_activity",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.kafka_topic_partitions,
)

snapshotter = Snapshotter(settings.duckdb_path, settings.snapshot_dir)

EVENTS = Counter(
    "engagement_worker_events_total", "Records consumed, by outcome", ["outcome"]
)
SNAPSHOT_AGE = Gauge(
    "engagement_snapshot_age_seconds", "Seconds since the last snapshot finished"
)
SNAPSHOT_AGE.set_function(
    lambda: (
        time.time() - snapshotter.last.taken_at.timestamp()
        if snapshotter.last
        else float("nan")
    )
)
for _outcome in Outcome:
    EVENTS.labels(_outcome.value)


@app.agent(webhooks)
async def track_activity(stream: faust.StreamT) -> None:
    async for event in stream.events():
        message = event.message
        try:
            outcome = track(activity, message.partition, event.value)
        except Exception:
            # A bug, not bad input (track() refuses bad input itself). Faust
            # would ack the record and restart the agent anyway; say which
            # record it was, so it can be replayed once fixed.
            logger.exception(
                "Could not fold record %s[%d]@%d into the state",
                message.topic,
                message.partition,
                message.offset,
            )
            outcome = Outcome.FAILED
        EVENTS.labels(outcome.value).inc()


def owned_partitions() -> set[int]:
    return {
        tp.partition
        for tp in app.assignor.assigned_actives()
        if tp.topic == settings.kafka_topic
    }


async def take_snapshot() -> dict:
    result = await snapshotter.snapshot(activity.values(), owned_partitions())
    return {
        "rows": result.rows,
        "partitions": result.partitions,
        "seconds": round(result.seconds, 3),
        "taken_at": result.taken_at.isoformat(),
    }


@app.timer(settings.duckdb_snapshot_interval_seconds)
async def periodic_snapshot() -> None:
    if app.rebalancing or app.in_recovery:
        logger.info("Rebalance in progress, snapshot postponed to the next interval")
        return
    await take_snapshot()


@app.page("/snapshot")
class SnapshotView(faust.web.View):
    """POST takes a snapshot now and answers once it is written."""

    async def post(self, request: faust.web.Request) -> faust.web.Response:
        if app.rebalancing or app.in_recovery:
            return self.json({"error": "rebalance in progress, retry"}, status=503)
        return self.json(await take_snapshot())


@app.page("/health")
class HealthView(faust.web.View):
    async def get(self, request: faust.web.Request) -> faust.web.Response:
        last = snapshotter.last
        return self.json(
            {
                "status": "ok",
                "rebalancing": bool(app.rebalancing or app.in_recovery),
                "partitions": sorted(owned_partitions()),
                "snapshot_age_seconds": (
                    round(time.time() - last.taken_at.timestamp(), 3) if last else None
                ),
            }
        )


@app.page("/metrics")
class MetricsView(faust.web.View):
    async def get(self, request: faust.web.Request) -> faust.web.Response:
        # aiohttp refuses a charset inside content_type; Prometheus reads plain text.
        return self.bytes(generate_latest(), content_type="text/plain")
