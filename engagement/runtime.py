"""Which Kafka to use: the configured one, or the project's local broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from engagement.broker import LocalBroker, kafka_answers
from engagement.errors import KafkaUnavailable
from engagement.settings import Settings

logger = logging.getLogger(__name__)


@contextmanager
def broker_for(settings: Settings) -> Iterator[str]:
    """Yield the bootstrap servers to use, starting the local broker if needed.

    A configured broker is used as it is. The local broker is started when it is
    not running, and then stopped on exit; one that was already running is left
    running.
    """
    if not settings.uses_local_broker:
        if not kafka_answers(settings.bootstrap_servers, timeout=15.0):
            raise KafkaUnavailable(
                f"Kafka at {settings.bootstrap_servers} (from "
                "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS) does not answer. Start it, or "
                "unset the variable to use the project's local broker."
            )
        yield settings.bootstrap_servers
        return

    broker = LocalBroker(settings)
    started_here = not broker.status().running
    if started_here:
        seconds = broker.start()
        logger.info("Started the local Kafka broker in %.1f s", seconds)
    try:
        yield settings.bootstrap_servers
    finally:
        if started_here:
            broker.stop()
            logger.info("Stopped the local Kafka broker")
