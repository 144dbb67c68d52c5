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
