"""The Faust application: ``faust -A app.main worker`` or ``engagement worker``.

One agent consumes the webhooks topic and folds each AlpaClass event into a
table keyed by (team, student, course). Delivery is at-least-once: Faust's
exactly-once mode is not reliable on aiokafka, so the state is made idempotent
instead (see app.state).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict

import faust
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge, generate_latest

from app.snapshot import Snapshotter
from app.tracking import Outcome, Tracker
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
students = app.Table(
    "students",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.kafka_topic_partitions,
)
tracker = Tracker(activity, students)

# Events are folded a batch at a time: each key of a batch is read and written
# once, however many of its events the batch holds.
BATCH_SIZE = 2000
BATCH_WITHIN_SECONDS = 0.1

snapshotter = Snapshotter(settings.duckdb_path, settings.snapshot_dir)

EVENTS = MetricCounter(
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
    async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_SECONDS):
        by_partition: dict[int, list[faust.EventT]] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)

        for partition, group in by_partition.items():
            # Faust's stores and changelog pick the partition of the current
            # event; a batch mixes partitions, so each group sets its own.
            stream._set_current_event(group[-1])
            try:
                outcomes = tracker.fold(partition, (e.value for e in group))
            except Exception:
                # A bug, not bad input (fold() refuses bad input itself).
                # Faust would ack the records and restart the agent anyway;
                # say which they were, so they can be replayed once fixed.
                first, last = group[0].message, group[-1].message
                logger.exception(
                    "Could not fold records %s[%d]@%d..%d into the state",
                    first.topic,
                    partition,
                    first.offset,
                    last.offset,
                )
                outcomes = Counter({Outcome.FAILED: len(group)})
            for outcome, count in outcomes.items():
                EVENTS.labels(str(outcome)).inc(count)


def owned_partitions() -> set[int]:
    return {
        tp.partition
        for tp in app.assignor.assigned_actives()
        if tp.topic == settings.kafka_topic
    }


async def take_snapshot() -> dict:
    result = await snapshotter.snapshot(
        activity.values(), students.values(), owned_partitions()
    )
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
