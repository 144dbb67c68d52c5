"""The AlpaClass webhook envelope, and what each event means for engagement.

One model serves the receiver (which refuses what it cannot key) and the worker
(which never trusts the topic blindly: a body may have been written by an older
receiver or by hand).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
)

ALPACLASS_PREFIX = "alpaclass."
PING = "ping"
STUDENT_CREATED = "student_created"

# Today's thirteen student events, each with every spelling seen in the public
# docs and in the 2024 drafts. The value is the canonical name.
EVENT_ALIASES: dict[str, str] = {
    "student_created": "student_created",
    "student_course_last_seen": "student_course_last_seen",
    "student_course_last_seen_at": "student_course_last_seen",
    "student_access_course": "student_course_last_seen",
    "student_lesson_last_seen": "student_lesson_last_seen",
    "student_lesson_last_seen_at": "student_lesson_last_seen",
    "student_lesson_finished": "student_lesson_finished",
    "student_marked_lesson_as_watched": "student_lesson_finished",
    "student_marked_lesson_as_read": "student_lesson_finished",
    "student_lesson_unfinished": "student_lesson_unfinished",
    "student_module_finished": "student_module_finished",
    "student_finished_module": "student_module_finished",
    "student_module_unfinished": "student_module_unfinished",
    "student_course_finished": "student_course_finished",
    "student_completed_course": "student_course_finished",
    "student_course_unfinished": "student_course_unfinished",
    "student_lesson_marked_as_favorite": "student_lesson_marked_as_favorite",
    "student_marked_lesson_as_favorite": "student_lesson_marked_as_favorite",
    "student_lesson_unmarked_as_favorite": "student_lesson_unmarked_as_favorite",
    "student_comment_created": "student_comment_created",
    "student_commented_on_lesson": "student_comment_created",
    "student_certificate_accessed": "student_certificate_accessed",
    "student_access_certificate": "student_certificate_accessed",
}

# Fields of ``data`` each canonical event needs beyond the student, to be keyed
# and counted. Every event but student_created belongs to a course.
REQUIRED_REFS: dict[str, tuple[str, ...]] = {
    name: ("course",) for name in set(EVENT_ALIASES.values())
}
REQUIRED_REFS[STUDENT_CREATED] = ()
for _name in (
    "student_lesson_last_seen",
    "student_lesson_finished",
    "student_lesson_unfinished",
    "student_lesson_marked_as_favorite",
    "student_lesson_unmarked_as_favorite",
    "student_comment_created",
):
    REQUIRED_REFS[_name] = ("course", "lesson")
for _name in ("student_module_finished", "student_module_unfinished"):
    REQUIRED_REFS[_name] = ("course", "module")

# Personal data the product never needs; removed before a body goes anywhere.
DROPPED_STUDENT_FIELDS = ("document", "phone")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(moment: datetime) -> int:
    """Exact microseconds since the epoch (float timestamps round)."""
    return (moment - _EPOCH) // _MICROSECOND


# The primitives below are shared by the pydantic models (the receiver, which
# explains its refusals) and decode_event (the worker's fast path), so both
# accept exactly the same bodies.


def normalize_id(value: object) -> str:
    """An id as a string: older drafts sent JSON numbers, and "68" is 68."""
    # bool is an int in Python, and True is no id.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError("must be a string or an integer")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


def parse_instant(value: object) -> datetime:
    """An ISO 8601 instant with a UTC offset (``Z`` or ``±hh:mm``), as UTC."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("is not an ISO 8601 date and time") from None
    if moment.tzinfo is None:
        raise ValueError("must include a UTC offset, e.g. Z or -03:00")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00
        raise ValueError("lies outside the years 1 to 9999 in UTC") from None


def canonical_name(event: str) -> str | None:
    """Today's name of an AlpaClass student event, or None for anything else."""
    if not event.startswith(ALPACLASS_PREFIX):
        return None
    return EVENT_ALIASES.get(event[len(ALPACLASS_PREFIX) :])


def missing_key_fields(canonical: str, present: Callable[[str], bool]) -> list[str]:
    """The fields of ``data`` a student event lacks to be keyed and counted."""
    needed = ("student", *REQUIRED_REFS[canonical])
    return [f"data.{ref}" for ref in needed if not present(ref)]


def lacks_key_fields(event: str, missing: list[str]) -> InvalidBody:
    return InvalidBody(f"{event} lacks what its key needs: {', '.join(missing)}")


Id = Annotated[str, BeforeValidator(normalize_id)]
Instant = Annotated[datetime, BeforeValidator(parse_instant)]


class Ref(BaseModel):
    """A ``{"id", "name"}`` object of ``data``: a lesson, module, course or team."""

    model_config = ConfigDict(extra="allow")

    id: Id
    name: str | None = None


class StudentRef(Ref):
    email: str | None = None
    createdAt: Instant | None = None  # noqa: N815 - the payload's spelling


class EventData(BaseModel):
    model_config = ConfigDict(extra="allow")

    student: StudentRef | None = None
    team: Ref | None = None
    course: Ref | None = None
    module: Ref | None = None
    lesson: Ref | None = None


class Envelope(BaseModel):
    """The four keys every Eduzz webhook body has."""

    model_config = ConfigDict(extra="allow")

    id: Id
    event: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    sentDate: Instant  # noqa: N815 - the payload's spelling
    data: EventData

    @property
    def is_ping(self) -> bool:
        return self.event == PING

    @property
    def canonical_event(self) -> str | None:
        """Today's name of an AlpaClass student event, or None for anything else."""
        return canonical_name(self.event)

    @property
    def team_id(self) -> str:
        # The 2024 drafts carried no team: such events belong to the one school
        # of the deployment, written as the empty team id.
        return self.data.team.id if self.data.team else ""

    def missing_refs(self) -> list[str]:
        """What an AlpaClass student event lacks to be keyed; empty when complete."""
        canonical = self.canonical_event
        if canonical is None:
            return []
        return missing_key_fields(
            canonical, lambda ref: getattr(self.data, ref) is not None
        )

    def partition_key(self) -> bytes | None:
        """``<team id>:<student id>``, so one student's events stay in order."""
        if self.data.student is None:
            return None
        return f"{self.team_id}:{self.data.student.id}".encode()


class InvalidBody(ValueError):
    """A signed body that is not a usable webhook; ``reason`` says why."""

    def __init__(
        self,
        reason: str,
        details: list[dict[str, Any]] | None = None,
        kind: str | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.details = details or []
        self._kind = kind

    @property
    def kind(self) -> str:
        """A short, bounded name of the problem, for metrics."""
        if self._kind is not None:
            return self._kind
        if "not UTF-8" in self.reason:
            return "not_utf8"
        if "not valid JSON" in self.reason:
            return "not_json"
        if "must be a JSON object" in self.reason:
            return "not_object"
        if "lacks what its key needs" in self.reason:
            return "missing_key_fields"
        return "not_envelope"


def describe_validation_error(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without the offending input, which may be personal data."""
    return [
        {"field": ".".join(str(part) for part in item["loc"]), "problem": item["msg"]}
        for item in error.errors(include_url=False, include_input=False)
    ]


def _load_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidBody(
                f"body is not UTF-8 (invalid byte at position {bad.start})"
            ) from None
        raise InvalidBody(f"body is not valid JSON: {error}") from None


def parse_body(raw: bytes) -> tuple[Envelope, dict[str, Any]]:
    """Parse and validate a raw body; return the model and the parsed JSON.

    Raises InvalidBody with a reason a school's operator can act on.
    """
    document = _load_json(raw)
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise InvalidBody(f"body must be a JSON object, not a JSON {kind}")

    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as error:
        details = describe_validation_error(error)
        fields = ", ".join(sorted({item["field"] for item in details}))
        raise InvalidBody(
            f"body is not a webhook envelope ({fields})", details
        ) from None

    missing = envelope.missing_refs()
    if missing:
        raise lacks_key_fields(envelope.event, missing)
    return envelope, document


# "document" or "phone" and its value (a string, a number or null) in the text
# of a body, wherever they are; for bodies that do not parse.
_PERSONAL_TEXT = re.compile(
    rb'("(?:' + b"|".join(f.encode() for f in DROPPED_STUDENT_FIELDS) + rb')"\s*:\s*)'
    rb'(?:"(?:[^"\\]|\\.)*"|[-+0-9.eE]+|null)'
)


def scrub_personal_text(raw: bytes) -> bytes:
    """A body that is not JSON, with the values of document and phone blanked.

    For what cannot be parsed (a trailing comma, a cut body): every
    ``"document": ...`` and ``"phone": ...`` in the text keeps its key and
    loses its value, so that a rejected body never carries a CPF or a phone.
    """
    return _PERSONAL_TEXT.sub(rb"\1null", raw)


def strip_personal_data(document: dict[str, Any]) -> dict[str, Any]:
    """Remove ``document`` and ``phone`` of the student, in place; return it."""
    data = document.get("data")
    student = data.get("student") if isinstance(data, dict) else None
    if isinstance(student, dict):
        for field in DROPPED_STUDENT_FIELDS:
            student.pop(field, None)
    return document


@dataclass(slots=True)
class StudentEvent:
    """What the worker needs of an AlpaClass student event; times in epoch µs."""

    event_id: str
    name: str  # canonical, without "alpaclass."
    sent_us: int
    team_id: str
    student_id: str
    course_id: str | None
    module_id: str | None
    lesson_id: str | None
    student_name: str | None
    student_email: str | None
    course_name: str | None
    team_name: str | None
    created_us: int | None  # student_created: createdAt, else sentDate


_REF_FIELDS = ("student", "team", "course", "module", "lesson")


def _ref(data: dict[str, Any], field: str) -> dict[str, Any] | None:
    ref = data.get(field)
    if ref is None:
        return None
    if type(ref) is not dict:
        raise InvalidBody(f"body is not a webhook envelope (data.{field})")
    ref_id = ref.get("id")
    # Most ids arrive as normalize_id would return them: a printable string's
    # only strippable character is the space.
    if not (
        type(ref_id) is str
        and ref_id.isprintable()
        and ref_id[:1] not in ("", " ")
        and ref_id[-1] != " "
    ):
        try:
            ref["id"] = normalize_id(ref_id)
        except ValueError:
            raise InvalidBody(
                f"body is not a webhook envelope (data.{field}.id)"
            ) from None
    for text in ("name", "email") if field == "student" else ("name",):
        value = ref.get(text)
        if value is not None and type(value) is not str:
            raise InvalidBody(f"body is not a webhook envelope (data.{field}.{text})")
    return ref


def decode_event(raw: bytes) -> StudentEvent | None:
    """The worker's fast path: the same rules as parse_body, without pydantic.

    Returns None for a valid body that is not an AlpaClass student event (a
    ping, another product, a name nobody knows yet); raises InvalidBody for
    anything parse_body would refuse.
    """
    document = _load_json(raw)
    if type(document) is not dict:
        kind = type(document).__name__
        raise InvalidBody(f"body must be a JSON object, not a JSON {kind}")

    problems = []
    try:
        event_id = normalize_id(document.get("id"))
    except ValueError:
        problems.append("id")
    event = document.get("event")
    if type(event) is not str or not event.strip():
        problems.append("event")
    try:
        sent = parse_instant(document.get("sentDate"))
    except ValueError:
        problems.append("sentDate")
    data = document.get("data")
    if type(data) is not dict:
        problems.append("data")
    if problems:
        raise InvalidBody(f"body is not a webhook envelope ({', '.join(problems)})")

    refs = {field: _ref(data, field) for field in _REF_FIELDS}
    student = refs["student"]
    if student is not None and student.get("createdAt") is not None:
        try:
            created = parse_instant(student["createdAt"])
        except ValueError:
            raise InvalidBody(
                "body is not a webhook envelope (data.student.createdAt)"
            ) from None
    else:
        created = None

    event = event.strip()
    canonical = canonical_name(event)
    if canonical is None:
        return None
    missing = missing_key_fields(canonical, lambda ref: refs[ref] is not None)
    if missing:
        raise lacks_key_fields(event, missing)

    team, course = refs["team"], refs["course"]
    module, lesson = refs["module"], refs["lesson"]
    sent_us = epoch_us(sent)
    return StudentEvent(
        event_id=event_id,
        name=canonical,
        sent_us=sent_us,
        team_id=team["id"] if team else "",
        student_id=student["id"],
        course_id=course["id"] if course else None,
        module_id=module["id"] if module else None,
        lesson_id=lesson["id"] if lesson else None,
        student_name=student.get("name"),
        student_email=student.get("email"),
        course_name=course.get("name") if course else None,
        team_name=team.get("name") if team else None,
        created_us=epoch_us(created) if created else sent_us,
    )
