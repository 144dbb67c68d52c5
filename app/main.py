"""The Faust application: ``faust -A app.main worker`` or ``engagement worker``.

One agent consumes the webhooks topic and folds each AlpaClass event into a
table keyed by (team, student, course). Delivery is at-least-once: Faust's
exactly-once mode is not reliable on aiokafka, so the state is made idempotent
instead (see app.state).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import Counter, defaultdict

import faust
from aiokafka.errors import KafkaError

# TODO: use a public way to set the event a table write belongs to, once Faust
# has one; faust-streaming is pinned below 0.16 for this private name.
from faust.streams import _current_event
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge, generate_latest

from app.options import faust_options, webhooks_topic
from app.snapshot import Snapshotter
from app.tracking import Outcome, Tracker
from engagement.errors import EngagementError
from engagement.kafka import consumer_lag, ensure_topic
from engagement.settings import Settings

logger = logging.getLogger(__name__)

settings = Settings()


class EngagementApp(faust.App):
    async def on_first_start(self) -> None:
        # The broker does not create topics implicitly, and Faust creates only
        # its own; the source topic must exist, with the table's partitions.
        # The changelogs are created here too, and waited for: when Faust
        # creates one as it subscribes, its metadata can show the new topic
        # with 0 partitions for minutes, and every table write then fails
        # with PartitionsMismatch.
        topics = [(settings.kafka_topic, False)] + [
            (table.changelog_topic_name, True) for table in self.tables.values()
        ]
        for topic, compacted in topics:
            await ensure_topic(
                settings.bootstrap_servers,
                topic,
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
                compacted=compacted,
            )
        await super().on_first_start()


app = EngagementApp(settings.worker_app_id, **faust_options(settings))
webhooks = webhooks_topic(app, settings)

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
    lambda: float("nan") if (age := snapshot_age()) is None else age
)
CONSUMER_LAG = Gauge(
    "engagement_worker_consumer_lag",
    "Records of the webhooks topic the worker's group has not committed",
)
REJECTIONS = MetricCounter(
    "engagement_worker_rejected_total", "Records refused, by reason", ["reason"]
)
for _outcome in Outcome:
    EVENTS.labels(_outcome.value)


FOLD_ATTEMPTS = 5


async def fold_with_retries(partition: int, group: list[faust.EventT]) -> Counter:
    """Fold a partition's events; never let a failure drop them.

    fold() refuses bad input itself, so an exception here is the machinery:
    e.g. Faust's metadata not yet showing a just-created changelog topic. The
    state is idempotent, so the batch is simply folded again. Should it keep
    failing, the worker exits at once: Faust acks a batch when the loop body
    raises, and its offsets must not be committed, so that the records are
    consumed again after a restart.
    """
    for attempt in range(1, FOLD_ATTEMPTS + 1):
        try:
            return tracker.fold(partition, (e.value for e in group))
        except Exception:
            first, last = group[0].message, group[-1].message
            logger.exception(
                "Could not fold records %s[%d]@%d..%d (attempt %d of %d)",
                first.topic,
                partition,
                first.offset,
                last.offset,
                attempt,
                FOLD_ATTEMPTS,
            )
            await asyncio.sleep(attempt)
    logger.critical("Exiting without committing, so the records are read again")
    os._exit(70)


@app.agent(webhooks)
async def track_activity(stream: faust.StreamT) -> None:
    async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_SECONDS):
        by_partition: dict[int, list[faust.EventT]] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)

        for partition, group in by_partition.items():
            # Faust's stores and changelog pick the partition of the current
            # event; a batch mixes partitions, so each group sets its own. Only
            # this task's context variable: the stream's current_event is what
            # take_events' background buffer reads to know which event to ack.
            _current_event.set(weakref.ref(group[-1]))
            outcomes = await fold_with_retries(partition, group)
            for outcome, count in outcomes.items():
                EVENTS.labels(str(outcome)).inc(count)
        for reason, count in tracker.rejections.items():
            REJECTIONS.labels(reason).inc(count)
        tracker.rejections.clear()


def ready() -> bool:
    """Partitions assigned and their tables recovered: the state is whole."""
    recovered = app.tables.recovery.completed.is_set()
    return recovered and not (app.rebalancing or app.in_recovery)


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
    if not ready():
        logger.info("Rebalance in progress, snapshot postponed to the next interval")
        return
    await take_snapshot()


@app.page("/snapshot")
class SnapshotView(faust.web.View):
    """POST takes a snapshot now and answers once it is written."""

    async def post(self, request: faust.web.Request) -> faust.web.Response:
        if not ready():
            return self.json({"error": "state not ready, retry"}, status=503)
        return self.json(await take_snapshot())


async def committed_lag() -> int | None:
    """Records of the topic the group has not committed yet; None if unknown."""
    try:
        lag = await consumer_lag(
            settings.bootstrap_servers, settings.worker_app_id, settings.kafka_topic
        )
    except (EngagementError, KafkaError) as error:
        logger.warning("Could not read the consumer lag: %s", type(error).__name__)
        return None
    CONSUMER_LAG.set(lag)
    return lag


def snapshot_age() -> float | None:
    last = snapshotter.last
    return None if last is None else time.time() - last.taken_at.timestamp()


@app.page("/health")
class HealthView(faust.web.View):
    async def get(self, request: faust.web.Request) -> faust.web.Response:
        age = snapshot_age()
        return self.json(
            {
                "status": "ok",
                "ready": ready(),
                "partitions": sorted(owned_partitions()),
                "consumer_lag": await committed_lag(),
                "snapshot_age_seconds": None if age is None else round(age, 3),
            }
        )


@app.page("/metrics")
class MetricsView(faust.web.View):
    async def get(self, request: faust.web.Request) -> faust.web.Response:
        await committed_lag()
        # aiohttp refuses a charset inside content_type; Prometheus reads plain text.
        return self.bytes(generate_latest(), content_type="text/plain")
