"""How long the dashboard takes to build a page, at a million keys.

    .venv/bin/python benchmarks/dashboard_at_scale.py --keys 1000000 --schools 50
    .venv/bin/python benchmarks/dashboard_at_scale.py --keys 1000000 --schools 1

No broker: the state records are made and snapshotted as in
analytics_at_scale.py (each key active on a few of the last 35 days), into a
database of the worker's layout. Then, in the same run, for one school:

- the whole page as the server builds it (every query, the figures, the
  HTML), best of --repeat, and each section of it alone;
- the risk bands over 13 weeks by risk_bands_at (one pass over the state)
  beside the obvious way, churn_risk_at called at each of the 13 points,
  which gives the same counts (checked here).

Results are printed as a table and, with --output, appended to a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.catalog import connect_readonly  # noqa: E402
from analytics.dashboard import data  # noqa: E402
from analytics.dashboard.server import Dashboard  # noqa: E402
from app.snapshot import RecordSource, Snapshotter  # noqa: E402
from benchmarks.analytics_at_scale import (  # noqa: E402
    AS_OF,
    PARTITIONS,
    fill,
    make_records,
)
from benchmarks.report import publish  # noqa: E402


def best_of(repeat: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def bands_by_churn_risk(connection, selection: data.Selection) -> Counter:
    counts: Counter = Counter()
    for back in range(data.RISK_WEEKS):
        point = selection.as_of - timedelta(days=7 * back)
        for band, keys in connection.execute(
            "SELECT risk_band, count(*) FROM churn_risk_at(?) WHERE team_id = ?"
            " GROUP BY risk_band",
            [point, selection.team],
        ).fetchall():
            counts[point, band] = keys
    return counts


def bands_by_risk_bands(connection, selection: data.Selection) -> Counter:
    counts: Counter = Counter()
    for point, band, keys in connection.execute(
        "SELECT point_at, risk_band, sum(keys) FROM risk_bands_at(?, weeks := ?)"
        " WHERE team_id = ? GROUP BY ALL",
        [selection.as_of, data.RISK_WEEKS, selection.team],
    ).fetchall():
        counts[point, band] = int(keys)
    return counts


def _churn_risk(connection, selection: data.Selection) -> object:
    return data.churn_risk(connection, selection, 50)


def _alerts(connection, selection: data.Selection) -> object:
    return data.recent_alerts(connection, selection), data.alert_kinds(
        connection, selection
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--schools", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, help="Append the results here.")
    args = parser.parse_args()

    courses, students = make_records(args.keys, args.seed, args.schools)
    made_keys = len(courses)
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        workdir = Path(tmp)
        db_path = workdir / "engagement.duckdb"
        source = RecordSource()
        fill(source, courses, students)
        del courses, students
        snapshotter = Snapshotter(db_path, workdir / "snapshots")
        asyncio.run(snapshotter.snapshot(source, set(range(PARTITIONS))))
        del source

        team = "school-0"
        selection = data.Selection(team, None, AS_OF)
        query = {"school": team, "as_of": AS_OF.isoformat()}
        server = Dashboard(db_path)
        with connect_readonly(db_path) as connection:
            (school_keys,) = connection.execute(
                "SELECT count(*) FROM student_course_activity WHERE team_id = ?",
                [team],
            ).fetchone()
            status, _ = server._page(query)
            assert status == 200, status
            rows = [
                [
                    "whole page (queries, figures, HTML)",
                    f"{best_of(args.repeat, lambda: server._page(query)):.2f}",
                    "",
                    "",
                ]
            ]
            for name, section in (
                ("daily active, 96 days (and the headline's)", data.activity),
                ("churn risk: the list's top 50 and counts", _churn_risk),
                ("cohorts", data.cohorts),
                ("funnel", data.funnel),
                ("alerts: the latest 20 and counts by kind", _alerts),
            ):
                seconds = best_of(
                    args.repeat, lambda f=section: f(connection, selection)
                )
                rows.append([name, f"{seconds:.2f}", "", ""])

            ours = bands_by_risk_bands(connection, selection)
            theirs = bands_by_churn_risk(connection, selection)
            assert ours == theirs, "risk_bands_at and churn_risk_at disagree"
            one_pass = best_of(
                args.repeat, lambda: bands_by_risk_bands(connection, selection)
            )
            thirteen = best_of(
                args.repeat, lambda: bands_by_churn_risk(connection, selection)
            )
            rows.append(
                [
                    "risk bands, 13 weeks",
                    f"{one_pass:.2f}",
                    f"{thirteen:.2f}",
                    f"{thirteen / one_pass:.0f}× faster",
                ]
            )
    publish(
        f"dashboard at {made_keys:,} keys, {args.schools} schools "
        f"({school_keys:,} keys in the school shown)",
        ["step", "seconds", "13 × churn_risk_at, seconds", "ratio"],
        rows,
        args.output,
        numeric=(False, True, True, True),
    )


if __name__ == "__main__":
    main()
