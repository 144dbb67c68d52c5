"""What the state should be, computed straight from the input files.

Written apart from the product's code on purpose: it reads the bodies with the
standard library and knows the event names from the domain page, so a bug in
engagement.events or app.state cannot hide in both places at once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

# Every spelling of the thirteen student events, to today's name.
CANONICAL = {
    "student_created": "student_created",
    "student_course_last_seen": "student_course_last_seen",
    "student_course_last_seen_at": "student_course_last_seen",
    "student_access_course": "student_course_last_seen",
    "student_lesson_last_seen": "student_lesson_last_seen",
    "student_lesson_last_seen_at": "student_lesson_last_seen",
    "student_lesson_finished": "student_lesson_finished",
    "student_marked_lesson_as_watched": "student_lesson_finished",
    "student_marked_lesson_as_read": "student_lesson_finished",
    "student_lesson_unfinished": "student_lesson_unfinished",
    "student_module_finished": "student_module_finished",
    "student_finished_module": "student_module_finished",
    "student_module_unfinished": "student_module_unfinished",
    "student_course_finished": "student_course_finished",
    "student_completed_course": "student_course_finished",
    "student_course_unfinished": "student_course_unfinished",
    "student_lesson_marked_as_favorite": "student_lesson_marked_as_favorite",
    "student_marked_lesson_as_favorite": "student_lesson_marked_as_favorite",
    "student_lesson_unmarked_as_favorite": "student_lesson_unmarked_as_favorite",
    "student_comment_created": "student_comment_created",
    "student_commented_on_lesson": "student_comment_created",
    "student_certificate_accessed": "student_certificate_accessed",
    "student_access_certificate": "student_certificate_accessed",
}
ACTIVITY_NAMES = {
    f"alpaclass.{spelling}"
    for spelling, name in CANONICAL.items()
    if name != "student_created"
}
VISITS = {"student_course_last_seen", "student_lesson_last_seen"}


def load_documents(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(text)]


def unique_events(documents: list[dict]) -> list[dict]:
    """First body of each event id, in delivery order (a redelivery changes nothing)."""
    seen: set[str] = set()
    unique = []
    for document in documents:
        event_id = str(document["id"])
        if event_id not in seen:
            seen.add(event_id)
            unique.append(document)
    return unique


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class Event:
    """One unique AlpaClass student event, read plainly."""

    order: tuple[datetime, str]  # what "latest" means: (sentDate, id)
    name: str
    team: str
    student: str
    course: str | None
    lesson: str | None
    module: str | None
    names: dict[str, str | None]
    created: datetime | None


def student_events(documents: list[dict]) -> list[Event]:
    events = []
    for document in unique_events(documents):
        name = document["event"]
        if not name.startswith("alpaclass.") or name[10:] not in CANONICAL:
            continue
        data = document["data"]

        def ref_id(ref: str, data: dict = data) -> str | None:
            return str(data[ref]["id"]) if data.get(ref) else None

        def ref_field(ref: str, key: str, data: dict = data) -> str | None:
            return (data.get(ref) or {}).get(key)

        at = instant(document["sentDate"])
        created = ref_field("student", "createdAt")
        events.append(
            Event(
                order=(at, str(document["id"])),
                name=CANONICAL[name[10:]],
                team=ref_id("team") or "",
                student=str(data["student"]["id"]),
                course=ref_id("course"),
                lesson=ref_id("lesson"),
                module=ref_id("module"),
                names={
                    "student_name": ref_field("student", "name"),
                    "student_email": ref_field("student", "email"),
                    "course_name": ref_field("course", "name"),
                    "team_name": ref_field("team", "name"),
                },
                created=instant(created) if created else at,
            )
        )
    return events


def _latest(events: list[Event]) -> Event:
    return max(events, key=lambda e: e.order)


def _latest_value(events: list[Event], field: str) -> str | None:
    carrying = [e for e in events if e.names[field] is not None]
    return _latest(carrying).names[field] if carrying else None


def _toggled_on(events: list[Event], on: str, off: str, ref: str) -> int:
    by_ref: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.name in (on, off):
            by_ref[getattr(event, ref)].append(event)
    return sum(1 for group in by_ref.values() if _latest(group).name == on)


@dataclass
class ExpectedActivity:
    first_seen_at: datetime
    last_seen_at: datetime
    activity_events: int
    lessons_finished: int
    modules_finished: int
    course_finished: bool
    favorites: int
    comments: int
    certificate_accessed: bool
    last_event: str
    student_name: str | None
    student_email: str | None
    course_name: str | None
    team_name: str | None


def expected_activity(documents: list[dict]) -> dict[tuple, ExpectedActivity]:
    by_key: dict[tuple, list[Event]] = defaultdict(list)
    for event in student_events(documents):
        if event.name != "student_created":
            by_key[(event.team, event.student, event.course)].append(event)

    result = {}
    for key, events in by_key.items():
        names = [e.name for e in events]
        course_toggles = [
            e
            for e in events
            if e.name in ("student_course_finished", "student_course_unfinished")
        ]
        result[key] = ExpectedActivity(
            first_seen_at=min(e.order[0] for e in events),
            last_seen_at=max(e.order[0] for e in events),
            activity_events=len(events),
            lessons_finished=_toggled_on(
                events, "student_lesson_finished", "student_lesson_unfinished", "lesson"
            ),
            modules_finished=_toggled_on(
                events, "student_module_finished", "student_module_unfinished", "module"
            ),
            course_finished=bool(course_toggles)
            and _latest(course_toggles).name == "student_course_finished",
            favorites=_toggled_on(
                events,
                "student_lesson_marked_as_favorite",
                "student_lesson_unmarked_as_favorite",
                "lesson",
            ),
            comments=names.count("student_comment_created"),
            certificate_accessed="student_certificate_accessed" in names,
            last_event=_latest(events).name,
            student_name=_latest_value(events, "student_name"),
            student_email=_latest_value(events, "student_email"),
            course_name=_latest_value(events, "course_name"),
            team_name=_latest_value(events, "team_name"),
        )
    return result


@dataclass
class ExpectedStudent:
    student_name: str | None
    student_email: str | None
    created_at: datetime | None


def expected_students(documents: list[dict]) -> dict[tuple, ExpectedStudent]:
    by_key: dict[tuple, list[Event]] = defaultdict(list)
    for event in student_events(documents):
        by_key[(event.team, event.student)].append(event)

    result = {}
    for key, events in by_key.items():
        registrations = [e for e in events if e.name == "student_created"]
        result[key] = ExpectedStudent(
            student_name=_latest_value(events, "student_name"),
            student_email=_latest_value(events, "student_email"),
            created_at=_latest(registrations).created if registrations else None,
        )
    return result


@dataclass
class ExpectedDay:
    activity_events: int = 0
    visits: int = 0
    lesson_finishes: int = 0
    comments: int = 0


def expected_daily(documents: list[dict]) -> dict[tuple, ExpectedDay]:
    result: dict[tuple, ExpectedDay] = defaultdict(ExpectedDay)
    for event in student_events(documents):
        if event.name == "student_created":
            continue
        day: date = event.order[0].date()
        counts = result[(event.team, event.student, event.course, day)]
        counts.activity_events += 1
        counts.visits += event.name in VISITS
        counts.lesson_finishes += event.name == "student_lesson_finished"
        counts.comments += event.name == "student_comment_created"
    return dict(result)
