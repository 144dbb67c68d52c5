from app.state import DAY_US, DEDUP_HORIZON_US, CourseActivity


def _state() -> CourseActivity:
    return CourseActivity("t1", "s1", "c1", partition=3)


def test_min_max_and_count_whatever_the_order():
    state = _state()
    for event_id, at in (("b", 20), ("a", 10), ("c", 30), ("d", 15)):
        assert state.apply_activity(event_id, at)
    assert (state.first_seen_at, state.last_seen_at, state.activity_events) == (
        10,
        30,
        4,
    )


def test_a_redelivery_changes_nothing():
    state = _state()
    state.apply_activity("a", 10)
    before = state.dumps()
    assert not state.apply_activity("a", 10)
    assert state.dumps() == before


def test_record_round_trips():
    state = _state()
    state.apply_activity("a", 10)
    state.apply_activity("b", 7)
    assert CourseActivity.loads(state.dumps()) == state


def test_ids_beyond_the_horizon_are_forgotten_and_recent_ones_kept():
    state = _state()
    state.apply_activity("old", 0)
    state.apply_activity("recent", DEDUP_HORIZON_US)
    state.apply_activity("new", DEDUP_HORIZON_US + DAY_US)
    assert set(state.counted) == {"recent", "new"}
    assert state.activity_events == 3
