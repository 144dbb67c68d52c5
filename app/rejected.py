"""The rejected topic, as rows of DuckDB's ``rejected_events``.

The receiver keeps each signed body it could not use on the rejected topic,
with its reason in the record's headers. The worker writes the headers of
each batch it reads there to one immutable Parquet file named after the
batch's partition and offsets (never the bytes, which stay on the topic for
its retention). A batch read again after a crash writes the same rows again,
so the view keeps one row per (partition, offset).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from analytics.schema import REJECTED_EVENTS
from analytics.snapshots import write_file

TABLE = "rejected_events"


def batch_file_name(tp: TP, records: Sequence[ConsumerRecord]) -> str:
    """The name of the file a batch handler writes for ``records`` of ``tp``:
    the same batch read again after a crash gets the same name."""
    first, last = records[0].offset, records[-1].offset
    return f"partition-{tp.partition:04d}-{first:020d}-{last:020d}"


def _header(headers: dict[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode(errors="replace")


def rejected_rows(records: Sequence[ConsumerRecord]) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in REJECTED_EVENTS.names}
    for record in records:
        headers = dict(record.headers or ())
        received = _header(headers, "received_at")
        size = _header(headers, "size_bytes")
        columns["received_at"].append(
            datetime.fromisoformat(received) if received else None
        )
        columns["reason"].append(_header(headers, "reason") or "unknown")
        columns["kind"].append(_header(headers, "kind"))
        columns["event_id"].append(_header(headers, "event_id"))
        columns["event_name"].append(_header(headers, "event_name"))
        columns["size_bytes"].append(int(size) if size else len(record.value or b""))
        columns["sha256"].append(_header(headers, "sha256"))
        columns["partition"].append(record.partition)
        columns["offset"].append(record.offset)
    return pa.Table.from_pydict(columns, schema=REJECTED_EVENTS)


class RejectedRecorder:
    """The batch handler of the rejected topic (see app.batching)."""

    def __init__(self, snapshot_dir: Path) -> None:
        self.directory = snapshot_dir / TABLE

    async def fold(self, tp: TP, records: Sequence[ConsumerRecord]) -> Awaitable[Any]:
        path = self.directory / f"{batch_file_name(tp, records)}.parquet"
        await asyncio.to_thread(write_file, path, rejected_rows(records), True)
        written = asyncio.get_running_loop().create_future()
        written.set_result(None)
        return written

    def settle(self, tp: TP, durable: Any) -> None:
        """Nothing left to do: the file was on disk before the fold returned."""
