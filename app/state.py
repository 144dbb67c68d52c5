"""Engagement state, and how an event folds into it.

Delivery is at-least-once and unordered, so every rule is idempotent:

- ``first_seen_at`` / ``last_seen_at`` are a min and a max;
- toggles (lesson, module and course finished, favourites) and the "latest"
  values (names, e-mail, last event) are last-writer-wins registers ordered by
  the pair (``sentDate``, event id), so the same events give the same state in
  any order, and replaying one changes nothing;
- counters and daily buckets count an event id once: the record keeps the ids
  it counted *in the same record* as the counters, so one changelog write
  carries both, and a replay after a crash is recognised as a redelivery.

Counted ids and daily buckets are kept for ``HORIZON_DAYS`` of event time
behind the key's latest activity. A redelivery older than that would be
counted again: Eduzz's delivery history is what makes old redeliveries
possible, and 45 days covers the 35 days of windows the analytics use.

A daily bucket let go by the horizon is not lost: it moves to ``released``,
stamped with the sentDate of the event that released it (the same events
release the same buckets with the same stamp, so a snapshot written twice
is recognised) and with the wall-clock time of the fold. It stays there until
a snapshot of the key's partition read after that time is durable; DuckDB
keeps it from then on (app.snapshot).

Records are JSON (orjson) with a version, so a later change can migrate them.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from engagement.events import StudentEvent

STATE_VERSION = 3
DAY_US = 86_400_000_000
HORIZON_DAYS = 45
KEY_SEPARATOR = "\x1f"  # ids never hold control characters (events.normalize_id)

VISITS = frozenset({"student_course_last_seen", "student_lesson_last_seen"})
_LESSON_TOGGLES = {"student_lesson_finished": 1, "student_lesson_unfinished": 0}
_MODULE_TOGGLES = {"student_module_finished": 1, "student_module_unfinished": 0}
_COURSE_TOGGLES = {"student_course_finished": 1, "student_course_unfinished": 0}
_FAVORITE_TOGGLES = {
    "student_lesson_marked_as_favorite": 1,
    "student_lesson_unmarked_as_favorite": 0,
}

# A register is [sent_us, event_id, value]; lists compare element by element,
# so max() of two registers is the later one.
Register = list[Any]


def course_key(team_id: str, student_id: str, course_id: str) -> bytes:
    return KEY_SEPARATOR.join((team_id, student_id, course_id)).encode()


def student_key(team_id: str, student_id: str) -> bytes:
    return KEY_SEPARATOR.join((team_id, student_id)).encode()


def fingerprint(raw: bytes) -> int:
    """A cheap digest of a body, to tell a redelivery from an id reused."""
    return zlib.crc32(raw)


def register_value(register: Register | None) -> Any:
    """The value a register holds, or None when nothing was ever set."""
    return None if register is None else register[2]


def _newer(current: Register | None, sent_us: int, event_id: str) -> bool:
    if current is None:
        return True
    current_sent = current[0]
    return sent_us > current_sent or (sent_us == current_sent and event_id > current[1])


LATEST_STUDENT_NAMES = ("student_name", "student_email")
LATEST_COURSE_NAMES = (*LATEST_STUDENT_NAMES, "course_name", "team_name")


def _keep_latest_names(
    state: CourseActivity | Student, event: StudentEvent, attributes: tuple[str, ...]
) -> None:
    """Take each name the event carries, if it is the latest seen."""
    sent, event_id = event.sent_us, event.event_id
    for attribute in attributes:
        value = getattr(event, attribute)
        if value is not None and _newer(getattr(state, attribute), sent, event_id):
            setattr(state, attribute, [sent, event_id, value])


def _count_registers(registers: dict[str, Register]) -> int:
    return sum(1 for register in registers.values() if register[2])


@dataclass(slots=True)
class CourseActivity:
    """State of one (team, student, course)."""

    team_id: str
    student_id: str
    course_id: str
    partition: int
    first_seen_at: int | None = None
    last_seen_at: int | None = None
    activity_events: int = 0
    comments: int = 0
    certificate_accessed: bool = False
    lessons: dict[str, Register] = field(default_factory=dict)
    modules: dict[str, Register] = field(default_factory=dict)
    favorites: dict[str, Register] = field(default_factory=dict)
    course: Register | None = None  # finished / unfinished
    last_event: Register | None = None
    student_name: Register | None = None
    student_email: Register | None = None
    course_name: Register | None = None
    team_name: Register | None = None
    # day number -> [activity events, visits, lesson finishes, comments]
    days: dict[int, list[int]] = field(default_factory=dict)
    # event id -> [sent_us, fingerprint of its first body]
    counted: dict[str, list[int]] = field(default_factory=dict)
    # [day, releasing sent_us, activity, visits, finishes, comments, fold wall us]
    released: list[list[int]] = field(default_factory=list)
    # [last_seen_at, threshold_days, reactivated]: the highest inactivity
    # alert recorded for that last-seen time (app.alerts), and whether the
    # activity that ended that absence has had its reactivated alert; None
    # while no alert was ever recorded for the key.
    alerted: list[Any] | None = None

    @property
    def lessons_finished(self) -> int:
        return _count_registers(self.lessons)

    @property
    def modules_finished(self) -> int:
        return _count_registers(self.modules)

    @property
    def favorite_lessons(self) -> int:
        return _count_registers(self.favorites)

    @property
    def course_finished(self) -> bool:
        return bool(self.course and self.course[2])

    def first_seen_after(self, instant_us: int) -> int | None:
        """The sentDate of the first counted event after ``instant_us``.

        Counted ids are kept for the horizon behind the latest activity, which
        a return after an absence is, so the first event back is among them.
        """
        after = [seen[0] for seen in self.counted.values() if seen[0] > instant_us]
        return min(after) if after else None

    def apply(
        self,
        event: StudentEvent,
        body_fingerprint: int,
        snapshotted_before_us: int | None = None,
    ) -> str:
        """Fold an activity event in: "counted", "redelivery" or "conflict".

        ``snapshotted_before_us``: wall-clock time before which every fold of
        this key's partition is in a durable snapshot, if one is known; the
        released buckets stamped before it are let go.
        """
        if self.released and snapshotted_before_us is not None:
            self.released = [r for r in self.released if r[6] >= snapshotted_before_us]
        seen = self.counted.get(event.event_id)
        if seen is not None:
            return "redelivery" if seen[1] == body_fingerprint else "conflict"
        sent, event_id, name = event.sent_us, event.event_id, event.name
        self.counted[event_id] = [sent, body_fingerprint]

        self.activity_events += 1
        if self.first_seen_at is None or sent < self.first_seen_at:
            self.first_seen_at = sent
        day = self.days.setdefault(sent // DAY_US, [0, 0, 0, 0])
        day[0] += 1
        if name in VISITS:
            day[1] += 1
        elif name == "student_lesson_finished":
            day[2] += 1
        elif name == "student_comment_created":
            day[3] += 1
            self.comments += 1
        elif name == "student_certificate_accessed":
            self.certificate_accessed = True

        self._apply_registers(event)
        if self.last_seen_at is None or sent > self.last_seen_at:
            self.last_seen_at = sent
            self._forget_beyond_horizon()
        return "counted"

    def _apply_registers(self, event: StudentEvent) -> None:
        sent, event_id, name = event.sent_us, event.event_id, event.name
        for toggles, registers, ref in (
            (_LESSON_TOGGLES, self.lessons, event.lesson_id),
            (_MODULE_TOGGLES, self.modules, event.module_id),
            (_FAVORITE_TOGGLES, self.favorites, event.lesson_id),
        ):
            if name in toggles and _newer(registers.get(ref), sent, event_id):
                registers[ref] = [sent, event_id, toggles[name]]
        if name in _COURSE_TOGGLES and _newer(self.course, sent, event_id):
            self.course = [sent, event_id, _COURSE_TOGGLES[name]]

        if _newer(self.last_event, sent, event_id):
            self.last_event = [sent, event_id, name]
        _keep_latest_names(self, event, LATEST_COURSE_NAMES)

    def _forget_beyond_horizon(self) -> None:
        assert self.last_seen_at is not None
        oldest_day = self.last_seen_at // DAY_US - HORIZON_DAYS
        if min(self.days) < oldest_day:
            folded_us = time.time_ns() // 1000
            kept = {}
            for day, counts in self.days.items():
                if day >= oldest_day:
                    kept[day] = counts
                else:
                    self.released.append([day, self.last_seen_at, *counts, folded_us])
            self.days = kept
        oldest = oldest_day * DAY_US
        if min(seen[0] for seen in self.counted.values()) < oldest:
            self.counted = {i: s for i, s in self.counted.items() if s[0] >= oldest}

    def dumps(self) -> bytes:
        """The record: a header line of what snapshots read, then the rest.

        The header is a JSON array in the order of HEADER, so that a snapshot
        decodes only it (app.snapshot); days and released buckets are flat
        lists of ``DAY_FIELDS`` and ``RELEASED_FIELDS`` numbers. The body
        holds the registers themselves and the counted ids.
        """
        header = [
            STATE_VERSION,
            self.partition,
            self.team_id,
            self.student_id,
            self.course_id,
            self.first_seen_at,
            self.last_seen_at,
            self.activity_events,
            self.lessons_finished,
            self.modules_finished,
            self.course_finished,
            self.favorite_lessons,
            self.comments,
            self.certificate_accessed,
            *(
                register_value(register)
                for register in (
                    self.last_event,
                    self.student_name,
                    self.student_email,
                    self.course_name,
                    self.team_name,
                )
            ),
            [n for day, counts in self.days.items() for n in (day, *counts)],
            [n for bucket in self.released for n in bucket],
        ]
        body = {
            "lessons": self.lessons,
            "modules": self.modules,
            "favorites": self.favorites,
            "course": self.course,
            "last": self.last_event,
            "names": [
                self.student_name,
                self.student_email,
                self.course_name,
                self.team_name,
            ],
            "ids": self.counted,
            "alerted": self.alerted,
        }
        return orjson.dumps(header) + b"\n" + orjson.dumps(body)

    @classmethod
    def loads(cls, raw: bytes) -> CourseActivity:
        if raw[:1] == b"{":  # a single object: a record of version 1 or 2
            header, body = _split(migrate(orjson.loads(raw)))
        else:
            line, _, rest = raw.partition(b"\n")
            header, body = orjson.loads(line), orjson.loads(rest)
        if header[0] != STATE_VERSION:
            raise ValueError(f"unknown course record version {header[0]!r}")
        days, released = header[HEADER.index("days")], header[-1]
        student_name, student_email, course_name, team_name = body["names"]
        return cls(
            *header[2:5],
            header[1],
            *header[5:7],
            activity_events=header[7],
            comments=header[12],
            certificate_accessed=header[13],
            lessons=body["lessons"],
            modules=body["modules"],
            favorites=body["favorites"],
            course=body["course"],
            last_event=body["last"],
            student_name=student_name,
            student_email=student_email,
            course_name=course_name,
            team_name=team_name,
            days={
                days[i]: days[i + 1 : i + DAY_FIELDS]
                for i in range(0, len(days), DAY_FIELDS)
            },
            counted=body["ids"],
            alerted=body.get("alerted"),
            released=[
                released[i : i + RELEASED_FIELDS]
                for i in range(0, len(released), RELEASED_FIELDS)
            ],
        )


_ALERTED_KEY = b'"alerted":'


def alert_summary(raw: bytes) -> CourseActivity:
    """A course record as far as the alert checker's index needs it.

    Only the header and the body's last entry (``alerted``) are decoded, not
    the registers and ids: the result is fit to be observed, not folded into.
    ``alerted`` is the body's last key (dumps writes it so, and a key or a
    string before it cannot hold the sequence unescaped after it).
    """
    if raw[:1] == b"{":
        return CourseActivity.loads(raw)
    line, _, body = raw.partition(b"\n")
    header = orjson.loads(line)
    if header[0] != STATE_VERSION:
        raise ValueError(f"unknown course record version {header[0]!r}")
    at = body.rfind(_ALERTED_KEY)
    alerted = orjson.loads(body[at + len(_ALERTED_KEY) : -1]) if at >= 0 else None
    finished = header[HEADER.index("course_finished")]
    return CourseActivity(
        *header[2:5],
        header[1],
        *header[5:7],
        course=[0, "", 1] if finished else None,
        alerted=alerted,
    )


def _split(record: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A version 2 object as the header and body loads() reads.

    Only what loads() takes from the header is filled in; version 2 kept no
    released buckets (it dropped them).
    """
    events, comments, certificate = record["n"]
    days = [n for day, counts in record["days"].items() for n in (int(day), *counts)]
    header = [STATE_VERSION, record["p"], *record["key"], *record["seen"], events]
    header += [None] * 4 + [comments, certificate] + [None] * 5 + [days, []]
    return header, record


# The header of a course record (CourseActivity.dumps), in order; the names
# from team_id to team_name are the columns of student_course_activity.
HEADER = (
    "version",
    "partition",
    "team_id",
    "student_id",
    "course_id",
    "first_seen_at",
    "last_seen_at",
    "activity_events",
    "lessons_finished",
    "modules_finished",
    "course_finished",
    "favorites",
    "comments",
    "certificate_accessed",
    "last_event",
    "student_name",
    "student_email",
    "course_name",
    "team_name",
    "days",
    "released",
)
DAY_FIELDS = 5  # day, activity events, visits, lesson finishes, comments
RELEASED_FIELDS = 7  # day, released by (sent_us), the four counts, folded at


def migrate(record: dict[str, Any]) -> dict[str, Any]:
    """Bring a course record of version 1 to version 2, the last single object.

    Version 3 (STATE_VERSION) splits the record into a header and a body;
    CourseActivity.loads reads a version 2 object as a version 3 record
    whose released buckets are none (version 2 dropped them).
    """
    version = record.get("v")
    if version == 1:
        # Version 1 kept only the last-seen times and the activity count; it
        # did not remember sentDates per day, so no daily buckets can be made.
        record = {
            "v": 2,
            "key": [record["team"], record["student"], record["course"]],
            "p": record["p"],
            "seen": [record["first"], record["last"]],
            "n": [record["n"], 0, False],
            "lessons": {},
            "modules": {},
            "favorites": {},
            "course": None,
            "last": None,
            "names": [None, None, None, None],
            "days": {},
            "ids": {i: [t, 0] for i, t in record["ids"].items()},
        }
    if record.get("v") != 2:
        raise ValueError(f"unknown course record version {version!r}")
    return record


@dataclass(slots=True)
class Student:
    """State of one (team, student): who to contact, and since when registered."""

    team_id: str
    student_id: str
    partition: int
    student_name: Register | None = None
    student_email: Register | None = None
    created: Register | None = None  # [sent_us, event_id, createdAt or sentDate]
    # Seen active in any course: a never-started alert is no longer due.
    active: bool = False
    # The registration time a never_started alert was recorded for.
    alerted: int | None = None

    def apply(self, event: StudentEvent) -> None:
        """Fold any student event in."""
        sent, event_id = event.sent_us, event.event_id
        _keep_latest_names(self, event, LATEST_STUDENT_NAMES)
        if event.name == "student_created":
            if _newer(self.created, sent, event_id):
                self.created = [sent, event_id, event.created_us]
        else:
            self.active = True

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "key": [self.team_id, self.student_id],
                "p": self.partition,
                "names": [self.student_name, self.student_email],
                "created": self.created,
                "active": self.active,
                "alerted": self.alerted,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> Student:
        record = orjson.loads(raw)
        if record.get("v") == 2:  # version 3 changed course records only
            record["v"] = STATE_VERSION
        if record.get("v") != STATE_VERSION:
            raise ValueError(f"unknown student record version {record.get('v')!r}")
        team_id, student_id = record["key"]
        name, email = record["names"]
        return cls(
            team_id,
            student_id,
            record["p"],
            name,
            email,
            record["created"],
            # Records from before "active" was kept: assume the student was,
            # rather than raise a never_started alert for every one of them.
            record.get("active", True),
            record.get("alerted"),
        )
