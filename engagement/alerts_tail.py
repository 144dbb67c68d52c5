"""``engagement alerts tail``: the alerts topic, read as it fills.

It reads without a consumer group, so it changes nothing for the worker or
for delivery. What the topic holds already comes first, in detection order;
with ``follow``, every alert after that as it arrives. The topic is at least
once, so an alert raised again after a crash is printed once (by alert_id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer

from app.alerts import Alert, read_alert
from engagement.errors import EngagementError
from engagement.kafka import topic_partitions


class NoAlertsTopic(EngagementError):
    pass


async def tail_alerts(
    bootstrap_servers: str, topic: str, follow: bool, new_only: bool = False
) -> AsyncIterator[Alert]:
    tps = await topic_partitions(bootstrap_servers, topic)
    if not tps:
        raise NoAlertsTopic(
            f"There is no topic {topic}: the worker creates it when it starts."
        )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        if new_only:
            await consumer.seek_to_end(*tps)
        else:
            await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        seen: set[str] = set()

        def fresh(records: list) -> list[Alert]:
            alerts = []
            for record in records:
                alert = read_alert(record)
                if alert is None:
                    continue
                if alert.alert_id not in seen:
                    seen.add(alert.alert_id)
                    alerts.append(alert)
            return alerts

        # What is there already, sorted as detected.
        backlog: list[Alert] = []

        async def behind() -> bool:
            for tp, end in ends.items():
                if await consumer.position(tp) < end:
                    return True
            return False

        while not new_only and await behind():
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                backlog += fresh(records)
        for alert in sorted(backlog, key=lambda a: a.detected_us):
            yield alert
        while follow:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for alert in fresh(records):
                    yield alert
    finally:
        await consumer.stop()
