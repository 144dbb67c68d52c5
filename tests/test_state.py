"""The folding rules, on events built by hand."""

from itertools import permutations

from app.state import (
    DAY_US,
    HORIZON_DAYS,
    CourseActivity,
    Student,
    alert_summary,
    migrate,
    register_value,
)
from engagement.events import StudentEvent


def _event(event_id: str, name: str, at: int, **refs: str) -> StudentEvent:
    return StudentEvent(
        event_id=event_id,
        name=name,
        sent_us=at,
        team_id="t1",
        student_id="s1",
        course_id="c1",
        module_id=refs.get("module"),
        lesson_id=refs.get("lesson"),
        student_name=refs.get("student_name"),
        student_email=None,
        course_name=None,
        team_name=None,
        created_us=refs.get("created", at),
    )


def _state() -> CourseActivity:
    return CourseActivity("t1", "s1", "c1", partition=3)


def _fold(events: list[StudentEvent]) -> CourseActivity:
    state = _state()
    for event in events:
        state.apply(event, body_fingerprint=hash(event.event_id))
    return state


TOGGLES = [
    _event("a", "student_lesson_finished", 10, lesson="l1"),
    _event("b", "student_lesson_unfinished", 20, lesson="l1"),
    _event("c", "student_lesson_finished", 30, lesson="l1"),
    _event("d", "student_lesson_finished", 15, lesson="l2"),
    _event("e", "student_lesson_unfinished", 25, lesson="l2"),
    _event("f", "student_course_finished", 40),
]


def test_toggles_resolve_the_same_in_every_order():
    results = {
        (s.lessons_finished, s.course_finished, s.last_event[2])
        for s in (_fold(list(order)) for order in permutations(TOGGLES))
    }
    assert results == {(1, True, "student_course_finished")}


def test_equal_times_are_ordered_by_event_id():
    late = _event("b", "student_lesson_unfinished", 10, lesson="l1")
    early = _event("a", "student_lesson_finished", 10, lesson="l1")
    assert _fold([late, early]).lessons_finished == 0
    assert _fold([early, late]).lessons_finished == 0


def test_a_redelivery_changes_nothing_and_a_reused_id_is_a_conflict():
    state = _state()
    event = _event("a", "student_course_last_seen", 10)
    assert state.apply(event, body_fingerprint=1) == "counted"
    before = state.dumps()

    assert state.apply(event, body_fingerprint=1) == "redelivery"
    assert state.apply(event, body_fingerprint=2) == "conflict"
    assert state.dumps() == before


def test_daily_buckets_land_in_the_event_day():
    state = _fold(
        [
            _event("a", "student_course_last_seen", 5 * DAY_US + 1),
            _event("b", "student_comment_created", 3 * DAY_US + 7, lesson="l"),
            _event("c", "student_lesson_finished", 5 * DAY_US + 9, lesson="l"),
        ]
    )
    assert state.days == {5: [2, 1, 1, 0], 3: [1, 0, 0, 1]}
    assert (state.first_seen_at, state.last_seen_at) == (3 * DAY_US + 7, 5 * DAY_US + 9)


def test_ids_and_days_beyond_the_horizon_are_let_go():
    old = _event("old", "student_course_last_seen", 0)
    recent = _event("recent", "student_course_last_seen", HORIZON_DAYS * DAY_US)
    new = _event("new", "student_course_last_seen", (HORIZON_DAYS + 1) * DAY_US)
    state = _fold([old, recent, new])
    assert set(state.counted) == {"recent", "new"}
    assert set(state.days) == {HORIZON_DAYS, HORIZON_DAYS + 1}
    assert state.activity_events == 3


def test_days_let_go_wait_for_a_snapshot_then_go():
    first = _event("first", "student_course_last_seen", 2 * DAY_US + 5)
    second = _event("second", "student_lesson_finished", 2 * DAY_US + 9, lesson="l")
    late = _event("late", "student_course_last_seen", (HORIZON_DAYS + 3) * DAY_US)
    state = _fold([first, second, late])
    assert 2 not in state.days
    # Day 2 had two events, a visit and a finish; released by "late".
    [(day, by, activity, visits, finishes, comments, folded_at)] = state.released
    assert (day, by, activity, visits, finishes, comments) == (
        2,
        late.sent_us,
        2,
        1,
        1,
        0,
    )
    # A snapshot read before the fold does not have it: it stays.
    after = _event("after", "student_course_last_seen", (HORIZON_DAYS + 4) * DAY_US)
    state.apply(after, 1, snapshotted_before_us=folded_at)
    assert len(state.released) == 1
    # One read after it has it: the next fold lets it go.
    again = _event("again", "student_course_last_seen", (HORIZON_DAYS + 4) * DAY_US)
    state.apply(again, 2, snapshotted_before_us=folded_at + 1)
    assert state.released == []


def test_record_round_trips():
    state = _fold(TOGGLES)
    assert CourseActivity.loads(state.dumps()) == state
    released = _fold(
        [
            _event("a", "student_course_last_seen", 0),
            _event("b", "student_course_last_seen", (HORIZON_DAYS + 1) * DAY_US),
        ]
    )
    assert released.released
    assert CourseActivity.loads(released.dumps()) == released


def test_the_alert_summary_reads_what_a_full_load_reads():
    # A name holding the very bytes the summary looks for, and each kind of
    # alerted value; finished and unfinished courses.
    tricky = '"alerted":[1,2,true]}'
    for events, alerted in (
        (TOGGLES, None),
        (TOGGLES[:3], [30, 7.0, False]),
        (TOGGLES[:2], [20, 14.5, True]),
    ):
        state = _fold(
            [*events, _event("n", "student_lesson_last_seen", 5, student_name=tricky)]
        )
        state.alerted = alerted
        full = CourseActivity.loads(state.dumps())
        summary = alert_summary(state.dumps())
        assert register_value(full.student_name) == tricky
        for field in ("team_id", "student_id", "course_id", "partition"):
            assert getattr(summary, field) == getattr(full, field)
        assert (summary.first_seen_at, summary.last_seen_at) == (
            full.first_seen_at,
            full.last_seen_at,
        )
        assert summary.course_finished == full.course_finished
        assert summary.alerted == alerted


def test_version_2_records_load():
    v2 = {
        "v": 2,
        "key": ["t1", "s1", "c1"],
        "p": 2,
        "seen": [5, 9],
        "n": [2, 1, True],
        "lessons": {"l1": [5, "a", 1], "l2": [6, "b", 0]},
        "modules": {},
        "favorites": {},
        "course": None,
        "last": [9, "b", "student_lesson_finished"],
        "names": [[9, "b", "Ana"], None, None, None],
        "days": {"0": [2, 0, 1, 1]},
        "ids": {"a": [5, 1], "b": [9, 2]},
    }
    import orjson

    state = CourseActivity.loads(orjson.dumps(v2))
    assert (state.partition, state.first_seen_at, state.last_seen_at) == (2, 5, 9)
    assert (state.activity_events, state.comments, state.lessons_finished) == (2, 1, 1)
    assert state.days == {0: [2, 0, 1, 1]} and state.released == []
    assert state.student_name[2] == "Ana" and set(state.counted) == {"a", "b"}
    assert CourseActivity.loads(state.dumps()) == state


def test_version_1_records_migrate():
    v1 = {
        "v": 1,
        "team": "t1",
        "student": "s1",
        "course": "c1",
        "p": 2,
        "first": 5,
        "last": 9,
        "n": 2,
        "ids": {"a": 5, "b": 9},
    }
    record = migrate(v1)
    assert record["seen"] == [5, 9] and record["n"][0] == 2
    assert set(record["ids"]) == {"a", "b"}


def test_student_keeps_the_latest_name_and_registration():
    student = Student("t1", "s1", partition=0)
    student.apply(_event("b", "student_course_last_seen", 20, student_name="New"))
    student.apply(_event("a", "student_created", 10, student_name="Old", created=7))
    assert student.student_name[2] == "New"
    assert student.created[2] == 7
    assert Student.loads(student.dumps()) == student
