"""Arrow schemas of the tables the worker snapshots."""

from __future__ import annotations

import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")


def _ids(*names: str) -> list[pa.Field]:
    return [pa.field(name, pa.string(), nullable=False) for name in names]


STUDENT_COURSE_ACTIVITY = pa.schema(
    [
        *_ids("team_id", "student_id", "course_id"),
        pa.field("first_seen_at", UTC_MICROS),
        pa.field("last_seen_at", UTC_MICROS),
        pa.field("activity_events", pa.int64(), nullable=False),
        pa.field("lessons_finished", pa.int64(), nullable=False),
        pa.field("modules_finished", pa.int64(), nullable=False),
        pa.field("course_finished", pa.bool_(), nullable=False),
        pa.field("favorites", pa.int64(), nullable=False),
        pa.field("comments", pa.int64(), nullable=False),
        pa.field("certificate_accessed", pa.bool_(), nullable=False),
        pa.field("last_event", pa.string()),
        pa.field("student_name", pa.string()),
        pa.field("student_email", pa.string()),
        pa.field("course_name", pa.string()),
        pa.field("team_name", pa.string()),
        pa.field("snapshot_at", UTC_MICROS, nullable=False),
    ]
)

STUDENTS = pa.schema(
    [
        *_ids("team_id", "student_id"),
        pa.field("student_name", pa.string()),
        pa.field("student_email", pa.string()),
        pa.field("created_at", UTC_MICROS),
        pa.field("snapshot_at", UTC_MICROS, nullable=False),
    ]
)

ENGAGEMENT_DAILY = pa.schema(
    [
        *_ids("team_id", "student_id", "course_id"),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("activity_events", pa.int64(), nullable=False),
        pa.field("visits", pa.int64(), nullable=False),
        pa.field("lesson_finishes", pa.int64(), nullable=False),
        pa.field("comments", pa.int64(), nullable=False),
        pa.field("snapshot_at", UTC_MICROS, nullable=False),
    ]
)

# A day the worker let go, as it was then; released_at is the sentDate of the
# event that moved the key's horizon past it.
ENGAGEMENT_DAILY_RELEASED = pa.schema(
    [
        *ENGAGEMENT_DAILY,
        pa.field("released_at", UTC_MICROS, nullable=False),
    ]
)

# One row per body the receiver kept on the rejected topic (app.rejected).
REJECTED_EVENTS = pa.schema(
    [
        pa.field("received_at", UTC_MICROS),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("kind", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("event_name", pa.string()),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
    ]
)

# One row per inactivity alert raised (app.alerts); the same alert_id can be
# written more than once (after a crash, by two workers): the view keeps one.
INACTIVITY_ALERTS = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        *_ids("team_id", "student_id"),
        pa.field("course_id", pa.string()),
        pa.field("threshold_days", pa.float64()),
        pa.field("last_seen_at", UTC_MICROS),
        pa.field("days_inactive", pa.float64()),
        pa.field("detected_at", UTC_MICROS, nullable=False),
        pa.field("catch_up", pa.bool_(), nullable=False),
        pa.field("active_again_at", UTC_MICROS),
        pa.field("student_name", pa.string()),
        pa.field("student_email", pa.string()),
    ]
)

# One row per attempt at delivering an alert to a school (app.alert_delivery).
ALERT_DELIVERIES = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("team_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("attempted_at", UTC_MICROS, nullable=False),
        pa.field("status", pa.int32()),
        pa.field("error", pa.string()),
        pa.field("delivered", pa.bool_(), nullable=False),
    ]
)

SNAPSHOT_TABLES: dict[str, pa.Schema] = {
    "student_course_activity": STUDENT_COURSE_ACTIVITY,
    "students": STUDENTS,
    "engagement_daily": ENGAGEMENT_DAILY,
    "engagement_daily_released": ENGAGEMENT_DAILY_RELEASED,
    # Every row of student_course_activity a worker's snapshot wrote.
    "student_course_activity_history": STUDENT_COURSE_ACTIVITY,
    "rejected_events": REJECTED_EVENTS,
    "inactivity_alerts": INACTIVITY_ALERTS,
    "alert_deliveries": ALERT_DELIVERIES,
}
