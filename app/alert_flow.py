"""Inactivity alerts in the worker: checked, recorded, delivered.

- ``AlertMonitor.check`` runs on a timer. It asks the checker for each owned
  partition's keys that are due, and sends their alerts to the alerts topic,
  to the partition of the key. A partition is checked only once the worker
  has caught up with it (webhooks and alerts topics), so that no alert comes
  from half-replayed state. While history (old sentDates: a backfill, a
  resend) arrives in a partition, and for REPLAY_SETTLE_SECONDS after, only
  live crossings are alerted; the rest wait. The first check after being
  behind says ``catch_up``, and alerts each key once, for the highest
  threshold crossed; so does a crossing found late.
- ``AlertRecorder`` is the alerts topic's batch handler (app.batching). Faust
  lets only a stream write a table, and a timer is none: so the alert comes
  back through the topic, and the recorder writes into the key's record that
  it was raised (CourseActivity.alerted, Student.alerted), with the
  changelog, and writes the batch's alerts as rows of ``inactivity_alerts``.
- app.alert_delivery.AlertDeliverer POSTs them to the schools.

The topic and HTTP deliveries are at least once: an alert raised again after
a crash has the same alert_id, and DuckDB's view keeps one row per alert_id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from app.alert_checker import AlertChecker
from app.alert_records import write_alerts
from app.alerts import Alert, AlertKind, read_alert
from app.folder import PartitionFolder, TableWrites, as_partition
from app.rejected import batch_file_name
from app.state import (
    CourseActivity,
    Student,
    alert_summary,
    course_key,
    student_key,
)

logger = logging.getLogger(__name__)

# Records decoded between two yields to the event loop while rebuilding.
REBUILD_CHUNK = 20_000
# How long after folding history (app.folder.REPLAY_AGE_US) a partition waits
# before it is checked: a backfill's batches come closer together than this.
REPLAY_SETTLE_SECONDS = 10.0
# Keys of a partition one check looks at, at most: the event loop (folds,
# heartbeats, web pages) must keep answering when a first check after a
# backfill finds most of the table due; the rest wait for the next checks.
CHECK_LIMIT = 2_000


def alert_key(alert: Alert) -> bytes:
    if alert.kind is AlertKind.NEVER_STARTED:
        return student_key(alert.team_id, alert.student_id)
    assert alert.course_id is not None
    return course_key(alert.team_id, alert.student_id, alert.course_id)


def recorded(alerted: list | None, alert: Alert) -> list | None:
    """A course record's ``alerted`` once ``alert`` is recorded in it.

    Recording is idempotent and tolerates any order: an older alert, or one
    recorded already, leaves the record as it is.
    """
    seen, threshold = alert.last_seen_us, alert.threshold_days
    assert seen is not None
    if alert.kind is AlertKind.REACTIVATED:
        if alerted is not None and alerted[0] == seen:
            return [seen, alerted[1], True]
        return alerted
    if alerted is None or alerted[0] < seen:
        return [seen, threshold, False]
    if alerted[0] == seen and not alerted[2] and alerted[1] < threshold:
        return [seen, threshold, False]
    return alerted


class AlertRecorder:
    """The batch handler of the alerts topic: each alert recorded in its key."""

    def __init__(
        self, folder: PartitionFolder, checker: AlertChecker, snapshot_dir: Path
    ) -> None:
        self.folder = folder
        self.checker = checker
        self.snapshot_dir = snapshot_dir

    async def fold(self, tp: TP, records: Sequence[ConsumerRecord]) -> Awaitable[Any]:
        _alive = as_partition(tp)  # the stores' weak reference needs it kept
        courses, students = self.folder.writes
        for writes in self.folder.writes:
            writes.begin()
        alerts: list[Alert] = []
        changed_courses: list[CourseActivity] = []
        changed_students: list[Student] = []
        for record in records:
            alert = read_alert(record)
            if alert is None:
                continue
            try:
                if alert.kind is AlertKind.NEVER_STARTED:
                    student = _record_student(students, alert)
                    if student is not None:
                        changed_students.append(student)
                else:
                    course = _record_course(courses, alert)
                    if course is not None:
                        changed_courses.append(course)
            except (ValueError, TypeError, KeyError) as error:
                # A record the alert cannot be recorded in (not one of ours):
                # skipped, rather than stop the worker on it at every start.
                logger.error(
                    "Could not record %s[%d]@%d (%s)",
                    tp.topic,
                    tp.partition,
                    record.offset,
                    type(error).__name__,
                )
                continue
            alerts.append(alert)
        for writes in self.folder.writes:  # before any await, as in the fold
            writes.mark_changed(tp.partition)
        for course in changed_courses:
            self.checker.observe_course(course)
        for student in changed_students:
            self.checker.observe_student(student)
        if alerts:
            name = batch_file_name(tp, records)
            await asyncio.to_thread(write_alerts, self.snapshot_dir, name, alerts)
        producer = self.folder.app.producer
        sent = [await w.send(producer, tp.partition) for w in self.folder.writes]
        return asyncio.gather(*(asyncio.gather(*futures) for futures in sent))

    def settle(self, tp: TP, delivered: list[list[Any]]) -> None:
        self.folder.settle(tp, delivered)


def _record_course(courses: TableWrites, alert: Alert) -> CourseActivity | None:
    key = alert_key(alert)
    raw = courses.get(key)
    if raw is None:
        return None  # cannot happen: the alert came from the record
    state = CourseActivity.loads(raw)
    alerted = recorded(state.alerted, alert)
    if alerted != state.alerted:
        state.alerted = alerted
        courses[key] = state.dumps()
    return state


def _record_student(students: TableWrites, alert: Alert) -> Student | None:
    key = alert_key(alert)
    raw = students.get(key)
    if raw is None:
        return None
    state = Student.loads(raw)
    if state.alerted != alert.last_seen_us:
        state.alerted = alert.last_seen_us
        students[key] = state.dumps()
    return state


class AlertMonitor:
    """The periodic check, over the partitions the worker owns."""

    def __init__(
        self,
        app: faust.App,
        checker: AlertChecker,
        folder: PartitionFolder,
        webhooks_topic: str,
        alerts_topic: str,
        on_sent: Callable[[list[Alert]], None] | None = None,
    ) -> None:
        self.app = app
        self.on_sent = on_sent  # told the alerts each check sent (metrics)
        self.checker = checker
        self.folder = folder
        self.webhooks_topic = webhooks_topic
        self.alerts_topic = alerts_topic
        self._indexed: set[int] = set()
        # Counts forget() calls: a check or rebuild that awaited across one
        # (a rebalance) stops, rather than index or check what left.
        self._epoch = 0
        # Partitions not caught up at some check since their last one.
        self._behind: set[int] = set()
        # Partition -> wall-clock time of its last check (caught up).
        self.checked_at: dict[int, float] = {}
        self.raised = 0

    def forget(self, partitions: Iterable[int]) -> None:
        partitions = set(partitions)
        self._epoch += 1
        self._indexed -= partitions
        self._behind -= partitions
        for partition in partitions:
            self.checked_at.pop(partition, None)
        self.checker.forget(partitions)

    def _caught_up(self, partition: int) -> bool:
        consumer = self.app.consumer
        return all(
            consumer.caught_up(TP(topic, partition))
            for topic in (self.webhooks_topic, self.alerts_topic)
        )

    async def check(self, owned: set[int]) -> int:
        """Check each owned partition that is caught up; the alerts sent."""
        epoch = self._epoch
        for partition in sorted(owned - self._indexed):
            if not await self._rebuild(partition, epoch):
                return 0
        sent = 0
        for partition in sorted(owned):
            if self._epoch != epoch:
                break  # a rebalance began while sending
            if not self._caught_up(partition):
                self._behind.add(partition)
                continue
            # History still arriving: live crossings only, the rest held.
            replayed = self.folder.replayed_at.get(partition)
            replaying = replayed is not None and (
                time.monotonic() - replayed < REPLAY_SETTLE_SECONDS
            )
            catching_up = partition in self._behind and not replaying
            if not replaying:
                self._behind.discard(partition)
            _alive = as_partition(TP(self.webhooks_topic, partition))
            alerts = self.checker.check(
                partition,
                self._course,
                self._student,
                catching_up,
                CHECK_LIMIT,
                hold_late=replaying,
            )
            del _alive
            # As of the check's own clock: a deadline passing since is live.
            now = self.checker.last_check_us
            if catching_up and self.checker.has_due(partition, now):
                self._behind.add(partition)  # still catching up at the next check
            if alerts:
                try:
                    await self._send(partition, alerts)
                except KafkaError as error:
                    # What it raised is not recorded: rebuild, and raise again.
                    logger.warning(
                        "Could not send %d alerts of partition %d (%s); they "
                        "are raised again at the next check",
                        len(alerts),
                        partition,
                        type(error).__name__,
                    )
                    self.forget([partition])
                    return sent
                sent += len(alerts)
                if self._epoch != epoch:
                    break
            if not replaying:
                self.checked_at[partition] = time.time()
        self.raised += sent
        return sent

    def _course(self, key: bytes) -> CourseActivity | None:
        raw = self.folder.writes[0].store.get(key)
        return None if raw is None else CourseActivity.loads(raw)

    def _student(self, key: bytes) -> Student | None:
        raw = self.folder.writes[1].store.get(key)
        return None if raw is None else Student.loads(raw)

    async def _send(self, partition: int, alerts: list[Alert]) -> None:
        producer = self.app.producer
        futures = [
            await producer.send(
                self.alerts_topic,
                alert_key(alert),
                alert.to_json(),
                partition,
                None,
                None,
            )
            for alert in alerts
        ]
        await asyncio.gather(*futures)
        if self.on_sent is not None:
            self.on_sent(alerts)
        kinds = sorted({str(alert.kind) for alert in alerts})
        logger.info(
            "Raised %d alerts (%s) in partition %d%s",
            len(alerts),
            ", ".join(kinds),
            partition,
            ", catching up" if alerts[0].catch_up else "",
        )

    async def _rebuild(self, partition: int, epoch: int) -> bool:
        """Index every record of the partition, as recovered from the changelog.

        False if a rebalance began meanwhile (``epoch`` is past): the
        partition is rebuilt at a later check, if it is still this worker's.
        """
        started = time.monotonic()
        courses, students = (w.store for w in self.folder.writes)
        checker = self.checker
        checker.start_rebuild(partition)
        records = 0
        try:
            for store, observe in (
                (courses, _observe_course_record),
                (students, _observe_student_record),
            ):
                values = store._visible_values(store._db_for_partition(partition))
                while chunk := list(itertools.islice(values, REBUILD_CHUNK)):
                    for raw in chunk:
                        observe(checker, raw)
                    records += len(chunk)
                    await asyncio.sleep(0)
                    if self._epoch != epoch:
                        checker.forget([partition])
                        return False
        finally:
            checker.finish_rebuild(partition)
        self._indexed.add(partition)
        self._behind.add(partition)
        logger.info(
            "Alert deadlines of partition %d rebuilt from %d records in %.2f s",
            partition,
            records,
            time.monotonic() - started,
        )
        return True


def _observe_course_record(checker: AlertChecker, raw: bytes) -> None:
    checker.observe_course(alert_summary(raw), rebuilding=True)


def _observe_student_record(checker: AlertChecker, raw: bytes) -> None:
    checker.observe_student(Student.loads(raw), rebuilding=True)
