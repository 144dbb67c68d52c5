"""Alerts and their delivery attempts, as rows of DuckDB's tables.

Each call writes one immutable Parquet file, named by its caller (a batch's
partition and offsets, say), into the snapshot folder; the views keep one
row per alert_id and per attempt, so a file written again after a crash, or
an alert raised by two workers, is counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from analytics.schema import ALERT_DELIVERIES, INACTIVITY_ALERTS
from analytics.snapshots import write_file
from app.alerts import Alert

if TYPE_CHECKING:  # app.alert_delivery writes through this module
    from app.alert_delivery import Attempt


def alert_rows(alerts: Sequence[Alert]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "alert_id": alert.alert_id,
                "kind": str(alert.kind),
                "team_id": alert.team_id,
                "student_id": alert.student_id,
                "course_id": alert.course_id,
                "threshold_days": alert.threshold_days,
                "last_seen_at": alert.last_seen_us,
                "days_inactive": alert.days_inactive,
                "detected_at": alert.detected_us,
                "catch_up": alert.catch_up,
                "active_again_at": alert.active_again_us,
                "student_name": alert.student_name,
                "student_email": alert.student_email,
            }
            for alert in alerts
        ],
        schema=INACTIVITY_ALERTS,
    )


def delivery_rows(attempts: Sequence[Attempt]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "alert_id": attempt.alert_id,
                "team_id": attempt.team_id,
                "attempt": attempt.attempt,
                "attempted_at": attempt.at_us,
                "status": attempt.status,
                "error": attempt.error,
                "delivered": attempt.delivered,
            }
            for attempt in attempts
        ],
        schema=ALERT_DELIVERIES,
    )


def write_alerts(snapshot_dir: Path, name: str, alerts: Sequence[Alert]) -> None:
    """Write ``alerts`` as ``inactivity_alerts/<name>.parquet``."""
    path = snapshot_dir / "inactivity_alerts" / f"{name}.parquet"
    write_file(path, alert_rows(alerts), exist_ok=True)


def write_deliveries(
    snapshot_dir: Path, name: str, attempts: Sequence[Attempt]
) -> None:
    """Write ``attempts`` as ``alert_deliveries/<name>.parquet``."""
    path = snapshot_dir / "alert_deliveries" / f"{name}.parquet"
    write_file(path, delivery_rows(attempts), exist_ok=True)
