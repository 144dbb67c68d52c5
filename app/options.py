"""Faust's settings for this job, from the ENGAGEMENT_* settings.

Shared by the worker and the benchmark's naive agent, so both run on the same
Faust configuration.
"""

from __future__ import annotations

from typing import Any

import faust

from engagement.settings import Settings

# Bytes in, bytes out: bodies are parsed by engagement.events and table records
# encoded by app.state, so no Faust codec can fail on a record and skip it.
RAW_SCHEMA = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def faust_options(settings: Settings, transport: str = "kafka") -> dict[str, Any]:
    """Faust's settings; ``transport`` names Faust's driver, or app.batching's."""
    return {
        "broker": [
            f"{transport}://{server.strip()}"
            for server in settings.bootstrap_servers.split(",")
        ],
        "store": "rocksdb://",
        "datadir": str(settings.worker_data_dir),
        "topic_partitions": settings.kafka_topic_partitions,
        "topic_replication_factor": settings.kafka_replication_factor,
        "web_host": settings.worker_web_host,
        "web_port": settings.worker_web_port,
        "web_bind": settings.worker_web_host,
        # A record may hold a body of up to 1 MiB.
        "consumer_max_fetch_size": 4 * 1024 * 1024,
    }


def webhooks_topic(
    app: faust.App, settings: Settings, name: str | None = None
) -> faust.TopicT:
    """The webhooks topic (or another of its shape), as raw bytes."""
    return app.topic(
        name or settings.kafka_topic,
        schema=faust.Schema(**RAW_SCHEMA),
        partitions=settings.kafka_topic_partitions,
    )
