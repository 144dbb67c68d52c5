"""The inactivity check: which keys are due now, and the alerts they raise.

The checker keeps only a deadline per key (app.deadlines), not the keys'
state: when a key falls due, it reads the key's record from the table and
decides from that, so a check costs the keys due. Whoever folds events calls
``observe`` with each changed record, and the index is rebuilt from the
whole table after recovery (``observe`` for every record).

The alert raised is recorded in the key's record by whoever consumes the
alerts (CourseActivity.alerted); until ``observe`` shows it there, the
checker remembers it (``raised``), so it does not raise it twice. Should the
worker stop before the record has it, the alert is raised again after
recovery, with the same alert_id.

TODO: the worker does not run this yet (issue 6: the alerts topic, the
recording agent, never-started students and delivery are still to come).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.alerts import Alert, AlertKind, due_thresholds, next_deadline
from app.deadlines import DeadlineIndex
from app.state import CourseActivity, course_key, register_value
from engagement.alerts_config import AlertRules

Clock = Callable[[], int]  # wall-clock microseconds since the epoch


def wall_clock_us() -> int:
    return time.time_ns() // 1000


def _alerted_up_to(state: CourseActivity) -> float | None:
    """The highest threshold alerted for the record's current last-seen time."""
    if state.alerted is None or state.alerted[0] != state.last_seen_at:
        return None  # none, or about an earlier absence (re-armed)
    return float(state.alerted[1])


class AlertChecker:
    def __init__(self, rules: AlertRules, clock: Clock = wall_clock_us) -> None:
        self.rules = rules
        self.clock = clock
        self.index: DeadlineIndex[bytes] = DeadlineIndex()
        # key -> [last_seen_at, threshold]: raised, not yet seen recorded.
        self.raised: dict[bytes, list] = {}

    def observe(self, state: CourseActivity) -> None:
        """Take a course record as it is now into account."""
        key = course_key(state.team_id, state.student_id, state.course_id)
        if state.course_finished or state.last_seen_at is None:
            self.index.set(key, None)  # finished courses are never alerted
            self.raised.pop(key, None)
            return
        thresholds = self.rules.thresholds(state.team_id, state.course_id)
        alerted = self._alerted_up_to(key, state)
        raised = self.raised.get(key)
        if raised is not None and (
            raised[0] != state.last_seen_at or alerted == raised[1]
        ):
            del self.raised[key]  # recorded, or about an absence that ended
        self.index.set(key, next_deadline(state.last_seen_at, alerted, thresholds))

    def _alerted_up_to(self, key: bytes, state: CourseActivity) -> float | None:
        """The highest threshold alerted for the record's last-seen time."""
        recorded = _alerted_up_to(state)
        raised = self.raised.get(key)
        if raised is None or raised[0] != state.last_seen_at:
            return recorded
        return raised[1] if recorded is None else max(recorded, raised[1])

    def check(
        self, lookup: Callable[[bytes], CourseActivity | None], catching_up: bool
    ) -> list[Alert]:
        """The inactivity alerts due now, for keys whose deadline has passed.

        ``catching_up``: the worker has just caught up after being behind;
        each key then gets one alert, for the highest threshold it crossed.
        """
        now = self.clock()
        alerts = []
        for key in self.index.pop_due(now):
            state = lookup(key)
            if state is None or state.course_finished or state.last_seen_at is None:
                continue
            thresholds = self.rules.thresholds(state.team_id, state.course_id)
            alerted = self._alerted_up_to(key, state)
            due = due_thresholds(
                state.last_seen_at, alerted, thresholds, now, catching_up
            )
            for threshold in due:
                alerts.append(
                    Alert(
                        AlertKind.INACTIVE,
                        state.team_id,
                        state.student_id,
                        state.course_id,
                        threshold,
                        state.last_seen_at,
                        now,
                        catch_up=catching_up,
                        student_name=register_value(state.student_name),
                        student_email=register_value(state.student_email),
                    )
                )
            highest = due[-1] if due else alerted
            if due:
                self.raised[key] = [state.last_seen_at, highest]
            self.index.set(key, next_deadline(state.last_seen_at, highest, thresholds))
        return alerts
