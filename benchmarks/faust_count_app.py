"""Faust's own ceiling: an agent that only counts, with no table and no parsing.

Not a contender for the targets; it tells how much of the worker's time is
Faust's per-event stream machinery rather than the engagement code.
"""

from __future__ import annotations

import faust

from app.options import faust_options, webhooks_topic
from engagement.settings import Settings

settings = Settings()
app = faust.App(settings.worker_app_id, **faust_options(settings))
webhooks = webhooks_topic(app, settings)


@app.agent(webhooks)
async def count(stream: faust.StreamT) -> None:
    seen = 0
    async for _ in stream.events():
        seen += 1
