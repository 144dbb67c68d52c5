"""The receiver as deployed: a real process, real HTTP, the real broker.

One receiver and one worker serve the module's tests, on fresh topics; the
tests tell their deliveries apart by event id or by the sha256 of the body.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from engagement.kafka import wait_for_lag_zero
from engagement.processes import Service, free_port, request_snapshot, start_service
from producers.signature import sign

pytestmark = pytest.mark.kafka

SHARED_SECRET = "shared-secret"
# The fixtures' school binds its own secrets, and rotates them: both are valid.
FIXTURE_TEAM = "d842102e97b741f00bfe4510347c1fee"
SCHOOL_SECRET, SCHOOL_OLD_SECRET = "school-new", "school-old"
OTHER_TEAM, OTHER_SECRET = "another-school-team", "another-school"
SECRETS_TOML = f"""
[teams.{FIXTURE_TEAM}]
secrets = ["{SCHOOL_SECRET}", "{SCHOOL_OLD_SECRET}"]

[teams.{OTHER_TEAM}]
secrets = ["{OTHER_SECRET}"]
"""


@dataclass
class Edge:
    url: str
    base: str
    topic: str
    rejected_topic: str
    bootstrap: str
    worker: Service
    worker_url: str
    app_id: str
    db_path: Path
    logs: tuple[Path, ...]

    def post(self, body: bytes, secret: str = SCHOOL_SECRET) -> httpx.Response:
        return httpx.post(
            self.url, content=body, headers={"x-signature": sign(body, secret)}
        )

    def rejected_events(self) -> list[dict]:
        """The rows of DuckDB's rejected_events, once the worker read them all."""
        asyncio.run(
            wait_for_lag_zero(
                self.bootstrap,
                self.app_id,
                self.rejected_topic,
                timeout=60,
                alive=self.worker.check_alive,
            )
        )
        request_snapshot(self.worker_url)
        with duckdb.connect(str(self.db_path), read_only=True) as connection:
            cursor = connection.execute("SELECT * FROM rejected_events")
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/metrics").text


@pytest.fixture(scope="module")
def edge(kafka_bootstrap, tmp_path_factory) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("edge")
    (root / "secrets.toml").write_text(SECRETS_TOML)
    name = f"test-edge-{secrets.token_hex(4)}"
    topic = f"{name}.alpaclass.webhooks"
    receiver_port, worker_port = free_port(), free_port()
    env = {
        "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ENGAGEMENT_KAFKA_TOPIC": topic,
        "ENGAGEMENT_WEBHOOK_SECRETS": SHARED_SECRET,
        "ENGAGEMENT_WEBHOOK_SECRETS_FILE": str(root / "secrets.toml"),
        "ENGAGEMENT_RECEIVER_PORT": str(receiver_port),
        "ENGAGEMENT_RECEIVER_SPOOL_PATH": str(root / "spool.sqlite3"),
        "ENGAGEMENT_WORKER_APP_ID": f"{name}-worker",
        "ENGAGEMENT_WORKER_DATA_DIR": str(root / "worker"),
        "ENGAGEMENT_WORKER_WEB_PORT": str(worker_port),
        "ENGAGEMENT_DUCKDB_PATH": str(root / "engagement.duckdb"),
        "ENGAGEMENT_DUCKDB_SNAPSHOT_INTERVAL_SECONDS": "3600",
    }
    base = f"http://127.0.0.1:{receiver_port}"
    receiver = start_service(
        "receiver", "receiver", env, f"{base}/health", root / "receiver.log"
    )
    worker_url = f"http://127.0.0.1:{worker_port}"
    worker = start_service(
        "worker", "worker", env, f"{worker_url}/health", root / "worker.log"
    )
    try:
        receiver.wait_healthy(timeout=60)
        worker.wait_healthy(timeout=120)
        yield Edge(
            url=f"{base}/webhooks/eduzz",
            base=base,
            topic=topic,
            rejected_topic=f"{topic}.rejected",
            bootstrap=kafka_bootstrap,
            worker=worker,
            worker_url=worker_url,
            app_id=f"{name}-worker",
            db_path=root / "engagement.duckdb",
            logs=(root / "receiver.log", root / "worker.log"),
        )
    finally:
        receiver.stop()
        worker.stop()


def raw_records(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic``; waits a little past ``expected``, so extras show."""

    async def consume() -> list[tuple[bytes, bytes]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        found: list[tuple[bytes, bytes]] = []
        try:
            for _ in range(6):
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    found += [(m.key, m.value) for m in messages]
                if len(found) > expected:
                    break
        finally:
            await consumer.stop()
        return found

    return asyncio.run(consume())


def records(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, dict]]:
    return [
        (key, json.loads(value))
        for key, value in raw_records(bootstrap, topic, expected)
    ]


def _fixture(fixtures_dir: Path, name: str) -> dict:
    return json.loads((fixtures_dir / "alpaclass" / f"{name}.json").read_bytes())


def _with_id(document: dict, event_id: str) -> bytes:
    return json.dumps({**document, "id": event_id}).encode()


def test_signed_events_reach_the_topic_keyed_without_personal_data(edge, fixtures_dir):
    paths = sorted((fixtures_dir / "alpaclass").glob("student_*.json"))
    sent = [json.loads(path.read_bytes()) for path in paths]
    for document in sent:
        assert edge.post(json.dumps(document).encode()).status_code == 200

    by_id = {
        value["id"]: (key, value)
        for key, value in records(edge.bootstrap, edge.topic, len(paths))
    }
    assert sorted(by_id) == sorted(document["id"] for document in sent)
    for document in sent:
        key, value = by_id[document["id"]]
        student = document["data"]["student"]
        assert key == f"{document['data']['team']['id']}:{student['id']}".encode()
        assert "document" not in value["data"]["student"]
        assert "phone" not in value["data"]["student"]
        for field in ("document", "phone"):
            student.pop(field, None)
        assert value == document


def test_signatures_scoped_to_schools_with_rotation(edge, fixtures_dir):
    document = _fixture(fixtures_dir, "student_course_last_seen")
    body = _with_id(document, "signature-cases-ok")
    foreign = json.dumps(
        {
            **document,
            "id": "signature-cases-other-team",
            "data": {**document["data"], "team": {"id": OTHER_TEAM, "name": "B"}},
        }
    ).encode()
    unbound = json.dumps(
        {
            **document,
            "id": "signature-cases-unbound-team",
            "data": {**document["data"], "team": {"id": "no-secrets-of-its-own"}},
        }
    ).encode()
    good = sign(body, SCHOOL_SECRET)

    def answer(raw: bytes, signature: str | None) -> int:
        headers = {} if signature is None else {"x-signature": signature}
        return httpx.post(edge.url, content=raw, headers=headers).status_code

    before = edge.metrics()
    assert answer(body, good) == 200
    assert answer(body, good.upper()) == 200  # hex in either case
    assert answer(body, sign(body, SCHOOL_OLD_SECRET)) == 200  # rotation
    assert answer(body, sign(body, "wrong-key")) == 401
    assert answer(body, sign(body, OTHER_SECRET)) == 401  # another school's key
    assert answer(body, sign(body, SHARED_SECRET)) == 401  # the team binds its own
    assert answer(body, good[:-4]) == 401  # truncated
    assert answer(body, "") == 401
    assert answer(body, None) == 401
    assert answer(body.replace(b"Escola", b"Escolx"), good) == 401  # changed after
    assert answer(foreign, sign(foreign, OTHER_SECRET)) == 200
    assert answer(foreign, sign(foreign, SCHOOL_SECRET)) == 401
    assert answer(unbound, sign(unbound, SHARED_SECRET)) == 200
    assert answer(unbound, sign(unbound, SCHOOL_SECRET)) == 401

    ids = [value["id"] for _, value in records(edge.bootstrap, edge.topic, 100)]
    assert ids.count("signature-cases-ok") == 3
    assert ids.count("signature-cases-other-team") == 1
    assert ids.count("signature-cases-unbound-team") == 1
    # Refused deliveries are counted, and none was kept as rejected.
    assert (
        _counter(edge.metrics(), "signature_failures_total")
        - _counter(before, "signature_failures_total")
        == 9
    )
    assert not [
        row
        for row in edge.rejected_events()
        if (row["event_id"] or "").startswith("signature-cases")
    ]


def _counter(metrics: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(f"engagement_receiver_{name}")
    )


def test_bad_bodies_get_their_status_and_are_kept_with_the_reason(edge, fixtures_dir):
    document = _fixture(fixtures_dir, "student_lesson_finished")
    personal = {"document": "000.000.000-00", "phone": "11900000000"}
    document["data"]["student"].update(personal)
    future = datetime.now(UTC) + timedelta(hours=1)

    def variant(tag: str, **changes: object) -> bytes:
        changed = {**document, "id": f"bad-{tag}", **changes}
        return json.dumps({k: v for k, v in changed.items() if v != "DROP"}).encode()

    without_lesson = {k: v for k, v in document["data"].items() if k != "lesson"}
    corpus = {
        # name: (body, the kind of problem; None when refused unread)
        "doc sample with trailing commas": (
            b'{\n  "id": "x",\n  "event": "alpaclass.student_created",\n}',
            "not_json",
        ),
        "empty": (b"", "not_json"),
        "array": (b"[]", "not_object"),
        "events in an array": (
            json.dumps([{**document, "id": "bad-in-array"}]).encode(),
            "not_object",
        ),
        "string": (b'"alpaclass.student_created"', "not_object"),
        "missing id": (variant("no-id", id="DROP"), "not_envelope"),
        "mistyped id": (variant("float-id", id=1.5), "not_envelope"),
        "missing data": (variant("no-data", data="DROP"), "not_envelope"),
        "mistyped data": (variant("list-data", data=[1]), "not_envelope"),
        "no lesson": (variant("no-lesson", data=without_lesson), "missing_key_fields"),
        "invalid UTF-8": (
            variant("bad-utf8").replace(b"Escola", b"Escol\xff"),
            "not_utf8",
        ),
        "odd date": (variant("odd-date", sentDate="20/11/2026 14:30"), "not_envelope"),
        "no offset": (
            variant("naive-date", sentDate="2026-11-20T14:30:05"),
            "not_envelope",
        ),
        "future date": (
            variant("future", sentDate=future.isoformat().replace("+00:00", "Z")),
            "future_sent_date",
        ),
    }
    answers = {name: edge.post(body) for name, (body, _) in corpus.items()}
    too_large = edge.post(b'{"id": "big", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    compressed = httpx.post(
        edge.url,
        content=gzip.compress(corpus["no lesson"][0]),
        headers={
            "content-encoding": "gzip",
            "x-signature": sign(corpus["no lesson"][0], SCHOOL_SECRET),
        },
    )
    assert compressed.status_code == 415  # the signature covers the bytes sent

    for name, response in answers.items():
        assert response.status_code == 400, name
        assert response.json()["error"], name
    assert too_large.status_code == 413

    rows = {row["sha256"]: row for row in edge.rejected_events()}
    for name, (body, kind) in corpus.items():
        row = rows.get(hashlib.sha256(body).hexdigest())
        assert row is not None, f"{name} was not kept"
        assert row["reason"] == answers[name].json()["error"], name
        assert row["kind"] == kind, name
        assert row["size_bytes"] == len(body), name
        assert row["received_at"] is not None, name
    assert rows[hashlib.sha256(corpus["no lesson"][0]).hexdigest()]["event_id"] == (
        "bad-no-lesson"
    )
    assert (
        rows[hashlib.sha256(corpus["no lesson"][0]).hexdigest()]["event_name"]
        == (document["event"])
    )
    assert not [row for row in rows.values() if row["event_id"] == "big"]

    # What the rejected topic keeps of a body that parses has no personal data.
    kept = raw_records(edge.bootstrap, edge.rejected_topic, len(rows))
    assert len(kept) >= len(corpus)
    parsed = 0
    for _, value in kept:
        try:
            json.loads(value)
        except ValueError:
            continue  # kept as it came: it does not parse
        parsed += 1
        assert not [v for v in personal.values() if v.encode() in value]
    assert parsed >= 8


def test_pings_and_other_products_are_valid_deliveries(edge, fixtures_dir):
    ping = (fixtures_dir / "alpaclass" / "ping.json").read_bytes()
    other = _with_id(
        {**_fixture(fixtures_dir, "student_created"), "event": "nutror.lesson_watched"},
        "other-product",
    )
    unknown = _with_id(
        {**_fixture(fixtures_dir, "student_created"), "event": "alpaclass.new_thing"},
        "unknown-alpaclass",
    )
    assert edge.post(ping).status_code == 200
    assert edge.post(other).status_code == 200
    assert edge.post(unknown).status_code == 200
    ids = [value["id"] for _, value in records(edge.bootstrap, edge.topic, 100)]
    assert "other-product" in ids and "unknown-alpaclass" in ids
    assert json.loads(ping)["id"] not in ids


def test_logs_hold_no_personal_data(edge, fixtures_dir):
    """Last in the module: every test above has written to these logs."""
    personal = {"000.000.000-00", "11900000000"}
    for path in (fixtures_dir / "alpaclass").glob("*.json"):
        student = json.loads(path.read_bytes())["data"].get("student") or {}
        personal |= {
            student[f] for f in ("name", "email", "document", "phone") if f in student
        }
    assert {"Lucas Simulado", "lucas.simulado1@example.org"} <= personal
    for log in edge.logs:
        text = log.read_text(errors="replace")
        assert text, f"{log.name} is empty"
        assert not [value for value in personal if value in text], log.name
