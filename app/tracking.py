"""What the agent does with one record of the webhooks topic.

Kept apart from the Faust wiring so the folding rules read on their own. The
table is any mutable mapping of bytes to bytes: Faust's table in the worker.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from enum import StrEnum

from app.state import CourseActivity, activity_key
from engagement.events import STUDENT_CREATED, InvalidBody, epoch_us, parse_body

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    ACTIVITY = "activity"  # an activity event, counted
    REDELIVERY = "redelivery"  # an event id already counted for its key
    REGISTRATION = "registration"  # student_created: a cohort start, not a visit
    NOT_ENGAGEMENT = "not_engagement"  # ping, other products, unknown names
    REJECTED = "rejected"  # not a usable body
    FAILED = "failed"  # the worker could not fold it in: a bug, logged


def track(
    table: MutableMapping[bytes, bytes], partition: int, raw: bytes | None
) -> Outcome:
    """Fold one raw body into ``table``; never raises on bad input."""
    try:
        envelope, _ = parse_body(raw or b"")
    except InvalidBody as error:
        logger.warning("Rejected a record of partition %d: %s", partition, error.reason)
        return Outcome.REJECTED

    canonical = envelope.canonical_event
    if canonical is None:
        return Outcome.NOT_ENGAGEMENT
    if canonical == STUDENT_CREATED:
        return Outcome.REGISTRATION

    # parse_body guarantees a student and a course for activity events.
    student_id = envelope.data.student.id  # type: ignore[union-attr]
    course_id = envelope.data.course.id  # type: ignore[union-attr]
    key = activity_key(envelope.team_id, student_id, course_id)
    stored = table.get(key)
    state = (
        CourseActivity.loads(stored)
        if stored is not None
        else CourseActivity(envelope.team_id, student_id, course_id, partition)
    )

    sent_at = epoch_us(envelope.sentDate)
    if not state.apply_activity(envelope.id, sent_at):
        return Outcome.REDELIVERY
    table[key] = state.dumps()
    return Outcome.ACTIVITY
