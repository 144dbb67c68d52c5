"""What the agent does with the records of one partition, a batch at a time.

Kept apart from the Faust wiring so the folding rules read on their own, and
so the benchmark's hand-written consumer runs exactly the same code. The
tables are mutable mappings of bytes to bytes; each key touched by a batch is
read once and written once, however many of its events the batch holds.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from enum import StrEnum

from app.state import CourseActivity, Student, course_key, fingerprint, student_key
from engagement.events import (
    STUDENT_CREATED,
    InvalidBody,
    StudentEvent,
    decode_event,
)

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    ACTIVITY = "activity"  # an activity event, counted
    REDELIVERY = "redelivery"  # an event id already counted for its key
    CONFLICT = "conflict"  # an id already counted, with other content: ignored
    REGISTRATION = "registration"  # student_created: a cohort start, not a visit
    NOT_ENGAGEMENT = "not_engagement"  # ping, other products, unknown names
    REJECTED = "rejected"  # not a usable body
    FAILED = "failed"  # the worker could not fold it in: a bug, logged


class Tracker:
    def __init__(
        self,
        courses: MutableMapping[bytes, bytes],
        students: MutableMapping[bytes, bytes],
        snapshotted: Mapping[int, int] | None = None,
        on_course: Callable[[CourseActivity], None] | None = None,
        on_student: Callable[[Student], None] | None = None,
    ) -> None:
        self.courses = courses
        self.students = students
        # Told each record a fold wrote, as written (the alert checker).
        self.on_course = on_course
        self.on_student = on_student
        # Partition -> wall-clock us before which its folds are in a durable
        # snapshot (see CourseActivity.released); empty without snapshots.
        self.snapshotted: Mapping[int, int] = {} if snapshotted is None else snapshotted
        self.rejections: Counter[str] = Counter()
        # The oldest sentDate of the last fold's events, if it had any.
        self.oldest_sent_us: int | None = None

    def fold(self, partition: int, bodies: Iterable[bytes | None]) -> Counter[str]:
        """Fold the bodies of one partition, in order; count their outcomes."""
        outcomes: Counter[str] = Counter()
        courses: dict[bytes, CourseActivity] = {}
        students: dict[bytes, Student] = {}
        dirty_courses: set[bytes] = set()
        dirty_students: set[bytes] = set()
        snapshotted = self.snapshotted.get(partition)
        oldest: int | None = None

        for raw in bodies:
            raw = raw or b""
            try:
                event = decode_event(raw)
            except InvalidBody as error:
                outcomes[Outcome.REJECTED] += 1
                self.rejections[error.kind] += 1
                logger.warning(
                    "Rejected a record of partition %d: %s", partition, error.reason
                )
                continue
            if event is None:
                outcomes[Outcome.NOT_ENGAGEMENT] += 1
                continue
            if oldest is None or event.sent_us < oldest:
                oldest = event.sent_us

            if event.name != STUDENT_CREATED:
                key = course_key(event.team_id, event.student_id, event.course_id)  # type: ignore[arg-type]
                course = courses.get(key) or self._course(key, event, partition)
                courses[key] = course
                result = course.apply(event, fingerprint(raw), snapshotted)
                outcomes[Outcome.ACTIVITY if result == "counted" else result] += 1
                # Written even when unchanged: after a kill -9 the local store
                # can hold updates whose changelog records never left, and
                # their events come again (the offsets were not committed).
                # Rewriting the whole record puts them in the changelog.
                dirty_courses.add(key)
                if result == "conflict":
                    continue  # the first body of an id wins, for the student too
            else:
                outcomes[Outcome.REGISTRATION] += 1

            # The student's registers are last-writer-wins, so a redelivery
            # folds in again harmlessly; that is what makes a batch safe to
            # retry when writing it failed half-way.
            key = student_key(event.team_id, event.student_id)
            student = students.get(key) or self._student(key, event, partition)
            students[key] = student
            student.apply(event)
            dirty_students.add(key)  # unchanged too, as for courses

        self.oldest_sent_us = oldest
        for key in dirty_courses:
            self.courses[key] = courses[key].dumps()
        for key in dirty_students:
            self.students[key] = students[key].dumps()
        if self.on_course is not None:
            for key in dirty_courses:
                self.on_course(courses[key])
        if self.on_student is not None:
            for key in dirty_students:
                self.on_student(students[key])
        return outcomes

    def _course(
        self, key: bytes, event: StudentEvent, partition: int
    ) -> CourseActivity:
        stored = self.courses.get(key)
        if stored is not None:
            return CourseActivity.loads(stored)
        return CourseActivity(
            event.team_id, event.student_id, event.course_id, partition
        )

    def _student(self, key: bytes, event: StudentEvent, partition: int) -> Student:
        stored = self.students.get(key)
        if stored is not None:
            return Student.loads(stored)
        return Student(event.team_id, event.student_id, partition)
