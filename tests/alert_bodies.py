"""Webhook bodies for the alert tests, placed in time around the thresholds."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

_ids = itertools.count(1)


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _student(student: str) -> dict:
    return {
        "id": student,
        "name": f"Name {student}",
        "email": f"{student}@example.org",
    }


def course_event(
    name: str, team: str, student: str, course: str, sent: datetime
) -> dict:
    """An AlpaClass course event (``name`` without the product prefix)."""
    return {
        "id": f"alert-test-{next(_ids):08d}",
        "event": f"alpaclass.{name}",
        "sentDate": _iso(sent),
        "data": {
            "student": _student(student),
            "course": {"id": course, "name": f"Course {course}"},
            "team": {"id": team, "name": f"School {team}"},
        },
    }


def visit(team: str, student: str, course: str, sent: datetime) -> dict:
    return course_event("student_course_last_seen", team, student, course, sent)


def registration(team: str, student: str, created: datetime) -> dict:
    return {
        "id": f"alert-test-{next(_ids):08d}",
        "event": "alpaclass.student_created",
        "sentDate": _iso(created),
        "data": {
            "student": {**_student(student), "createdAt": _iso(created)},
            "team": {"id": team, "name": f"School {team}"},
        },
    }


def days_ago(days: float, now: datetime | None = None) -> datetime:
    """That long before now, to the millisecond (a sentDate's precision)."""
    moment = (now or datetime.now(UTC)) - timedelta(days=days)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
