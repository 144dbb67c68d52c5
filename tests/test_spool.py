"""The receiver while Kafka is away: answer 2xx, spool to disk, lose nothing.

This test runs its own broker, because it stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest

from engagement.processes import Service, free_port, start_service
from producers.sender import send_bodies
from producers.signature import sign
from producers.spool import Spool
from tests.compare import assert_exact
from tests.conftest import MakeBroker
from tests.streams import Job, simulated_documents

pytestmark = pytest.mark.kafka

SECRET = "spool-secret"


def _receiver(env: dict[str, str], port: int, log) -> Service:
    service = start_service(
        "receiver", "receiver", env, f"http://127.0.0.1:{port}/health", log
    )
    service.wait_healthy(timeout=60)
    return service


def _send(url: str, documents: list[dict]) -> dict[int, int]:
    bodies = [json.dumps(document).encode() for document in documents]
    summary = asyncio.run(send_bodies(bodies, url, SECRET, concurrency=16, attempts=1))
    assert summary.errors == 0
    return dict(summary.by_status)


def test_broker_away_then_receiver_killed_nothing_lost_nothing_doubled(
    make_broker: MakeBroker, lib_cache, tmp_path, unique_name
):
    broker = make_broker(lib_cache)
    broker.start()
    bootstrap = broker.bootstrap_servers
    port = free_port()
    topic = f"{unique_name}.alpaclass.webhooks"
    spool_path = tmp_path / "spool.sqlite3"
    env = {
        "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ENGAGEMENT_KAFKA_TOPIC": topic,
        "ENGAGEMENT_WEBHOOK_SECRETS": SECRET,
        "ENGAGEMENT_RECEIVER_PORT": str(port),
        "ENGAGEMENT_RECEIVER_SPOOL_PATH": str(spool_path),
        "ENGAGEMENT_RECEIVER_KAFKA_WAIT_SECONDS": "0.5",
    }
    url = f"http://127.0.0.1:{port}/webhooks/eduzz"
    documents = simulated_documents(students=8, redeliveries=0.1, seed=23)
    assert len(documents) > 600
    before, during = documents[:-500], documents[-500:]

    receiver = _receiver(env, port, tmp_path / "receiver.log")
    # Mostly 200; on a loaded machine an acknowledgement can take longer than
    # the 0.5 s wait, and that delivery is spooled (202): accepted all the same.
    answers = _send(url, before)
    assert set(answers) <= {200, 202} and sum(answers.values()) == len(before)
    assert answers.get(200, 0) > 0

    broker.stop()
    answers = _send(url, during)
    assert set(answers) <= {200, 202} and sum(answers.values()) == 500
    health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    assert health["status"] == "degraded" and health["spool_depth"] > 0

    # Killed with the spool full of answered deliveries.
    os.kill(receiver.process.pid, signal.SIGKILL)
    receiver.process.wait()
    assert Spool(spool_path, 2**30).depth == health["spool_depth"]

    broker.start()
    receiver = _receiver(env, port, tmp_path / "receiver.log")
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] != "ok":
            assert time.monotonic() < deadline, "the spool did not drain"
            time.sleep(0.5)

        job = Job(
            bootstrap=bootstrap,
            topic=topic,
            app_id=f"{unique_name}-worker",
            db_path=tmp_path / "engagement.duckdb",
            root=tmp_path,
        )
        worker = job.start_worker("worker")
        try:
            job.wait_processed(worker)
            job.snapshot(worker)
            # Exactly once: every counter equals the computation over the
            # unique events, though some were both sent and spooled.
            assert_exact(job.db_path, documents)
        finally:
            worker.stop()
    finally:
        receiver.stop()


def test_without_kafka_the_spool_fills_then_deliveries_get_503(tmp_path, fixtures_dir):
    # Nothing listens on this port: the receiver starts anyway and spools.
    port, nowhere = free_port(), free_port()
    spool_path = tmp_path / "spool.sqlite3"
    env = {
        "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{nowhere}",
        "ENGAGEMENT_WEBHOOK_SECRETS": SECRET,
        "ENGAGEMENT_RECEIVER_PORT": str(port),
        "ENGAGEMENT_RECEIVER_SPOOL_PATH": str(spool_path),
        "ENGAGEMENT_RECEIVER_SPOOL_MAX_BYTES": str(1024 * 1024),
    }
    url = f"http://127.0.0.1:{port}/webhooks/eduzz"
    created = json.loads(
        (fixtures_dir / "alpaclass" / "student_created.json").read_bytes()
    )
    assert (
        created["data"]["student"]["phone"] and created["data"]["student"]["document"]
    )

    def body(event_id: str) -> bytes:
        # About 600 kB each: the second no longer fits a 1 MiB spool.
        return json.dumps({**created, "id": event_id, "pad": "x" * 600_000}).encode()

    def post(raw: bytes) -> httpx.Response:
        return httpx.post(url, content=raw, headers={"x-signature": sign(raw, SECRET)})

    receiver = _receiver(env, port, tmp_path / "receiver.log")
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["kafka"] == "unreachable"

        first, second = post(body("first")), post(body("second"))
        assert first.status_code == 202
        assert second.status_code == 503 and second.headers["Retry-After"]
        health = httpx.get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 503 and health.json()["spool_depth"] == 1
    finally:
        receiver.stop()

    # What waits in the spool has no personal data.
    [spooled] = Spool(spool_path, 2**30).oldest(10)
    student = json.loads(spooled.value)["data"]["student"]
    assert "phone" not in student and "document" not in student
    assert json.loads(spooled.value)["id"] == "first"
