"""The receiver as deployed: a real process, real HTTP, the real broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from engagement.processes import Service, free_port, start_service
from producers.signature import sign

pytestmark = pytest.mark.kafka

SECRET = "test-secret"


@pytest.fixture
def receiver(kafka_bootstrap, unique_name, tmp_path) -> Iterator[tuple[str, str]]:
    port = free_port()
    topic = f"{unique_name}.alpaclass.webhooks"
    service: Service = start_service(
        "receiver",
        "receiver",
        {
            "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "ENGAGEMENT_KAFKA_TOPIC": topic,
            "ENGAGEMENT_WEBHOOK_SECRETS": f"old-secret,{SECRET}",
            "ENGAGEMENT_RECEIVER_PORT": str(port),
        },
        f"http://127.0.0.1:{port}/health",
        tmp_path / "receiver.log",
    )
    try:
        service.wait_healthy(timeout=60)
        yield f"http://127.0.0.1:{port}/webhooks/eduzz", topic
    finally:
        service.stop()


def _post(url: str, body: bytes, secret: str = SECRET) -> httpx.Response:
    return httpx.post(url, content=body, headers={"x-signature": sign(body, secret)})


def _records(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, dict]]:
    async def consume() -> list[tuple[bytes, dict]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        records: list[tuple[bytes, dict]] = []
        try:
            # Wait a little past the expected count, so an extra record shows.
            for _ in range(6):
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    records += [(m.key, json.loads(m.value)) for m in messages]
                if len(records) > expected:
                    break
        finally:
            await consumer.stop()
        return records

    return asyncio.run(consume())


def test_signed_events_reach_the_topic_keyed_by_school_and_student(
    receiver, kafka_bootstrap, fixtures_dir
):
    url, topic = receiver
    paths = sorted((fixtures_dir / "alpaclass").glob("student_*.json"))

    for path in paths:
        assert _post(url, path.read_bytes()).status_code == 200

    records = _records(kafka_bootstrap, topic, expected=len(paths))
    assert len(records) == len(paths)
    by_id = {value["id"]: (key, value) for key, value in records}
    for path in paths:
        sent = json.loads(path.read_bytes())
        key, value = by_id[sent["id"]]
        student = sent["data"]["student"]
        assert key == f"{sent['data']['team']['id']}:{student['id']}".encode()
        for field in ("document", "phone"):
            student.pop(field, None)
        assert value == sent


def test_unsigned_invalid_and_ping_bodies_are_not_forwarded(
    receiver, kafka_bootstrap, fixtures_dir
):
    url, topic = receiver
    event = (fixtures_dir / "alpaclass" / "student_course_last_seen.json").read_bytes()
    ping = (fixtures_dir / "alpaclass" / "ping.json").read_bytes()

    wrong_key = _post(url, event, secret="another-school")
    unsigned = httpx.post(url, content=event)
    trailing_comma = _post(url, b'{"id": "x", "event": "ping",}')
    no_date = _post(url, b'{"id": "x", "event": "alpaclass.x", "data": {}}')
    pinged = _post(url, ping)
    rotated = _post(url, event, secret="old-secret")

    assert (wrong_key.status_code, unsigned.status_code) == (401, 401)
    assert trailing_comma.status_code == 400
    assert "not valid JSON" in trailing_comma.json()["error"]
    assert no_date.status_code == 400
    assert "sentDate" in no_date.json()["error"]
    assert pinged.status_code == 200
    assert rotated.status_code == 200
    assert [value["id"] for _, value in _records(kafka_bootstrap, topic, 1)] == [
        json.loads(event)["id"]
    ]
