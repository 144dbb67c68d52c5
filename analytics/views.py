"""The analysis views the CLI can print and export, and how each is asked for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    name: str
    has_course: bool
    as_of: bool = True  # a <name>_at(as_of) macro exists
    has_team: bool = True


VIEWS = {
    view.name: view
    for view in (
        View("churn_risk", has_course=True),
        View("risk_bands", has_course=True),
        View("inactive_students", has_course=True),
        View("never_started", has_course=False),
        View("daily_active", has_course=True),
        View("cohort_retention", has_course=False),
        View("weekly_lifecycle", has_course=False),
        View("course_funnel", has_course=True),
        View("student_course_activity", has_course=True, as_of=False),
        View("students", has_course=False, as_of=False),
        View("engagement_daily", has_course=True, as_of=False),
        View("student_course_activity_history", has_course=True, as_of=False),
        View("rejected_events", has_course=False, as_of=False, has_team=False),
        View("inactivity_alerts", has_course=True, as_of=False),
        View("alert_deliveries", has_course=False, as_of=False),
    )
}
VIEW_NAMES = tuple(VIEWS)
