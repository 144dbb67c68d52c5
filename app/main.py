"""The Faust application: ``faust -A app.main worker`` or ``engagement worker``.

The worker folds each AlpaClass event of the webhooks topic into a table keyed
by (team, student, course) and one keyed by (team, student). Faust runs the
consumer group, the tables and their recovery; the records themselves come a
fetched batch at a time (see app.batching), because Faust's per-record path to
an agent is slower than the folding itself. Delivery is at-least-once: Faust's
exactly-once mode is not reliable on aiokafka, so the state is made idempotent
instead (see app.state).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime

import faust
from aiokafka.errors import KafkaError
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge, generate_latest

from app.alert_checker import AlertChecker
from app.alert_delivery import AlertDeliverer
from app.alert_flow import AlertMonitor, AlertRecorder
from app.alerts import AlertKind
from app.folder import PartitionFolder
from app.options import faust_options, webhooks_topic
from app.rejected import RejectedRecorder
from app.snapshot import Snapshotter
from app.tracking import Outcome, Tracker
from engagement.alerts_config import AlertRules
from engagement.errors import EngagementError
from engagement.kafka import consumer_lag, ensure_topic, ensure_webhook_topics
from engagement.settings import Settings

logger = logging.getLogger(__name__)

settings = Settings()
# Read at import, so that a wrong file stops the worker before it starts.
alert_rules = AlertRules.load(settings.alerts_config)


class EngagementApp(faust.App):
    async def on_first_start(self) -> None:
        # The broker does not create topics implicitly, and Faust creates only
        # its own; the source topic must exist, with the table's partitions.
        # The changelogs are created here too, and waited for: when Faust
        # creates one as it subscribes, its metadata can show the new topic
        # with 0 partitions for minutes, and every table write then fails
        # with PartitionsMismatch.
        await ensure_webhook_topics(settings)
        for table in self.tables.values():
            await ensure_topic(
                settings.bootstrap_servers,
                table.changelog_topic_name,
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
                compacted=True,
            )
        # No agent subscribes to these topics: app.batching hands their
        # records over; the conductor still has to subscribe the consumer.
        self.topics.add(webhooks)
        self.topics.add(rejected)
        self.topics.add(alerts_topic)
        await super().on_first_start()


app = EngagementApp(
    settings.worker_app_id, **faust_options(settings, transport="engagement-kafka")
)
webhooks = webhooks_topic(app, settings)
rejected = webhooks_topic(app, settings, settings.rejected_topic)
# Of the same partitions as the webhooks topic, so Faust assigns a partition
# of both to the same worker: an alert is recorded where its key is.
alerts_topic = webhooks_topic(app, settings, settings.alerts_topic)

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
snapshotter = Snapshotter(
    settings.duckdb_path,
    settings.snapshot_dir,
    settings.duckdb_snapshot_grace_seconds,
    settings.duckdb_history_retention_days,
)


@app.on_partitions_revoked.connect
async def _partitions_revoked(
    sender: faust.App, revoked: set, **kwargs: object
) -> None:
    # Another worker may change them before they come back: whatever this
    # worker knew of what changed since its last snapshot no longer holds.
    partitions = [tp.partition for tp in revoked if tp.topic == settings.kafka_topic]
    snapshotter.forget(partitions)
    monitor.forget(partitions)


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


def count_outcomes(outcomes: Counter[str], tracker: Tracker) -> None:
    for outcome, count in outcomes.items():
        EVENTS.labels(str(outcome)).inc(count)
    for reason, count in tracker.rejections.items():
        REJECTIONS.labels(reason).inc(count)
    tracker.rejections.clear()


checker = AlertChecker(alert_rules)
# Read by app.batching's consumer: the topics whose records come in batches.
folder = PartitionFolder(
    app, (activity, students), count_outcomes, snapshotter.snapshotted, checker
)
app.batch_handlers = {
    settings.kafka_topic: folder,
    settings.rejected_topic: RejectedRecorder(settings.snapshot_dir),
    settings.alerts_topic: AlertRecorder(folder, checker, settings.snapshot_dir),
}
ALERTS = MetricCounter(
    "engagement_alerts_raised_total", "Alerts sent to the alerts topic", ["kind"]
)
DELIVERIES = MetricCounter(
    "engagement_alert_delivery_attempts_total",
    "Attempts at POSTing an alert to a school, by outcome",
    ["outcome"],
)
KEYS_WITH_DEADLINE = Gauge(
    "engagement_alerts_keys_with_deadline",
    "Keys the worker's inactivity check is watching",
)
KEYS_WITH_DEADLINE.set_function(lambda: float(checker.keys()))
for _kind in AlertKind:
    ALERTS.labels(_kind.value)
for _delivered in ("delivered", "failed"):
    DELIVERIES.labels(_delivered)


def count_alerts(alerts: list) -> None:
    for alert in alerts:
        ALERTS.labels(str(alert.kind)).inc()


monitor = AlertMonitor(
    app,
    checker,
    folder,
    settings.kafka_topic,
    settings.alerts_topic,
    on_sent=count_alerts,
)
deliverer = AlertDeliverer(
    settings,
    alert_rules,
    on_attempt=lambda attempt: DELIVERIES.labels(
        "delivered" if attempt.delivered else "failed"
    ).inc(),
)


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
    result = await snapshotter.snapshot(folder.source, owned_partitions())
    return {
        "rows": result.rows,
        "partitions": result.partitions,
        "full_partitions": result.full_partitions,
        "seconds": round(result.seconds, 3),
        "compacted_partitions": result.compacted,
        "compact_seconds": round(result.compact_seconds, 3),
        "taken_at": result.taken_at.isoformat(),
    }


@app.timer(settings.duckdb_snapshot_interval_seconds)
async def periodic_snapshot() -> None:
    if not ready():
        logger.info("Rebalance in progress, snapshot postponed to the next interval")
        return
    await take_snapshot()


@app.timer(settings.alerts_check_interval_seconds)
async def check_alerts() -> None:
    if ready():
        await monitor.check(owned_partitions())


@app.task
async def deliver_alerts() -> None:
    await deliverer.run()


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
                "alerts": {
                    "keys_with_deadline": checker.keys(),
                    "raised": monitor.raised,
                    # The last check of each partition, once caught up with it.
                    "checked_at": {
                        str(p): datetime.fromtimestamp(t, UTC).isoformat()
                        for p, t in sorted(monitor.checked_at.items())
                    },
                },
            }
        )


@app.page("/metrics")
class MetricsView(faust.web.View):
    async def get(self, request: faust.web.Request) -> faust.web.Response:
        await committed_lag()
        # aiohttp refuses a charset inside content_type; Prometheus reads plain text.
        return self.bytes(generate_latest(), content_type="text/plain")
