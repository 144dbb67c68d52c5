"""Arrow schemas of the tables the worker snapshots."""

from __future__ import annotations

import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")

STUDENT_COURSE_ACTIVITY = pa.schema(
    [
        pa.field("team_id", pa.string(), nullable=False),
        pa.field("student_id", pa.string(), nullable=False),
        pa.field("course_id", pa.string(), nullable=False),
        pa.field("first_seen_at", UTC_MICROS),
        pa.field("last_seen_at", UTC_MICROS),
        pa.field("activity_events", pa.int64(), nullable=False),
        pa.field("snapshot_at", UTC_MICROS, nullable=False),
    ]
)

SNAPSHOT_TABLES: dict[str, pa.Schema] = {
    "student_course_activity": STUDENT_COURSE_ACTIVITY,
}
