"""The naive baseline: a Faust agent that handles one event at a time.

Each body is validated with the pydantic model, and each event reads and
writes its table rows on its own — one table write (and changelog record) per
event, no batching, no coalescing. The state and its rules are the worker's.
"""

from __future__ import annotations

import faust

from app.options import faust_options, webhooks_topic
from app.tracking import Tracker
from engagement.events import InvalidBody, parse_body
from engagement.settings import Settings

settings = Settings()

app = faust.App(settings.worker_app_id, **faust_options(settings))
webhooks = webhooks_topic(app, settings)
courses = app.Table("student_course_activity", key_type=bytes, value_type=bytes)
students = app.Table("students", key_type=bytes, value_type=bytes)
tracker = Tracker(courses, students)


@app.agent(webhooks)
async def naive(stream: faust.StreamT) -> None:
    async for event in stream.events():
        try:
            parse_body(event.value)
        except InvalidBody:
            continue
        tracker.fold(event.message.partition, [event.value])
