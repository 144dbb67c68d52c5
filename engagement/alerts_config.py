"""Inactivity alert rules: thresholds per school and course, and delivery.

One TOML file, named by ENGAGEMENT_ALERTS_CONFIG; every part is optional:

    [defaults]
    thresholds_days = [7, 14, 30]     # days without activity that alert
    never_started_days = 3            # registered this long, never active

    [teams."7b2a07197113e91691214a0f2b8ea243"]
    thresholds_days = [5, 10, 20]
    url = "https://school.example/hooks/inactivity"   # POSTed each alert
    secret = "shared with the school"                 # signs them

    [teams."7b2a07197113e91691214a0f2b8ea243".courses."41478a3119..."]
    thresholds_days = [3, 7]

A course's thresholds are its own, else its school's, else the defaults; the
same goes for never_started_days, which is a school's. Thresholds are days
(fractions allowed), kept sorted; a key is alerted once per threshold it
crosses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    model_validator,
)

from engagement.toml_files import load_toml

DEFAULT_THRESHOLDS_DAYS = (7.0, 14.0, 30.0)
DEFAULT_NEVER_STARTED_DAYS = 3.0
MAX_DAYS = 3650


def _sorted_unique(values: list[float]) -> tuple[float, ...]:
    if not values:
        raise ValueError("at least one threshold is needed")
    return tuple(sorted(set(values)))


# Days, more than none and at most ten years (nor inf, nor nan).
Days = Annotated[float, Field(gt=0, le=MAX_DAYS, allow_inf_nan=False)]
Thresholds = Annotated[list[Days], AfterValidator(_sorted_unique)]


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thresholds_days: Thresholds | None = None


class _Course(_Rules):
    pass


class _Team(_Rules):
    never_started_days: Days | None = None
    url: HttpUrl | None = None
    secret: SecretStr | None = None
    courses: dict[str, _Course] = {}

    @model_validator(mode="after")
    def _signed(self) -> _Team:
        if self.url is not None and self.secret is None:
            raise ValueError("a url needs the secret that signs its alerts")
        return self


class _Defaults(_Rules):
    never_started_days: Days = DEFAULT_NEVER_STARTED_DAYS


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: _Defaults = _Defaults()
    teams: dict[str, _Team] = {}


@dataclass(frozen=True)
class Delivery:
    """Where a school receives its alerts, and the secret that signs them."""

    url: str
    secret: SecretStr


class AlertRules:
    """The thresholds and delivery of every school and course."""

    def __init__(self, parsed: _File | None = None) -> None:
        self._file = parsed or _File()
        self._default = self._file.defaults.thresholds_days or DEFAULT_THRESHOLDS_DAYS

    @classmethod
    def load(cls, path: Path | None) -> AlertRules:
        """The rules of the file at ``path``; the defaults when it is None."""
        if path is None:
            return cls()
        return cls(load_toml(path, _File, "the alerts configuration"))

    def thresholds(self, team_id: str, course_id: str) -> tuple[float, ...]:
        team = self._file.teams.get(team_id)
        if team is None:
            return self._default
        course = team.courses.get(course_id)
        if course is not None and course.thresholds_days:
            return course.thresholds_days  # type: ignore[return-value]
        return team.thresholds_days or self._default  # type: ignore[return-value]

    def never_started_days(self, team_id: str) -> float:
        team = self._file.teams.get(team_id)
        if team is not None and team.never_started_days is not None:
            return team.never_started_days
        return self._file.defaults.never_started_days

    def delivers(self) -> bool:
        """Whether any school receives its alerts over HTTP."""
        return any(team.url is not None for team in self._file.teams.values())

    def delivery(self, team_id: str) -> Delivery | None:
        team = self._file.teams.get(team_id)
        if team is None or team.url is None or team.secret is None:
            return None
        return Delivery(str(team.url), team.secret)
