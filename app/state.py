"""The engagement state of one (team, student, course), and how an event folds in.

Delivery is at-least-once and unordered, so every update is written to be
idempotent: ``first_seen_at`` and ``last_seen_at`` are a min and a max, and
the activity counter remembers the event ids it counted *in the same record*,
so one changelog write carries both the count and what guards it. A replay
after a crash therefore changes nothing.

The ids are remembered for ``DEDUP_HORIZON_US`` of event time behind the key's
``last_seen_at``; an id older than that is forgotten, and a redelivery of an
event that old would be counted again. Eduzz's delivery history is what makes
old redeliveries possible, and 45 days covers the 35 days of daily windows the
analytics need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

STATE_VERSION = 1
DAY_US = 86_400_000_000
DEDUP_HORIZON_US = 45 * DAY_US
KEY_SEPARATOR = "\x1f"  # ids never hold control characters (see events.Id)


def activity_key(team_id: str, student_id: str, course_id: str) -> bytes:
    return KEY_SEPARATOR.join((team_id, student_id, course_id)).encode()


@dataclass(slots=True)
class CourseActivity:
    """State of one (team, student, course); times are epoch microseconds, UTC."""

    team_id: str
    student_id: str
    course_id: str
    partition: int
    first_seen_at: int | None = None
    last_seen_at: int | None = None
    activity_events: int = 0
    # event id -> its sentDate, for the ids counted within the horizon
    counted: dict[str, int] = field(default_factory=dict)

    def apply_activity(self, event_id: str, sent_at: int) -> bool:
        """Fold one activity event in; False when it was already counted."""
        if event_id in self.counted:
            return False

        self.counted[event_id] = sent_at
        self.activity_events += 1
        if self.first_seen_at is None or sent_at < self.first_seen_at:
            self.first_seen_at = sent_at
        if self.last_seen_at is None or sent_at > self.last_seen_at:
            self.last_seen_at = sent_at
            self._forget_old_ids()
        return True

    def _forget_old_ids(self) -> None:
        assert self.last_seen_at is not None
        horizon = self.last_seen_at - DEDUP_HORIZON_US
        if min(self.counted.values()) < horizon:
            self.counted = {i: t for i, t in self.counted.items() if t >= horizon}

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "team": self.team_id,
                "student": self.student_id,
                "course": self.course_id,
                "p": self.partition,
                "first": self.first_seen_at,
                "last": self.last_seen_at,
                "n": self.activity_events,
                "ids": self.counted,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> CourseActivity:
        record = orjson.loads(raw)
        version = record.get("v")
        if version != STATE_VERSION:
            raise ValueError(f"unknown state record version {version!r}")
        return cls(
            team_id=record["team"],
            student_id=record["student"],
            course_id=record["course"],
            partition=record["p"],
            first_seen_at=record["first"],
            last_seen_at=record["last"],
            activity_events=record["n"],
            counted=record["ids"],
        )
