import calendar
import json
from datetime import UTC, datetime

import pytest

from engagement.events import (
    EVENT_ALIASES,
    InvalidBody,
    decode_event,
    epoch_us,
    parse_body,
    strip_personal_data,
)


def _body(**overrides: object) -> bytes:
    body = {
        "id": "4c832x3ynl8dwe7454941xzr5",
        "event": "alpaclass.student_course_last_seen",
        "sentDate": "2024-06-12T12:00:10.000Z",
        "data": {
            "student": {"id": "s1", "name": "Fulana", "email": "f@example.org"},
            "course": {"id": "c1", "name": "Curso"},
            "team": {"id": "t1", "name": "Escola"},
        },
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_every_fixture_body_parses(fixtures_dir):
    for path in sorted((fixtures_dir / "alpaclass").glob("*.json")):
        raw = path.read_bytes()
        envelope, document = parse_body(raw)

        assert envelope.id == json.loads(raw)["id"]
        expected_name = path.stem
        if expected_name == "ping":
            assert envelope.is_ping
        else:
            assert envelope.canonical_event == expected_name


def test_thirteen_canonical_events_behind_the_aliases():
    assert len(set(EVENT_ALIASES.values())) == 13


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("student_course_last_seen_at", "student_course_last_seen"),
        ("student_lesson_last_seen_at", "student_lesson_last_seen"),
        ("student_access_course", "student_course_last_seen"),
        ("student_marked_lesson_as_read", "student_lesson_finished"),
        ("student_completed_course", "student_course_finished"),
    ],
)
def test_drifted_names_map_to_todays(spelling, canonical):
    lesson = {"lesson": {"id": "l1"}, "module": {"id": "m1"}}
    raw = _body(event=f"alpaclass.{spelling}")
    document = json.loads(raw)
    document["data"].update(lesson)
    envelope, _ = parse_body(json.dumps(document).encode())
    assert envelope.canonical_event == canonical


def test_numeric_ids_are_the_same_ids_as_strings():
    document = json.loads(_body(id=68))
    document["data"]["student"]["id"] = 501
    document["data"]["team"]["id"] = 9001
    envelope, _ = parse_body(json.dumps(document).encode())

    assert envelope.id == "68"
    assert envelope.data.student.id == "501"
    assert envelope.partition_key() == b"9001:501"


def test_offsets_and_missing_milliseconds_become_utc():
    envelope, _ = parse_body(_body(sentDate="2026-11-28T21:00:00-03:00"))
    assert envelope.sentDate == datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
    assert (
        epoch_us(envelope.sentDate) == calendar.timegm((2026, 11, 29, 0, 0, 0)) * 10**6
    )


def test_unknown_alpaclass_and_other_products_are_not_engagement():
    unknown, _ = parse_body(_body(event="alpaclass.student_did_something_new"))
    nutror, _ = parse_body(_body(event="nutror.lesson_watched", data={}))
    assert unknown.canonical_event is None
    assert nutror.canonical_event is None


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "not valid JSON"),
        (b'{"id": "x", "event": "ping",}', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not a JSON list"),
        (b'"ping"', "not a JSON str"),
        (_body(sentDate="yesterday"), "sentDate"),
        (_body(sentDate="2026-11-20T10:00:00"), "sentDate"),
        (_body(sentDate="9999-12-31T23:00:00-05:00"), "sentDate"),
        (_body(sentDate=1_700_000_000_000), "sentDate"),
        (_body(id=True), "id"),
        (_body(id=""), "id"),
        (_body(data=[]), "data"),
    ],
)
def test_bad_bodies_say_what_is_wrong(raw, fragment):
    with pytest.raises(InvalidBody) as caught:
        parse_body(raw)
    assert fragment in caught.value.reason


def test_an_activity_event_without_its_course_is_refused():
    document = json.loads(_body())
    del document["data"]["course"]
    with pytest.raises(InvalidBody, match="data.course"):
        parse_body(json.dumps(document).encode())


def test_errors_never_echo_the_input():
    document = json.loads(_body())
    document["data"]["student"]["id"] = {"name": "Maria Secreta"}
    with pytest.raises(InvalidBody) as caught:
        parse_body(json.dumps(document).encode())
    assert "Maria Secreta" not in caught.value.reason
    assert "Maria Secreta" not in json.dumps(caught.value.details)


def test_document_and_phone_are_removed(fixtures_dir):
    raw = (fixtures_dir / "alpaclass" / "student_created.json").read_bytes()
    _, document = parse_body(raw)
    student = strip_personal_data(document)["data"]["student"]
    assert "document" not in student and "phone" not in student
    assert student["email"] == json.loads(raw)["data"]["student"]["email"]


def _both(raw: bytes):
    """What parse_body and decode_event make of raw: both accept or both refuse."""
    try:
        envelope, _ = parse_body(raw)
    except InvalidBody:
        envelope = None
    try:
        event = decode_event(raw)
        decoded = True
    except InvalidBody:
        event, decoded = None, False
    return envelope, decoded, event


def test_the_fast_path_agrees_with_the_model_on_the_fixtures(fixtures_dir):
    bodies = [p.read_bytes() for p in (fixtures_dir / "alpaclass").glob("*.json")]
    for name in ("alpaclass-sample.jsonl", "alpaclass-tricky.jsonl"):
        bodies += (fixtures_dir / name).read_bytes().splitlines()

    for raw in bodies:
        envelope, decoded, event = _both(raw)
        assert decoded == (envelope is not None)
        if event is None:
            assert envelope is None or envelope.canonical_event is None
            continue
        assert event.event_id == envelope.id
        assert event.name == envelope.canonical_event
        assert event.sent_us == epoch_us(envelope.sentDate)
        assert event.team_id == envelope.team_id
        assert event.student_id == envelope.data.student.id


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"null",
        _body(id=None),
        _body(id=1.5),
        _body(id=" \t "),
        _body(event=""),
        _body(event=7),
        _body(sentDate=1700000000),
        _body(sentDate="2026-11-20"),
        _body(data=None),
        _body(data={"student": "s1"}),
        _body(data={"student": {"id": "s1", "name": 3}}),
        _body(data={"student": {"id": "s1", "createdAt": "soon"}}),
        _body(data={"student": {"id": "s1"}, "course": {"name": "no id"}}),
        _body(event="nutror.x", data={"course": []}),
        _body(event="alpaclass.student_lesson_finished"),
    ],
)
def test_the_fast_path_agrees_with_the_model_on_bad_bodies(raw):
    envelope, decoded, _ = _both(raw)
    assert decoded == (envelope is not None)


def test_a_body_that_does_not_parse_loses_its_cpf_and_phone():
    from engagement.events import scrub_personal_text

    broken = (
        b'{"id": "x", "data": {"student": {"name": "Ana", "document": "987.654.321-00",'
        b' "phone" : 5511987654321, "email": "a@example.org",},'
        b' "other": {"document":"with \\"quotes\\" inside"}}'
    )
    scrubbed = scrub_personal_text(broken)
    assert b"987.654.321-00" not in scrubbed and b"5511987654321" not in scrubbed
    assert b"quotes" not in scrubbed
    assert b'"document": null' in scrubbed and b'"phone" : null' in scrubbed
    # The rest stays as it came, for whoever looks into why it was refused.
    assert scrubbed.replace(b"null", b"") == (
        broken.replace(b'"987.654.321-00"', b"")
        .replace(b"5511987654321", b"")
        .replace(b'"with \\"quotes\\" inside"', b"")
    )
