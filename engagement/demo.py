"""``engagement demo``: the whole job, once, on a file of webhook bodies.

It starts what ``engagement run`` starts, isolated from earlier runs by fresh
topic and consumer-group names, a fresh worker state directory and a new
DuckDB file; sends every body as a signed POST; waits until the worker has
processed them all (consumer lag 0, not a sleep), and until the worker has
checked every partition for inactivity alerts since, and recorded what that
raised; snapshots; prints the top of ``churn_risk`` as of a chosen time, the
alerts, and a last line of JSON with counts.

Alerts are measured against the wall clock, not ``--as-of``: a student last
seen in a history file weeks ago gets the one catch-up alert a worker would
raise for them today.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import httpx

from analytics.catalog import connect_readonly
from engagement.kafka import delete_topics, wait_for_lag_zero
from engagement.processes import free_port, request_snapshot, start_service
from engagement.runtime import broker_for
from engagement.settings import Settings
from producers.bodies import read_bodies
from producers.sender import send_bodies

logger = logging.getLogger(__name__)

SAMPLE = "samples/alpaclass-demo.jsonl"
CATCH_UP_TIMEOUT_SECONDS = 300.0


# What the demo prints of churn_risk: enough to read a row across a terminal.
DEMO_COLUMNS = (
    "student_name",
    "course_name",
    "days_since_last_seen",
    "active_days_28",
    "trend",
    "progress",
    "risk_score",
    "risk_band",
    "reasons",
)


# What the demo prints of inactivity_alerts.
ALERT_COLUMNS = (
    "kind",
    "student_name",
    "course_id",
    "threshold_days",
    "days_inactive",
    "catch_up",
    "detected_at",
)
CHECK_TIMEOUT_SECONDS = 120.0


@dataclass
class DemoResult:
    sent: int
    accepted: int
    rejected: int
    keys: int
    top: list[tuple]
    columns: list[str]
    seconds: float
    alerts_by_kind: dict[str, int]
    alerts: list[tuple]
    alert_columns: list[str]

    def counts(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "keys": self.keys,
            "alerts": self.alerts_by_kind,
            "seconds": round(self.seconds, 2),
        }


def sample_path() -> Path:
    return Path(str(resources.files("producers").joinpath(SAMPLE)))


def _fresh_database(db_path: Path, snapshot_dir: Path) -> None:
    db_path.unlink(missing_ok=True)
    shutil.rmtree(snapshot_dir, ignore_errors=True)


def run_demo(
    settings: Settings,
    input_path: Path | None,
    db_path: Path | None,
    as_of: datetime | None,
    limit: int = 10,
) -> DemoResult:
    started = time.monotonic()
    bodies = read_bodies(input_path or sample_path())
    as_of = as_of or datetime.now(UTC)
    run_id = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    run_dir = Path("var/demo") / run_id
    db_path = db_path or Path("var/demo/engagement.duckdb")
    demo = settings.model_copy(
        update={
            "kafka_topic": f"demo-{run_id}.alpaclass.webhooks",
            "worker_app_id": f"alpaclass-engagement-demo-{run_id}",
            "worker_data_dir": run_dir / "worker",
            "duckdb_path": db_path,
            "receiver_port": free_port(),
            "worker_web_port": free_port(),
        }
    )
    secret = secrets.token_hex(16)
    _fresh_database(demo.duckdb_path, demo.snapshot_dir)

    with ExitStack() as stack:
        bootstrap = stack.enter_context(broker_for(settings))
        env = {
            "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ENGAGEMENT_KAFKA_TOPIC": demo.kafka_topic,
            "ENGAGEMENT_KAFKA_TOPIC_PARTITIONS": str(demo.kafka_topic_partitions),
            "ENGAGEMENT_WORKER_APP_ID": demo.worker_app_id,
            "ENGAGEMENT_WORKER_DATA_DIR": str(demo.worker_data_dir),
            "ENGAGEMENT_WORKER_WEB_PORT": str(demo.worker_web_port),
            "ENGAGEMENT_RECEIVER_PORT": str(demo.receiver_port),
            "ENGAGEMENT_RECEIVER_SPOOL_PATH": str(run_dir / "receiver-spool.sqlite3"),
            "ENGAGEMENT_WEBHOOK_SECRETS": secret,
            "ENGAGEMENT_DUCKDB_PATH": str(demo.duckdb_path),
        }
        topics = [demo.kafka_topic, demo.alerts_topic, demo.worker_app_id]
        stack.callback(lambda: asyncio.run(delete_topics(bootstrap, topics)))
        # The logs stay in run_dir for a look afterwards; the state goes.
        stack.callback(shutil.rmtree, demo.worker_data_dir, ignore_errors=True)

        receiver = start_service(
            "receiver",
            "receiver",
            env,
            f"http://{demo.receiver_host}:{demo.receiver_port}/health",
            run_dir / "receiver.log",
        )
        stack.callback(receiver.stop)
        receiver.wait_healthy(timeout=60)
        worker = start_service(
            "worker", "worker", env, f"{demo.worker_url}/health", run_dir / "worker.log"
        )
        stack.callback(worker.stop)
        worker.wait_healthy(timeout=120)

        logger.info("Sending %d bodies to %s", len(bodies), demo.receiver_url)
        summary = asyncio.run(send_bodies(bodies, demo.receiver_url, secret))
        logger.info("Waiting for the worker to process every accepted event")
        for topic in (demo.kafka_topic, demo.rejected_topic):
            asyncio.run(
                wait_for_lag_zero(
                    bootstrap,
                    demo.worker_app_id,
                    topic,
                    timeout=CATCH_UP_TIMEOUT_SECONDS,
                    alive=worker.check_alive,
                )
            )
        processed = time.time()
        wait_for_alert_check(demo.worker_url, processed, worker.check_alive)
        asyncio.run(
            wait_for_lag_zero(
                bootstrap,
                demo.worker_app_id,
                demo.alerts_topic,
                timeout=CATCH_UP_TIMEOUT_SECONDS,
                alive=worker.check_alive,
            )
        )
        request_snapshot(demo.worker_url)

    with connect_readonly(demo.duckdb_path) as connection:
        keys = connection.execute(
            "SELECT count(*) FROM student_course_activity"
        ).fetchone()[0]
        cursor = connection.execute(
            f"SELECT {', '.join(DEMO_COLUMNS)} FROM churn_risk_at(?) LIMIT ?",
            [as_of, limit],
        )
        columns = [d[0] for d in cursor.description]
        top = cursor.fetchall()
        by_kind = dict(
            connection.execute(
                "SELECT kind, count(*) FROM inactivity_alerts GROUP BY kind "
                "ORDER BY kind"
            ).fetchall()
        )
        cursor = connection.execute(
            f"SELECT {', '.join(ALERT_COLUMNS)} FROM inactivity_alerts "
            "ORDER BY detected_at, kind, student_name, course_id LIMIT ?",
            [limit],
        )
        alert_columns = [d[0] for d in cursor.description]
        alerts = cursor.fetchall()

    return DemoResult(
        sent=summary.sent,
        accepted=summary.accepted,
        rejected=summary.rejected,
        keys=keys,
        top=top,
        columns=columns,
        seconds=time.monotonic() - started,
        alerts_by_kind=by_kind,
        alerts=alerts,
        alert_columns=alert_columns,
    )


def wait_for_alert_check(
    worker_url: str,
    after: float,
    alive: Callable[[], None],
    timeout: float = CHECK_TIMEOUT_SECONDS,
) -> None:
    """Until the worker has checked each of its partitions since ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{worker_url}/health", timeout=10).json()
        checked = health["alerts"]["checked_at"]
        owned = {str(partition) for partition in health["partitions"]}
        times = [checked.get(p) for p in owned]
        if owned and all(
            t and datetime.fromisoformat(t).timestamp() > after for t in times
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("The worker did not check its partitions for alerts")
        alive()
        time.sleep(0.25)
