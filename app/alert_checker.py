"""The inactivity check: which keys are due now, and the alerts they raise.

The checker keeps only a deadline per key (app.deadlines), one index per
partition, not the keys' state: when a key falls due, it reads the key's
record and decides from that, so a check costs the keys due. Whoever folds
events calls ``observe_course`` / ``observe_student`` with each record it
changed, and the index of a partition is rebuilt from the whole table once
the partition is recovered (``rebuilding``).

Three kinds of alert come out of it:

- ``inactive``: an unfinished course not seen for a threshold;
- ``reactivated``: a course whose student was seen again after an inactive
  alert was recorded for the absence; due as soon as that is observed;
- ``never_started``: a student registered ``never_started_days`` ago with no
  activity in any course.

An alert raised is recorded in the key's record by whoever consumes the
alerts topic (app.alert_flow). Until ``observe_*`` shows it there, the
checker remembers it (``raised``) and does not raise it again. Should the
worker stop before the record has it, the alert is raised again after
recovery, with the same alert_id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.alerts import Alert, AlertKind, due_thresholds, next_deadline
from app.deadlines import DeadlineIndex
from app.state import DAY_US, CourseActivity, Student, course_key, register_value
from app.state import student_key as make_student_key
from engagement.alerts_config import AlertRules

Clock = Callable[[], int]  # wall-clock microseconds since the epoch
# A crossing found later than this after it happened was not seen live (the
# events came late, or the worker was away): its key gets one alert, for the
# highest threshold crossed, marked catch_up.
CATCH_UP_AFTER_US = 60_000_000
CourseLookup = Callable[[bytes], CourseActivity | None]
StudentLookup = Callable[[bytes], Student | None]


def wall_clock_us() -> int:
    return time.time_ns() // 1000


def alerted_up_to(state: CourseActivity) -> float | None:
    """The highest threshold recorded for the record's current last-seen time."""
    if state.alerted is None or state.alerted[0] != state.last_seen_at:
        return None  # none, or about an earlier absence (re-armed)
    return float(state.alerted[1])


def reactivation_due(state: CourseActivity) -> bool:
    """An absence was alerted, the student came back, and nothing said so yet."""
    alerted = state.alerted
    return (
        alerted is not None
        and state.last_seen_at is not None
        and alerted[0] < state.last_seen_at
        and not (len(alerted) > 2 and alerted[2])
    )


@dataclass
class _Partition:
    courses: DeadlineIndex[bytes] = field(default_factory=DeadlineIndex)
    students: DeadlineIndex[bytes] = field(default_factory=DeadlineIndex)
    # key -> (kind, last_seen_us, threshold): raised, not yet seen recorded.
    raised: dict[bytes, tuple[AlertKind, int, float | None]] = field(
        default_factory=dict
    )
    # Keys observed while the index was being rebuilt: newer than the
    # rebuild's own reads, which are then skipped. None when not rebuilding.
    observed: set[bytes] | None = None
    # Keys held back by a check while history was arriving (hold_late): what
    # is due for them is decided again by the next check that holds none.
    held_courses: dict[bytes, None] = field(default_factory=dict)
    held_students: dict[bytes, None] = field(default_factory=dict)


class AlertChecker:
    def __init__(self, rules: AlertRules, clock: Clock = wall_clock_us) -> None:
        self.rules = rules
        self.clock = clock
        self._partitions: dict[int, _Partition] = {}
        self.last_check_us: int | None = None  # the clock at the last check

    def _partition(self, partition: int) -> _Partition:
        known = self._partitions.get(partition)
        if known is None:
            known = self._partitions[partition] = _Partition()
        return known

    def forget(self, partitions: Iterable[int]) -> None:
        """These partitions left the worker: their keys are no longer checked."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def keys(self) -> int:
        """Keys with a deadline, over every partition."""
        return sum(
            len(known.courses) + len(known.students)
            for known in self._partitions.values()
        )

    def has_due(self, partition: int, now: int | None = None) -> bool:
        """Whether keys of the partition are due now: left by a check's limit,
        or held while history arrived."""
        known = self._partitions.get(partition)
        if known is None:
            return False
        now = self.clock() if now is None else now
        return bool(known.held_courses or known.held_students) or any(
            deadline is not None and deadline <= now
            for deadline in (
                known.courses.next_deadline(),
                known.students.next_deadline(),
            )
        )

    def start_rebuild(self, partition: int) -> None:
        self._partition(partition).observed = set()

    def finish_rebuild(self, partition: int) -> None:
        known = self._partitions.get(partition)
        if known is not None:  # else forgotten meanwhile
            known.observed = None

    def observe_course(self, state: CourseActivity, rebuilding: bool = False) -> None:
        """Take a course record, as it is now, into account."""
        known = self._partition(state.partition)
        key = course_key(state.team_id, state.student_id, state.course_id)
        if _skip(known, key, rebuilding):
            return
        raised = known.raised.get(key)
        if raised is not None and _settled(raised, state):
            del known.raised[key]
            raised = None
        if reactivation_due(state):
            # Due at once; unless it was raised already and not yet recorded.
            known.courses.set(key, None if raised else 0)
            return
        if state.course_finished or state.last_seen_at is None:
            known.courses.set(key, None)  # finished courses are never alerted
            return
        thresholds = self.rules.thresholds(state.team_id, state.course_id)
        highest = _highest_alerted(state, raised)
        known.courses.set(key, next_deadline(state.last_seen_at, highest, thresholds))

    def observe_student(self, state: Student, rebuilding: bool = False) -> None:
        """Take a student record, as it is now, into account."""
        known = self._partition(state.partition)
        key = make_student_key(state.team_id, state.student_id)
        if _skip(known, key, rebuilding):
            return
        registered = register_value(state.created)
        if state.alerted is not None and state.alerted == registered:
            known.raised.pop(key, None)
        if (
            registered is None
            or state.active
            or state.alerted == registered
            or key in known.raised
        ):
            known.students.set(key, None)
            return
        days = self.rules.never_started_days(state.team_id)
        known.students.set(key, registered + round(days * DAY_US))

    def check(
        self,
        partition: int,
        courses: CourseLookup,
        students: StudentLookup,
        catching_up: bool,
        limit: int | None = None,
        hold_late: bool = False,
    ) -> list[Alert]:
        """The alerts due now, of the keys of ``partition`` whose deadline passed.

        ``hold_late``: history is arriving in the partition (a backfill); only
        live crossings (CATCH_UP_AFTER_US) are alerted, and the keys due for
        anything else are held for the first check without ``hold_late``:
        the rest of their history may still be on its way.

        ``limit``: at most that many keys of each kind (courses, students)
        are looked at; the rest stay due for the next check. A first check
        after a large backfill can find most of the table due.

        ``catching_up``: the partition has just caught up after being behind;
        each key then gets one inactive alert, for the highest threshold it
        crossed, and every alert says ``catch_up``. So does a key whose
        crossing is found more than CATCH_UP_AFTER_US after it happened.
        """
        known = self._partitions.get(partition)
        if known is None:
            return []
        now = self.last_check_us = self.clock()
        alerts: list[Alert] = []
        kinds: tuple[tuple[dict, DeadlineIndex, Callable, Callable], ...] = (
            (known.held_courses, known.courses, courses, self._course_alerts),
            (known.held_students, known.students, students, self._student_alerts),
        )
        for held, index, lookup, decide in kinds:
            for key in _due(held, index, now, limit, hold_late):
                state = lookup(key)
                if state is None:
                    continue
                before = known.raised.get(key)
                found = decide(known, key, state, now, catching_up)
                if hold_late and any(alert.catch_up for alert in found):
                    _hold(known, key, before)
                    held[key] = None
                else:
                    alerts += found
        return alerts

    def _course_alerts(
        self,
        known: _Partition,
        key: bytes,
        state: CourseActivity,
        now: int,
        catching_up: bool,
    ) -> list[Alert]:
        names = {
            "student_name": register_value(state.student_name),
            "student_email": register_value(state.student_email),
        }
        ids = (state.team_id, state.student_id, state.course_id)
        if reactivation_due(state):
            assert state.alerted is not None and state.last_seen_at is not None
            absent_since, threshold = state.alerted[0], float(state.alerted[1])
            if known.raised.get(key) == (
                AlertKind.REACTIVATED,
                absent_since,
                threshold,
            ):
                return []  # raised already, not recorded yet
            back = state.first_seen_after(absent_since) or state.last_seen_at
            known.raised[key] = (AlertKind.REACTIVATED, absent_since, threshold)
            alert = Alert(
                AlertKind.REACTIVATED,
                *ids,
                threshold,
                absent_since,
                now,
                catch_up=catching_up,
                active_again_us=back,
                **names,
            )
            return [alert]
        if state.course_finished or state.last_seen_at is None:
            return []
        thresholds = self.rules.thresholds(state.team_id, state.course_id)
        highest = _highest_alerted(state, known.raised.get(key))
        due = due_thresholds(state.last_seen_at, highest, thresholds, now, False)
        if due and not catching_up:
            crossed_at = state.last_seen_at + round(due[0] * DAY_US)
            catching_up = now - crossed_at > CATCH_UP_AFTER_US
        if catching_up:
            due = due[-1:]
        if due:
            highest = due[-1]
            known.raised[key] = (AlertKind.INACTIVE, state.last_seen_at, highest)
        known.courses.set(key, next_deadline(state.last_seen_at, highest, thresholds))
        return [
            Alert(
                AlertKind.INACTIVE,
                *ids,
                threshold,
                state.last_seen_at,
                now,
                catch_up=catching_up,
                **names,
            )
            for threshold in due
        ]

    def _student_alerts(
        self,
        known: _Partition,
        key: bytes,
        student: Student,
        now: int,
        catching_up: bool,
    ) -> list[Alert]:
        registered = register_value(student.created)
        if registered is None or student.active or student.alerted == registered:
            return []
        days = self.rules.never_started_days(student.team_id)
        if known.raised.get(key) == (AlertKind.NEVER_STARTED, registered, days):
            return []  # raised already, not recorded yet
        if registered + round(days * DAY_US) > now:
            known.students.set(key, registered + round(days * DAY_US))
            return []
        known.raised[key] = (AlertKind.NEVER_STARTED, registered, days)
        late = now - (registered + round(days * DAY_US)) > CATCH_UP_AFTER_US
        alert = Alert(
            AlertKind.NEVER_STARTED,
            student.team_id,
            student.student_id,
            None,
            days,
            registered,
            now,
            catch_up=catching_up or late,
            student_name=register_value(student.student_name),
            student_email=register_value(student.student_email),
        )
        return [alert]


def _due(
    held: dict[bytes, None],
    index: DeadlineIndex[bytes],
    now: int,
    limit: int | None,
    hold_late: bool,
) -> list[bytes]:
    """The keys a check looks at: those held before (unless it holds again),
    then those whose deadline passed; ``limit`` of them at most."""
    keys: list[bytes] = []
    if not hold_late:
        while held and (limit is None or len(keys) < limit):
            key = next(iter(held))
            del held[key]
            keys.append(key)
    left = None if limit is None else limit - len(keys)
    taken = set(keys)
    return keys + [key for key in index.pop_due(now, left) if key not in taken]


def _hold(
    known: _Partition, key: bytes, before: tuple[AlertKind, int, float | None] | None
) -> None:
    """Forget the alerts just decided for the key: they are decided again."""
    if before is None:
        known.raised.pop(key, None)
    else:
        known.raised[key] = before


def _skip(known: _Partition, key: bytes, rebuilding: bool) -> bool:
    """Whether an observation is older than one already taken."""
    if known.observed is None:
        return False
    if rebuilding:
        return key in known.observed
    known.observed.add(key)
    return False


def _settled(
    raised: tuple[AlertKind, int, float | None], state: CourseActivity
) -> bool:
    """The record shows the raised alert recorded, or has moved past it."""
    kind, last_seen, threshold = raised
    alerted = state.alerted
    if kind is AlertKind.REACTIVATED:
        return alerted is None or alerted[0] != last_seen or not reactivation_due(state)
    if alerted is not None and alerted[0] == last_seen:
        return float(alerted[1]) >= (threshold or 0)
    # Seen again before the alert was recorded: once it is, the record says
    # so (alerted about last_seen) and the reactivation follows from it.
    return state.last_seen_at != last_seen and (
        alerted is not None and alerted[0] >= last_seen
    )


def _highest_alerted(
    state: CourseActivity, raised: tuple[AlertKind, int, float | None] | None
) -> float | None:
    """The highest threshold alerted for the current last-seen time, recorded
    or raised and not yet recorded."""
    recorded = alerted_up_to(state)
    if raised is None or raised[0] is not AlertKind.INACTIVE:
        return recorded
    if raised[1] != state.last_seen_at:
        return recorded
    threshold = raised[2] or 0.0
    return threshold if recorded is None else max(recorded, threshold)
