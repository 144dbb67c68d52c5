"""Inactivity alerts: what is due for a key at a given time, and the alert itself.

The rules here are pure: the worker's check (app.alert_checker) feeds them
each due key's last-seen time, the highest threshold already alerted for it
and the wall clock, and sends what they return. A key is alerted once per
threshold it crosses for one last-seen time; after a backfill or downtime
(``catch_up``) only the highest threshold crossed meanwhile is alerted, so a
student gone for a month gets one alert, not three.

An alert's id is derived from what it is about (kind, team, student, course,
threshold and the last-seen time), so the same crossing seen twice (after a
crash, by two workers) has one id, and consumers de-duplicate by it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

logger = logging.getLogger(__name__)

ALERT_SCHEMA_VERSION = 1
DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class AlertKind(StrEnum):
    INACTIVE = "inactive"  # not seen for threshold_days in an unfinished course
    REACTIVATED = "reactivated"  # back after an inactive alert
    NEVER_STARTED = "never_started"  # registered, no activity in any course


def alert_id(
    kind: AlertKind,
    team_id: str,
    student_id: str,
    course_id: str | None,
    threshold_days: float | None,
    last_seen_us: int | None,
) -> str:
    identity = orjson.dumps(
        [str(kind), team_id, student_id, course_id, threshold_days, last_seen_us]
    )
    return hashlib.sha256(identity).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    team_id: str
    student_id: str
    course_id: str | None
    threshold_days: float | None
    # What the alert is about: the last activity before the absence, or the
    # registration of a student who never started.
    last_seen_us: int | None
    detected_us: int
    catch_up: bool = False
    student_name: str | None = None
    student_email: str | None = None
    # reactivated: when the student was first seen again.
    active_again_us: int | None = None

    @property
    def alert_id(self) -> str:
        return alert_id(
            self.kind,
            self.team_id,
            self.student_id,
            self.course_id,
            self.threshold_days,
            self.last_seen_us,
        )

    @property
    def days_inactive(self) -> float | None:
        """Days without activity: until detection, or until the return."""
        if self.last_seen_us is None:
            return None
        until = self.active_again_us or self.detected_us
        return (until - self.last_seen_us) / DAY_US

    def to_json(self) -> bytes:
        """The alert as the topic and HTTP deliveries carry it (version 1)."""
        return orjson.dumps(
            {
                "version": ALERT_SCHEMA_VERSION,
                "alert_id": self.alert_id,
                "kind": str(self.kind),
                "team_id": self.team_id,
                "student_id": self.student_id,
                "course_id": self.course_id,
                "threshold_days": self.threshold_days,
                "last_seen_at": _iso(self.last_seen_us),
                "days_inactive": self.days_inactive,
                "detected_at": _iso(self.detected_us),
                "catch_up": self.catch_up,
                "active_again_at": _iso(self.active_again_us),
                "student_name": self.student_name,
                "student_email": self.student_email,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Alert:
        """An alert as to_json wrote it; ValueError if it is not one.

        The error names the fields at fault, never their values (the topic
        carries names and e-mails).
        """
        try:
            record = _AlertRecord.model_validate_json(raw)
        except ValidationError as error:
            fields = sorted(
                {
                    ".".join(str(p) for p in e["loc"]) or "the record"
                    for e in error.errors()
                }
            )
            raise ValueError(
                f"not an alert of version 1: {', '.join(fields)}"
            ) from None
        alert = cls(
            record.kind,
            record.team_id,
            record.student_id,
            record.course_id,
            record.threshold_days,
            _us(record.last_seen_at),
            _us(record.detected_at),  # type: ignore[arg-type]
            record.catch_up,
            record.student_name,
            record.student_email,
            _us(record.active_again_at),
        )
        if alert.alert_id != record.alert_id:
            raise ValueError("not an alert of version 1: alert_id does not match")
        return alert


def read_alert(record: Any, log: bool = True) -> Alert | None:
    """The alert a record of the alerts topic holds; None, logged (with the
    record's place, never its values) unless ``log`` is False, if none."""
    try:
        return Alert.from_json(record.value or b"")
    except ValueError as error:
        if log:
            logger.warning(
                "Skipped %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                error,
            )
        return None


def _iso(instant_us: int | None) -> str | None:
    if instant_us is None:
        return None
    seconds, micros = divmod(instant_us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    return moment.isoformat().replace("+00:00", "Z")


def _us(value: datetime | None) -> int | None:
    if value is None:
        return None
    return (value - _EPOCH) // _MICROSECOND


class _AlertRecord(BaseModel):
    """The alert's JSON, version 1, as read back from the topic."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    version: Literal[1]
    alert_id: str
    kind: AlertKind
    team_id: Annotated[str, Field(min_length=1)]
    student_id: Annotated[str, Field(min_length=1)]
    course_id: str | None
    threshold_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None
    last_seen_at: AwareDatetime | None
    days_inactive: float | None = None
    detected_at: AwareDatetime
    catch_up: bool
    active_again_at: AwareDatetime | None = None
    student_name: str | None
    student_email: str | None

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: object) -> object:
        return AlertKind(value) if isinstance(value, str) else value

    @field_validator("last_seen_at", "detected_at", "active_again_at", mode="before")
    @classmethod
    def _instant(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        moment = datetime.fromisoformat(value)
        try:  # what to_json and Parquet can write back: years 1970 to 9998
            in_utc = moment.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError("out of range") from None
        if not 1970 <= in_utc.year <= 9998:
            raise ValueError("out of range")
        return moment

    @model_validator(mode="after")
    def _shape(self) -> _AlertRecord:
        about_course = self.kind is not AlertKind.NEVER_STARTED
        if about_course != (self.course_id is not None):
            raise ValueError("course_id must be set unless never_started")
        if self.threshold_days is None or self.last_seen_at is None:
            raise ValueError("threshold_days and last_seen_at must be set")
        return self


def crossed(
    last_seen_us: int, thresholds: tuple[float, ...], now_us: int
) -> list[float]:
    """The thresholds (ascending) that ``now_us`` has passed since last seen."""
    return [t for t in thresholds if last_seen_us + round(t * DAY_US) <= now_us]


def due_thresholds(
    last_seen_us: int,
    alerted_up_to: float | None,
    thresholds: tuple[float, ...],
    now_us: int,
    catch_up: bool,
) -> list[float]:
    """The thresholds to alert now: crossed, and above those already alerted."""
    due = [
        t
        for t in crossed(last_seen_us, thresholds, now_us)
        if alerted_up_to is None or t > alerted_up_to
    ]
    return due[-1:] if catch_up else due


def next_deadline(
    last_seen_us: int, alerted_up_to: float | None, thresholds: tuple[float, ...]
) -> int | None:
    """When the next threshold above those alerted falls due, if one is left."""
    for threshold in thresholds:
        if alerted_up_to is None or threshold > alerted_up_to:
            return last_seen_us + round(threshold * DAY_US)
    return None
