"""Topic administration and consumer lag, over aiokafka's admin client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from engagement.errors import ConfigurationError, KafkaUnavailable
from engagement.settings import Settings

logger = logging.getLogger(__name__)

# Records up to the receiver's 1 MiB body limit, with room for headers.
TOPIC_MAX_MESSAGE_BYTES = 2 * 1024 * 1024


async def _admin(bootstrap_servers: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000
    )
    try:
        await admin.start()
    except KafkaError as error:
        await admin.close()
        raise KafkaUnavailable(
            f"Kafka at {bootstrap_servers} does not answer ({error}). Start the "
            "local broker with `engagement broker start`, or set "
            "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS to a running broker."
        ) from error
    return admin


async def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    replication_factor: int = 1,
    compacted: bool = False,
    retention_ms: int | None = None,
) -> None:
    """Create ``topic`` with ``partitions`` unless it exists with exactly that many.

    The broker runs with topic auto-creation off: Faust's tables must have as
    many partitions as their source topic, so nothing may create it implicitly.
    """
    configs = {
        "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
        "cleanup.policy": "compact" if compacted else "delete",
    }
    if retention_ms is not None:
        configs["retention.ms"] = str(retention_ms)
    admin = await _admin(bootstrap_servers)
    try:
        # The broker answers each topic with an error code; it raises nothing.
        response = await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=configs,
                )
            ]
        )
        for _, code, message in response.topic_errors:
            if code == 0:
                logger.info("Created topic %s with %d partitions", topic, partitions)
            elif code != TopicAlreadyExistsError.errno:
                raise ConfigurationError(
                    f"Kafka refused to create topic {topic}: {message} (code {code})"
                )

        found = await _partition_count(admin, topic)
        if found != partitions:
            raise ConfigurationError(
                f"Topic {topic} has {found} partitions but "
                f"ENGAGEMENT_KAFKA_TOPIC_PARTITIONS is {partitions}. Set it to "
                f"{found}, or use a new topic name."
            )
    finally:
        await admin.close()


async def ensure_webhook_topics(settings: Settings) -> None:
    """The webhooks topic, and those of its shape: rejected bodies, alerts."""
    hours = 3_600_000
    for topic, retention_ms in (
        (settings.kafka_topic, None),
        (settings.rejected_topic, int(settings.kafka_rejected_retention_hours * hours)),
        (settings.alerts_topic, int(settings.kafka_alerts_retention_hours * hours)),
    ):
        await ensure_topic(
            settings.bootstrap_servers,
            topic,
            settings.kafka_topic_partitions,
            settings.kafka_replication_factor,
            retention_ms=retention_ms,
        )


async def _partition_count(
    admin: AIOKafkaAdminClient, topic: str, timeout: float = 30.0
) -> int:
    # Just after creation the broker's metadata may not list the partitions
    # yet (or may answer with an error code for the topic): ask again.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        [described] = await admin.describe_topics([topic])
        count = len(described["partitions"])
        if (count and not described.get("error_code")) or loop.time() > deadline:
            return count
        await asyncio.sleep(0.1)


async def delete_topics(bootstrap_servers: str, prefixes: Iterable[str]) -> list[str]:
    """Delete every topic whose name starts with one of ``prefixes``."""
    prefixes = tuple(prefixes)
    admin = await _admin(bootstrap_servers)
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def topic_partitions(bootstrap_servers: str, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``; none if it does not exist."""
    admin = await _admin(bootstrap_servers)
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        TopicPartition(topic, part["partition"]) for part in described["partitions"]
    )


async def consumer_lag(bootstrap_servers: str, group_id: str, topic: str) -> int:
    """Records of ``topic`` that ``group_id`` has not committed yet."""
    tps = await topic_partitions(bootstrap_servers, topic)
    admin = await _admin(bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        await consumer.start()
        end_offsets = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
    finally:
        await consumer.stop()
        await admin.close()

    lag = 0
    for tp, end in end_offsets.items():
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag += max(end - position, 0)
    return lag


async def wait_for_lag_zero(
    bootstrap_servers: str,
    group_id: str,
    topic: str,
    timeout: float,
    poll_interval: float = 0.5,
    alive: Callable[[], None] | None = None,
) -> None:
    """Return once ``group_id`` has committed every record of ``topic``.

    ``alive`` is called between polls and may raise, e.g. when the consumer's
    process has died and waiting longer is pointless.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    lag = await consumer_lag(bootstrap_servers, group_id, topic)
    while lag > 0:
        if alive is not None:
            alive()
        if loop.time() > deadline:
            raise TimeoutError(
                f"Consumer group {group_id} still has {lag} records of {topic} "
                f"to process after {timeout:.0f} s."
            )
        await asyncio.sleep(poll_interval)
        lag = await consumer_lag(bootstrap_servers, group_id, topic)
