"""The receiver's disk spool: deliveries Kafka has not acknowledged in time.

A SQLite database (WAL, ``synchronous=FULL``): an append is on disk when it
returns, so a body can be answered 2xx as soon as it is spooled, and neither a
restart nor ``kill -9`` loses it. Records leave in the order they came, and
only once Kafka has acknowledged them; a crash between the two sends a record
twice, which the worker recognises as a redelivery.

SQLite calls block, so the receiver runs them on one thread of their own.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB NOT NULL
)
"""


@dataclass(frozen=True)
class SpooledRecord:
    seq: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def _encode_headers(headers: list[tuple[str, bytes]]) -> bytes:
    return orjson.dumps([[name, value.decode()] for name, value in headers])


def _decode_headers(raw: bytes) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in orjson.loads(raw)]


class Spool:
    """A durable FIFO of Kafka records, bounded in bytes."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(length(value)), 0) FROM spooled"
        ).fetchone()
        self.depth: int = count
        self.bytes: int = size

    def has_room(self, size: int) -> bool:
        return self.bytes + size <= self.max_bytes

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        """Spool one record, durably; False (nothing written) when full."""
        with self._lock:
            if not self.has_room(len(value)):
                return False
            self._db.execute(
                "INSERT INTO spooled (topic, key, value, headers) VALUES (?, ?, ?, ?)",
                (topic, key, value, _encode_headers(headers)),
            )
            self.depth += 1
            self.bytes += len(value)
            return True

    def oldest(self, limit: int) -> list[SpooledRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, key, value, headers FROM spooled "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            SpooledRecord(seq, topic, key, value, _decode_headers(headers))
            for seq, topic, key, value, headers in rows
        ]

    def remove(self, records: list[SpooledRecord]) -> None:
        """Forget records Kafka has acknowledged."""
        if not records:
            return
        with self._lock:
            removed = self._db.execute(
                "DELETE FROM spooled WHERE seq <= ?", (records[-1].seq,)
            ).rowcount
            self.depth -= removed
            self.bytes -= sum(len(record.value) for record in records)

    def close(self) -> None:
        with self._lock:
            self._db.close()
