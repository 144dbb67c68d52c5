"""Inactivity alert rules, the deadline index and the alert itself, by hand."""

from __future__ import annotations

import json
import random

import pytest

from app.alerts import (
    DAY_US,
    Alert,
    AlertKind,
    alert_id,
    due_thresholds,
    next_deadline,
)
from app.deadlines import DeadlineIndex
from engagement.alerts_config import AlertRules
from engagement.errors import ConfigurationError

CONFIG = """
[defaults]
thresholds_days = [30, 7, 14, 7]
never_started_days = 4

[teams.school-a]
thresholds_days = [5, 10]
url = "https://school-a.example/hooks"
secret = "very-secret"

[teams.school-a.courses.quick]
thresholds_days = [1.5]

[teams.school-b]
never_started_days = 2
"""


def test_thresholds_come_from_the_course_then_the_school_then_the_defaults(tmp_path):
    path = tmp_path / "alerts.toml"
    path.write_text(CONFIG)
    rules = AlertRules.load(path)

    assert rules.thresholds("school-a", "quick") == (1.5,)
    assert rules.thresholds("school-a", "other") == (5.0, 10.0)
    assert rules.thresholds("school-b", "any") == (7.0, 14.0, 30.0)  # sorted, once
    assert rules.thresholds("unknown", "any") == (7.0, 14.0, 30.0)
    assert rules.never_started_days("school-b") == 2
    assert rules.never_started_days("school-a") == 4
    delivery = rules.delivery("school-a")
    assert delivery is not None and delivery.url == "https://school-a.example/hooks"
    assert delivery.secret.get_secret_value() == "very-secret"
    assert rules.delivery("school-b") is None


def test_without_a_file_the_defaults_are_7_14_and_30_days():
    rules = AlertRules.load(None)
    assert rules.thresholds("t", "c") == (7.0, 14.0, 30.0)
    assert rules.never_started_days("t") == 3


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("[teams.a]\nurl = 'https://a.example'", "teams.a"),
        ("[defaults]\nthresholds_days = [0]", "defaults.thresholds_days"),
        ("[defaults]\nthresholds_days = []", "defaults.thresholds_days"),
        ("[defaults]\nthresholds_days = [7, inf]", "defaults.thresholds_days.1"),
        ("[defaults]\nthresholds_days = [1e308]", "defaults.thresholds_days.0"),
        ("[teams.a]\nnever_started_days = nan", "teams.a.never_started_days"),
        ("[teams.a]\nthreshold_days = [3]", "teams.a.threshold_days"),
        ("[teams.a]\nurl = 'not a url'\nsecret = 'hush-hush'", "teams.a.url"),
    ],
)
def test_a_wrong_file_is_a_clear_error_without_its_secrets(tmp_path, content, where):
    path = tmp_path / "alerts.toml"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=where.replace(".", r"\.")) as raised:
        AlertRules.load(path)
    assert "hush-hush" not in str(raised.value)


def test_each_threshold_falls_due_once_and_catch_up_takes_the_highest():
    thresholds = (7.0, 14.0, 30.0)
    seen = 1_000 * DAY_US

    assert due_thresholds(seen, None, thresholds, seen + 7 * DAY_US - 1, False) == []
    assert due_thresholds(seen, None, thresholds, seen + 7 * DAY_US, False) == [7.0]
    assert due_thresholds(seen, 7.0, thresholds, seen + 8 * DAY_US, False) == []
    # Down for three weeks: both crossings are due, or only the last one.
    late = seen + 21 * DAY_US
    assert due_thresholds(seen, None, thresholds, late, False) == [7.0, 14.0]
    assert due_thresholds(seen, None, thresholds, late, True) == [14.0]
    assert due_thresholds(seen, 30.0, thresholds, seen + 99 * DAY_US, True) == []

    assert next_deadline(seen, None, thresholds) == seen + 7 * DAY_US
    assert next_deadline(seen, 14.0, thresholds) == seen + 30 * DAY_US
    assert next_deadline(seen, 30.0, thresholds) is None
    assert next_deadline(seen, None, (1.5,)) == seen + 36 * 3_600_000_000


def test_an_alert_id_names_one_crossing():
    def make(**changes: object) -> Alert:
        fields = {
            "kind": AlertKind.INACTIVE,
            "team_id": "t",
            "student_id": "s",
            "course_id": "c",
            "threshold_days": 7.0,
            "last_seen_us": 1_796_000_000_000_000,
            "detected_us": 1_796_604_800_000_000,
        }
        return Alert(**{**fields, **changes})  # type: ignore[arg-type]

    alert = make()
    # Seen again later, by another worker, caught up: the same crossing.
    assert make(detected_us=1_796_700_000_000_000, catch_up=True).alert_id == (
        alert.alert_id
    )
    others = [
        make(kind=AlertKind.REACTIVATED),
        make(team_id="t2"),
        make(student_id="s2"),
        make(course_id="c2"),
        make(threshold_days=14.0),
        make(last_seen_us=1_796_000_000_000_001),
    ]
    assert len({alert.alert_id, *(other.alert_id for other in others)}) == 7
    assert alert.alert_id == alert_id(
        AlertKind.INACTIVE, "t", "s", "c", 7.0, 1_796_000_000_000_000
    )

    document = json.loads(alert.to_json())
    assert document["version"] == 1 and document["alert_id"] == alert.alert_id
    assert document["days_inactive"] == pytest.approx(7.0)
    assert document["last_seen_at"] == "2026-11-30T00:53:20Z"
    assert document["detected_at"] == "2026-12-07T00:53:20Z"


def test_the_index_gives_due_keys_soonest_first_and_only_their_latest_deadline():
    index: DeadlineIndex[str] = DeadlineIndex()
    index.set("a", 30)
    index.set("b", 10)
    index.set("c", 20)
    index.set("a", 5)  # moved earlier: the old deadline is superseded
    index.set("c", None)  # nothing due any more

    assert index.next_deadline() == 5
    assert index.pop_due(4) == []
    assert index.pop_due(25) == ["a", "b"]
    assert index.pop_due(100) == []  # "a" at 30 was superseded, "c" removed
    assert len(index) == 0 and index.next_deadline() is None


def test_the_index_matches_a_plain_scan_and_stays_small():
    rng = random.Random(7)
    index: DeadlineIndex[int] = DeadlineIndex()
    truth: dict[int, int] = {}
    now = 0
    for step in range(30_000):
        key = rng.randrange(500)
        if rng.random() < 0.1:
            index.set(key, None)
            truth.pop(key, None)
        else:
            deadline = now + rng.randrange(1, 1_000)
            index.set(key, deadline)
            truth[key] = deadline
        if step % 100 == 0:
            now += 50
            expected = sorted(
                (deadline, key) for key, deadline in truth.items() if deadline <= now
            )
            due = index.pop_due(now)
            assert sorted((truth[key], key) for key in due) == expected
            assert [truth[key] for key in due] == sorted(truth[key] for key in due)
            for key in due:
                del truth[key]
        # Superseded entries never pile up beyond about twice the live keys.
        assert len(index._heap) <= max(1024, 2 * len(truth)) + 1
    assert len(index) == len(truth)


class _Clock:
    """A wall clock the test moves forward, instead of sleeping."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, days: float) -> None:
        self.now_us += round(days * DAY_US)


def _course(student: str, last_seen_us: int, course: str = "c", team: str = "t"):
    from app.state import CourseActivity

    state = CourseActivity(team, student, course, partition=0)
    state.first_seen_at = state.last_seen_at = last_seen_us
    state.student_name = [0, "e", f"Name of {student}"]
    return state


class _Table(dict):
    """A partition of the tables as the checker reads them, counting reads."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[bytes] = []

    def lookup(self, key: bytes):
        self.lookups.append(key)
        return self.get(key)


class _Checked:
    """A checker over one partition, fed the records the test keeps."""

    def __init__(self, clock: _Clock, states: list, rules: AlertRules) -> None:
        from app.alert_checker import AlertChecker

        self.checker = AlertChecker(rules, clock)
        self.courses, self.students = _Table(), _Table()
        for state in states:
            self.put(state)

    def put(self, state) -> None:
        """Store a record, as a fold or the recorder would, and observe it."""
        from app.state import Student, course_key, student_key

        if isinstance(state, Student):
            self.students[student_key(state.team_id, state.student_id)] = state
            self.checker.observe_student(state)
        else:
            key = course_key(state.team_id, state.student_id, state.course_id)
            self.courses[key] = state
            self.checker.observe_course(state)

    def check(self, catching_up: bool = False, record: bool = True) -> list:
        """One check; its alerts recorded in their keys, as the topic's consumer
        does, unless ``record`` is False."""
        from app.alert_flow import alert_key, recorded

        alerts = self.checker.check(
            0, self.courses.lookup, self.students.lookup, catching_up
        )
        if record:
            for alert in alerts:
                if alert.kind is AlertKind.NEVER_STARTED:
                    student = self.students[alert_key(alert)]
                    student.alerted = alert.last_seen_us
                    self.put(student)
                else:
                    course = self.courses[alert_key(alert)]
                    course.alerted = recorded(course.alerted, alert)
                    self.put(course)
        return alerts


def _checker(clock: _Clock, states: list, tmp_path=None, config: str = ""):
    rules = AlertRules.load(None)
    if config:
        path = tmp_path / "alerts.toml"
        path.write_text(config)
        rules = AlertRules.load(path)
    return _Checked(clock, states, rules)


def _run(checked: _Checked, clock: _Clock, days: float, step_s: float = 30) -> list:
    """Check every ``step_s`` seconds for ``days``: a live worker's checks."""
    found = []
    for _ in range(round(days * 86_400 / step_s)):
        clock.advance(step_s / 86_400)
        found += checked.check()
    return found


def _kinds(alerts) -> list[tuple[str, str, float | None, bool]]:
    return [(a.student_id, str(a.kind), a.threshold_days, a.catch_up) for a in alerts]


def test_each_threshold_alerts_once_as_the_clock_passes_it():
    start = 1_796_000_000_000_000
    clock = _Clock(start)
    gone = _course("gone", start)
    checked = _checker(clock, [gone])

    found = _run(checked, clock, days=40)
    assert _kinds(found) == [
        ("gone", "inactive", 7.0, False),
        ("gone", "inactive", 14.0, False),
        ("gone", "inactive", 30.0, False),
    ]
    # Each within a check interval of its crossing, as seen by the moved clock.
    for alert in found:
        late = alert.detected_us - (start + round(alert.threshold_days * DAY_US))
        assert 0 <= late <= 30_000_000
    assert found[0].student_name == "Name of gone"


def test_finished_courses_are_silent_and_activity_rearms_the_thresholds():
    start = 1_796_000_000_000_000
    clock = _Clock(start)
    finished, back = _course("finished", start), _course("back", start)
    finished.course = [start, "f", 1]
    checked = _checker(clock, [finished, back])

    assert _kinds(_run(checked, clock, days=8)) == [("back", "inactive", 7.0, False)]

    # Back on day 9 (the event's sentDate a minute before the check sees it):
    # one reactivated alert, about the absence since start, with its length.
    clock.advance(1)
    returned = clock.now_us - 60_000_000
    back.counted["return"] = [returned, 0]
    back.last_seen_at = returned
    checked.put(back)
    [reactivated] = checked.check()
    assert _kinds([reactivated]) == [("back", "reactivated", 7.0, False)]
    assert reactivated.last_seen_us == start
    assert reactivated.days_inactive == (returned - start) / DAY_US
    assert checked.check() == []  # once

    # The thresholds count again from the return: 7 days after it, not before.
    found = _run(checked, clock, days=6.9)
    assert found == []
    [again] = _run(checked, clock, days=0.2)
    assert (again.threshold_days, again.last_seen_us) == (7.0, returned)
    assert again.alert_id != _alert_of(start)
    assert _run(checked, clock, days=1) == []


def test_an_alert_not_yet_recorded_is_not_raised_twice():
    start = 1_796_000_000_000_000
    clock = _Clock(start)
    checked = _checker(clock, [_course("slow", start)])
    clock.advance(7.001)
    [first] = checked.check(record=False)
    clock.advance(0.01)
    assert checked.check(record=False) == []
    # After a restart nothing remembers it: the same alert, the same id.
    rebuilt = _checker(clock, list(checked.courses.values()))
    [again] = rebuilt.check(record=False)
    assert again.alert_id == first.alert_id and again.threshold_days == 7.0


def test_never_started_once_n_days_after_registration_unless_active(tmp_path):
    from app.state import Student

    start = 1_796_000_000_000_000
    clock = _Clock(start)
    idle, busy, other = (
        Student(team, name, 0, created=[start, "e", start])
        for team, name in (("t", "idle"), ("t", "busy"), ("school-b", "other"))
    )
    busy.active = True
    checked = _checker(clock, [idle, busy, other], tmp_path, CONFIG)
    found = _run(checked, clock, days=10, step_s=60)
    assert [(a.student_id, str(a.kind), a.threshold_days) for a in found] == [
        ("other", "never_started", 2.0),  # school-b's own 2 days
        ("idle", "never_started", 4.0),  # the file's default
    ]
    assert [a.days_inactive for a in found] == [2.0, 4.0]
    assert not any(a.catch_up for a in found)


def test_recording_keeps_the_highest_and_ignores_older_alerts():
    from app.alert_flow import recorded

    def alert(kind, seen, threshold):
        return Alert(AlertKind(kind), "t", "s", "c", threshold, seen, seen + 1)

    assert recorded(None, alert("inactive", 5, 7.0)) == [5, 7.0, False]
    assert recorded([5, 14.0, False], alert("inactive", 5, 7.0)) == [5, 14.0, False]
    assert recorded([5, 7.0, False], alert("inactive", 5, 14.0)) == [5, 14.0, False]
    assert recorded([9, 7.0, False], alert("inactive", 5, 30.0)) == [9, 7.0, False]
    assert recorded([5, 7.0, False], alert("reactivated", 5, 7.0)) == [5, 7.0, True]
    assert recorded([5, 7.0, True], alert("inactive", 5, 7.0)) == [5, 7.0, True]
    assert recorded([9, 7.0, False], alert("reactivated", 5, 7.0)) == [9, 7.0, False]


def _alert_of(last_seen_us: int) -> str:
    return alert_id(AlertKind.INACTIVE, "t", "back", "c", 7.0, last_seen_us)


def test_catching_up_gives_one_alert_per_key_the_highest_crossed():
    start = 1_796_000_000_000_000
    clock = _Clock(start + 20 * DAY_US)
    keys = [_course("twenty", start), _course("ten", start + 10 * DAY_US)]
    keys.append(_course("fresh", start + 19 * DAY_US))
    checked = _checker(clock, keys)

    alerts = checked.check(catching_up=True)
    assert sorted(_kinds(alerts)) == [
        ("ten", "inactive", 7.0, True),
        ("twenty", "inactive", 14.0, True),
    ]
    # From then on, each next crossing once, as it comes: ten's 14 days on
    # day 24, fresh's 7 on day 26, twenty's 30 on day 30.
    expected = {23.9: [], 24.1: [("ten", 14.0)], 26.1: [("fresh", 7.0)]}
    expected[30.1] = [("twenty", 30.0)]
    for day, alerts in expected.items():
        clock.now_us = start + round(day * DAY_US)
        found = checked.check()
        assert [(a.student_id, a.threshold_days) for a in found] == alerts, day


def test_thresholds_per_school_and_course(tmp_path):
    start = 1_796_000_000_000_000
    clock = _Clock(start)
    keys = [
        _course("quick", start, course="quick", team="school-a"),
        _course("a", start, course="other", team="school-a"),
        _course("b", start, team="school-b"),
    ]
    checked = _checker(clock, keys, tmp_path, CONFIG)
    found = _run(checked, clock, days=12)
    assert _kinds(found) == [
        ("quick", "inactive", 1.5, False),
        ("a", "inactive", 5.0, False),
        ("b", "inactive", 7.0, False),
        ("a", "inactive", 10.0, False),
    ]


def test_a_check_reads_only_the_keys_that_are_due():
    start = 1_796_000_000_000_000
    rng = random.Random(3)
    clock = _Clock(start)
    keys = [
        _course(f"s{n}", start - rng.randrange(0, 40 * DAY_US)) for n in range(20_000)
    ]
    checked = _checker(clock, keys)
    checked.check(catching_up=True)  # what was already due at start
    checked.courses.lookups.clear()

    clock.advance(0.5)
    alerts = checked.check()
    now = clock.now_us
    crossings = [
        (state.student_id, t)
        for state in keys
        for t in (7, 14, 30)
        if start < state.last_seen_at + t * DAY_US <= now
    ]
    assert sorted((a.student_id, a.threshold_days) for a in alerts) == sorted(crossings)
    lookups = checked.courses.lookups
    assert len(lookups) == len({student for student, _ in crossings})
    assert len(lookups) < len(keys) / 20


def test_a_check_limit_leaves_the_rest_due_for_the_next_checks():
    from app.alert_flow import alert_key, recorded

    start = 1_796_000_000_000_000
    clock = _Clock(start + 8 * DAY_US)
    keys = [_course(f"s{n}", start + n) for n in range(2_500)]
    checked = _checker(clock, keys)
    found = []
    for _ in range(3):
        alerts = checked.checker.check(
            0, checked.courses.lookup, checked.students.lookup, True, limit=1_000
        )
        found.append(len(alerts))
        for alert in alerts:  # recorded, as the topic's handler does
            state = checked.courses[alert_key(alert)]
            state.alerted = recorded(state.alerted, alert)
            checked.put(state)
    assert found == [1_000, 1_000, 500]
    assert not checked.checker.has_due(0)
    assert checked.check() == []


@pytest.mark.parametrize(
    "change",
    [
        {"course_id": None},
        {"team_id": ["maria@example.org"]},
        {"threshold_days": "7"},
        {"threshold_days": None},
        {"student_name": 5},
        {"version": "Maria Silva <maria@example.org>"},
        {"detected_at": "Maria Silva maria@example.org"},
        {"kind": "maria@example.org"},
        {"alert_id": "maria@example.org"},
        {"last_seen_at": "9999-12-31T23:59:59-10:00"},  # year 10000 in UTC
        {"detected_at": "0001-01-01T00:00:00+14:00"},
    ],
)
def test_a_record_that_is_not_an_alert_is_refused_without_its_values(change):
    alert = Alert(AlertKind.INACTIVE, "t", "s", "c", 7.0, 5, 6, False, "Maria", "m@x")
    record = {**json.loads(alert.to_json()), **change}
    with pytest.raises(ValueError, match="not an alert") as refused:
        Alert.from_json(json.dumps(record).encode())
    assert "maria" not in str(refused.value).lower()


def test_alerts_read_back_as_written():
    for alert in (
        Alert(AlertKind.INACTIVE, "t", "s", "c", 7.0, 5, 6, True, "Maria", "m@x"),
        Alert(AlertKind.NEVER_STARTED, "t", "s", None, 3.0, 5, 9, False, None, None),
        Alert(AlertKind.REACTIVATED, "t", "s", "c", 14.0, 5, 9, active_again_us=8),
    ):
        assert Alert.from_json(alert.to_json()) == alert


def test_while_history_arrives_only_live_crossings_alert_the_rest_wait():
    start = 1_796_000_000_000_000
    clock = _Clock(start)
    # "old" crossed 14 days a day ago (history just folded in); "live"
    # crosses 7 days 10 s from now; "never" registered 5 days ago, idle.
    from app.state import Student

    old = _course("old", start - 15 * DAY_US)
    live = _course("live", start - 7 * DAY_US + 10_000_000)
    never = Student("t", "never", 0, created=[0, "e", start - 5 * DAY_US])
    checked = _checker(clock, [old, live, never])

    def check(hold: bool) -> list:
        return checked.checker.check(
            0, checked.courses.lookup, checked.students.lookup, False, None, hold
        )

    assert check(hold=True) == []
    clock.advance(20 / 86_400)
    assert _kinds(check(hold=True)) == [("live", "inactive", 7.0, False)]
    assert check(hold=True) == []  # the held ones stay held
    assert checked.checker.has_due(0)
    checked.put(never)  # folded again meanwhile: in the index and held
    checked.put(old)
    held = check(hold=False)
    assert sorted(_kinds(held)) == [
        ("never", "never_started", 3.0, True),
        ("old", "inactive", 14.0, True),
    ]
    assert check(hold=False) == []
