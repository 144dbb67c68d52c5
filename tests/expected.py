"""What the state should be, computed straight from the input files.

Written apart from the product's code on purpose: it reads the bodies with the
standard library and knows the event names from the domain page, so a bug in
engagement.events or app.state cannot hide in both places at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# Every AlpaClass student event but student_created, in every spelling.
ACTIVITY_NAMES = {
    f"alpaclass.{name}"
    for name in (
        "student_course_last_seen",
        "student_course_last_seen_at",
        "student_access_course",
        "student_lesson_last_seen",
        "student_lesson_last_seen_at",
        "student_lesson_finished",
        "student_marked_lesson_as_watched",
        "student_marked_lesson_as_read",
        "student_lesson_unfinished",
        "student_module_finished",
        "student_finished_module",
        "student_module_unfinished",
        "student_course_finished",
        "student_completed_course",
        "student_course_unfinished",
        "student_lesson_marked_as_favorite",
        "student_marked_lesson_as_favorite",
        "student_lesson_unmarked_as_favorite",
        "student_comment_created",
        "student_commented_on_lesson",
        "student_certificate_accessed",
        "student_access_certificate",
    )
}


@dataclass
class ExpectedActivity:
    first_seen_at: datetime
    last_seen_at: datetime
    activity_events: int


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


def expected_activity(
    documents: list[dict],
) -> dict[tuple[str, str, str], ExpectedActivity]:
    result: dict[tuple[str, str, str], ExpectedActivity] = {}
    for document in unique_events(documents):
        if document["event"] not in ACTIVITY_NAMES:
            continue
        data = document["data"]
        team = str(data["team"]["id"]) if data.get("team") else ""
        key = (team, str(data["student"]["id"]), str(data["course"]["id"]))
        at = instant(document["sentDate"])
        current = result.get(key)
        if current is None:
            result[key] = ExpectedActivity(at, at, 1)
        else:
            current.first_seen_at = min(current.first_seen_at, at)
            current.last_seen_at = max(current.last_seen_at, at)
            current.activity_events += 1
    return result
