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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import orjson

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
        """An alert as to_json wrote it; ValueError if it is not one."""
        try:
            record = orjson.loads(raw)
            if record.get("version") != ALERT_SCHEMA_VERSION:
                raise ValueError(f"unknown alert version {record.get('version')!r}")
            alert = cls(
                AlertKind(record["kind"]),
                record["team_id"],
                record["student_id"],
                record["course_id"],
                record["threshold_days"],
                _us(record["last_seen_at"]),
                _us(record["detected_at"]),  # type: ignore[arg-type]
                bool(record["catch_up"]),
                record["student_name"],
                record["student_email"],
                _us(record.get("active_again_at")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not an alert: {type(error).__name__}") from error
        if alert.alert_id != record.get("alert_id"):
            raise ValueError("the alert_id does not match the alert")
        return alert


def _iso(instant_us: int | None) -> str | None:
    if instant_us is None:
        return None
    seconds, micros = divmod(instant_us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    return moment.isoformat().replace("+00:00", "Z")


def _us(value: str | None) -> int | None:
    if value is None:
        return None
    return (datetime.fromisoformat(value) - _EPOCH) // _MICROSECOND


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
