"""The baseline: the worker's folding code on a plain aiokafka consumer.

Same decoding, same state, same batching per partition as the Faust agent, and
the same persistence: RocksDB (rocksdict) locally, every write also produced
to a changelog topic, and offsets committed only once the changelog is
flushed — what Faust does, written by hand.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rocksdict import Rdict

from app.tracking import Tracker
from engagement.kafka import ensure_topic

PARTITIONS = 8


class ChangelogStore(MutableMapping[bytes, bytes]):
    """A RocksDB table whose every write also goes to a changelog partition."""

    def __init__(self, path: Path, producer: AIOKafkaProducer, topic: str) -> None:
        self.db = Rdict(str(path))
        self.producer = producer
        self.topic = topic
        self.partition = 0
        self.pending: list[tuple[bytes, bytes, int]] = []

    def __getitem__(self, key: bytes) -> bytes:
        return self.db[key]

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self.db.get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.db[key] = value
        self.pending.append((key, value, self.partition))

    def __delitem__(self, key: bytes) -> None:
        del self.db[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.db.keys())

    def __len__(self) -> int:
        return sum(1 for _ in self.db)

    async def publish(self) -> None:
        for key, value, partition in self.pending:
            await self.producer.send(self.topic, value, key=key, partition=partition)
        self.pending.clear()


async def consume(bootstrap: str, topic: str, group: str, data_dir: Path) -> None:
    """Fold the whole topic, as it is now, into persistent state; then return."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for table in ("courses", "students"):
        await ensure_topic(bootstrap, f"{group}-{table}-changelog", PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await producer.start()
    await consumer.start()
    courses = ChangelogStore(
        data_dir / "courses", producer, f"{group}-courses-changelog"
    )
    students = ChangelogStore(
        data_dir / "students", producer, f"{group}-students-changelog"
    )
    tracker = Tracker(courses, students)
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batch.items():
                courses.partition = students.partition = tp.partition
                tracker.fold(tp.partition, (m.value for m in messages))
            await courses.publish()
            await students.publish()
            await producer.flush()
            await consumer.commit()
            positions = {tp: await consumer.position(tp) for tp in ends}
            if all(positions[tp] >= end for tp, end in ends.items()):
                return
    finally:
        await consumer.stop()
        await producer.stop()
        courses.db.close()
        students.db.close()
