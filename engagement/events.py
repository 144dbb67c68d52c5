"""The AlpaClass webhook envelope, and what each event means for engagement.

One model serves the receiver (which refuses what it cannot key) and the worker
(which never trusts the topic blindly: a body may have been written by an older
receiver or by hand).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
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


def _id_to_str(value: object) -> object:
    # Older drafts sent ids as JSON numbers: "68" and 68 are the same id.
    # bool is an int in Python, and True is no id.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Id = Annotated[
    str,
    BeforeValidator(_id_to_str),
    StringConstraints(strip_whitespace=True, min_length=1, pattern=r"^[^\x00-\x1f]+$"),
]


class Ref(BaseModel):
    """A ``{"id", "name"}`` object of ``data``: a lesson, module, course or team."""

    model_config = ConfigDict(extra="allow")

    id: Id
    name: str | None = None


class StudentRef(Ref):
    email: str | None = None
    createdAt: AwareDatetime | None = None  # noqa: N815 - the payload's spelling


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
    sentDate: AwareDatetime  # noqa: N815 - the payload's spelling
    data: EventData

    @field_validator("sentDate")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def is_ping(self) -> bool:
        return self.event == PING

    @property
    def canonical_event(self) -> str | None:
        """Today's name of an AlpaClass student event, or None for anything else."""
        if not self.event.startswith(ALPACLASS_PREFIX):
            return None
        return EVENT_ALIASES.get(self.event[len(ALPACLASS_PREFIX) :])

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
        missing = [] if self.data.student else ["data.student"]
        missing += [
            f"data.{ref}"
            for ref in REQUIRED_REFS[canonical]
            if getattr(self.data, ref) is None
        ]
        return missing

    def partition_key(self) -> bytes | None:
        """``<team id>:<student id>``, so one student's events stay in order."""
        if self.data.student is None:
            return None
        return f"{self.team_id}:{self.data.student.id}".encode()


class InvalidBody(ValueError):
    """A signed body that is not a usable webhook; ``reason`` says why."""

    def __init__(self, reason: str, details: list[dict[str, Any]] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.details = details or []


def describe_validation_error(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without the offending input, which may be personal data."""
    return [
        {"field": ".".join(str(part) for part in item["loc"]), "problem": item["msg"]}
        for item in error.errors(include_url=False, include_input=False)
    ]


def parse_body(raw: bytes) -> tuple[Envelope, dict[str, Any]]:
    """Parse and validate a raw body; return the model and the parsed JSON.

    Raises InvalidBody with a reason a school's operator can act on.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidBody(f"body is not valid JSON: {error}") from None
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
        raise InvalidBody(
            f"{envelope.event} lacks what its key needs: {', '.join(missing)}"
        )
    return envelope, document


def strip_personal_data(document: dict[str, Any]) -> dict[str, Any]:
    """Remove ``document`` and ``phone`` of the student, in place; return it."""
    data = document.get("data")
    student = data.get("student") if isinstance(data, dict) else None
    if isinstance(student, dict):
        for field in DROPPED_STUDENT_FIELDS:
            student.pop(field, None)
    return document
