"""Test streams on the real broker: simulated bodies produced straight to a topic,
and worker processes started, killed and snapshotted around them."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from engagement.kafka import ensure_topic, wait_for_lag_zero
from engagement.processes import Service, free_port, request_snapshot, start_service
from producers.simulate import Scale, simulate

PARTITIONS = 8


def simulated_documents(students: int, redeliveries: float, seed: int) -> list[dict]:
    """Simulated traffic, with a share of its bodies delivered a second time."""
    documents = simulate(Scale(schools=2, students_per_school=students, seed=seed))
    rng = random.Random(seed)
    for original in rng.sample(documents, int(len(documents) * redeliveries)):
        documents.insert(rng.randrange(len(documents) + 1), original)
    return documents


def produce(bootstrap: str, topic: str, documents: list[dict]) -> None:
    """Write bodies keyed as the receiver keys them, in order."""

    async def run() -> None:
        await ensure_topic(bootstrap, topic, PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        await producer.start()
        try:
            for document in documents:
                data = document["data"]
                key = f"{data['team']['id']}:{data['student']['id']}".encode()
                await producer.send(topic, json.dumps(document).encode(), key=key)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


@dataclass
class Job:
    """One stream job's names: topic, group, snapshot location."""

    bootstrap: str
    topic: str
    app_id: str
    db_path: Path
    root: Path

    def start_worker(
        self,
        name: str,
        data_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Service:
        port = free_port()
        env = {
            "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ENGAGEMENT_KAFKA_TOPIC": self.topic,
            "ENGAGEMENT_KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
            "ENGAGEMENT_WORKER_APP_ID": self.app_id,
            "ENGAGEMENT_WORKER_DATA_DIR": str(data_dir or self.root / name),
            "ENGAGEMENT_WORKER_WEB_PORT": str(port),
            "ENGAGEMENT_DUCKDB_PATH": str(self.db_path),
            "ENGAGEMENT_DUCKDB_SNAPSHOT_INTERVAL_SECONDS": "3600",
            **(extra_env or {}),
        }
        worker = start_service(
            name,
            "worker",
            env,
            f"http://127.0.0.1:{port}/health",
            self.root / f"{name}.log",
        )
        worker.wait_healthy(timeout=120)
        return worker

    def wait_processed(self, *workers: Service, timeout: float = 300) -> None:
        """Until the group has committed the topic; fails early if a worker died."""

        def alive() -> None:
            for worker in workers:
                worker.check_alive()

        asyncio.run(
            wait_for_lag_zero(
                self.bootstrap, self.app_id, self.topic, timeout, alive=alive
            )
        )

    @staticmethod
    def snapshot(worker: Service) -> dict:
        return request_snapshot(worker.health_url.removesuffix("/health"))

    @staticmethod
    def health(worker: Service) -> dict:
        return httpx.get(worker.health_url, timeout=10).json()
