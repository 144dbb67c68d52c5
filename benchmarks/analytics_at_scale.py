"""Snapshot and analysis times at a million keys, each beside its floor.

    .venv/bin/python benchmarks/analytics_at_scale.py --keys 1000000

No broker: the state records are made here, as the worker's tables hold
them (each key active on a few of the last 35 days), and handed to the
worker's Snapshotter, as a snapshot would. Then, in the same run:

- full snapshot: the Snapshotter writing every key (decode the records,
  build the columns, write Parquet, rebuild the catalog), against DuckDB
  writing the same rows from one Arrow table already in memory (the floor);
- incremental snapshot: the next one, after --changed of the keys changed
  (the same floor, for those rows only), and the compaction that later
  merges such deltas into the partitions' bases;
- churn_risk and daily_active (35 days) through the database's views over
  the snapshot files, against the same SQL over plain DuckDB tables holding
  the same rows.

Results are printed as a table and, with --output, appended to a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.catalog import connect_readonly, views_sql  # noqa: E402
from app.snapshot import RecordSource, Snapshotter  # noqa: E402
from app.state import (  # noqa: E402
    DAY_US,
    CourseActivity,
    Student,
    course_key,
    student_key,
)
from benchmarks.report import publish  # noqa: E402

PARTITIONS = 8
AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
AS_OF_US = int(AS_OF.timestamp() * 1_000_000)


def make_records(
    keys: int, seed: int, schools: int = 50
) -> tuple[list[bytes], list[bytes]]:
    """Course records over ``schools`` schools, ~3 courses a student; their students."""
    rng = random.Random(seed)
    courses, students = [], []
    student = 0
    made = 0
    while made < keys:
        team = f"school-{student % schools}"
        partition = student % PARTITIONS
        for course in range(min(rng.randint(1, 5), keys - made)):
            state = CourseActivity(team, f"s{student}", f"c{course}", partition)
            days = sorted(rng.sample(range(1, 36), rng.randint(1, 8)))
            for back in days:
                sent = AS_OF_US - back * DAY_US + rng.randrange(DAY_US)
                state.days[sent // DAY_US] = [rng.randint(1, 6), 1, 0, 0]
                state.first_seen_at = min(state.first_seen_at or sent, sent)
                state.last_seen_at = max(state.last_seen_at or sent, sent)
            state.activity_events = sum(c[0] for c in state.days.values())
            state.student_name = [0, "x", f"Student {student}"]
            state.lessons = {str(n): [0, "x", 1] for n in range(rng.randint(0, 10))}
            courses.append(state.dumps())
            made += 1
        created = Student(team, f"s{student}", partition)
        created.created = [0, "x", AS_OF_US - rng.randint(1, 90) * DAY_US]
        students.append(created.dumps())
        student += 1
    return courses, students


def fill(source: RecordSource, courses: list[bytes], students: list[bytes]) -> None:
    for raw in courses:
        state = CourseActivity.loads(raw)
        key = course_key(state.team_id, state.student_id, state.course_id)
        source.put("student_course_activity", key, raw, state.partition)
    for raw in students:
        student = Student.loads(raw)
        key = student_key(student.team_id, student.student_id)
        source.put("students", key, raw, student.partition)


def change(source: RecordSource, share: float, seed: int) -> int:
    """One more event for a share of the keys, as a worker's folds would."""
    rng = random.Random(seed)
    table = source.tables["student_course_activity"]
    changed = rng.sample(sorted(table), int(len(table) * share))
    for key in changed:
        state = CourseActivity.loads(table[key])
        state.activity_events += 1
        state.last_seen_at = AS_OF_US - 1
        state.days.setdefault((AS_OF_US - 1) // DAY_US, [0, 0, 0, 0])[0] += 1
        source.put("student_course_activity", key, state.dumps(), state.partition)
    return len(changed)


def snapshot_seconds(snapshotter: Snapshotter, source: RecordSource) -> float:
    started = time.perf_counter()
    asyncio.run(snapshotter.snapshot(source, set(range(PARTITIONS))))
    return time.perf_counter() - started


TABLES = ("student_course_activity", "students", "engagement_daily")


def arrow_floor_seconds(
    workdir: Path, db_path: Path, only: dict[str, str] | None = None
) -> tuple[float, Path]:
    """DuckDB writing the snapshot's rows (or ``only`` these) from Arrow tables."""
    queries = only or {name: f"SELECT * FROM {name}" for name in TABLES}
    with connect_readonly(db_path) as connection:
        tables = {
            name: connection.sql(query).to_arrow_table()
            for name, query in queries.items()
        }
    plain = workdir / f"plain{len(queries)}{bool(only)}.duckdb"
    connection = duckdb.connect(str(plain))
    started = time.perf_counter()
    for name, table in tables.items():
        connection.register("rows", table)
        target = workdir / f"floor-{name}.parquet"
        connection.execute(
            f"COPY rows TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
        )
        connection.unregister("rows")
    seconds = time.perf_counter() - started
    # The plain tables the query floors read.
    for name, table in tables.items():
        connection.register("rows", table)
        connection.execute(f"CREATE TABLE {name}_plain AS SELECT * FROM rows")
        connection.unregister("rows")
    connection.close()
    return seconds, plain


def plain_catalog(plain: Path, snapshot_dir: Path) -> None:
    """The same views and macros, but over the plain tables."""
    sql = views_sql(snapshot_dir)
    analyses = sql[sql.index("-- Every analysis below") :]
    connection = duckdb.connect(str(plain))
    connection.execute(
        "CREATE OR REPLACE VIEW student_course_activity AS "
        "SELECT * FROM student_course_activity_plain;"
        "CREATE OR REPLACE VIEW students AS SELECT * FROM students_plain;"
        "CREATE OR REPLACE VIEW engagement_daily AS "
        "SELECT * FROM engagement_daily_plain;"
    )
    connection.execute(analyses)
    connection.close()


def query_seconds(db_path: Path, sql: str, repeat: int = 3) -> tuple[float, int]:
    best, rows = float("inf"), 0
    with duckdb.connect(str(db_path), read_only=True) as connection:
        for _ in range(repeat):
            started = time.perf_counter()
            # Into Arrow, as a dashboard or a DataFrame would take it.
            rows = connection.sql(sql, params=[AS_OF]).to_arrow_table().num_rows
            best = min(best, time.perf_counter() - started)
    return best, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--changed", type=float, default=0.01, help="Share of keys changed."
    )
    parser.add_argument("--output", type=Path, help="Append the results here.")
    args = parser.parse_args()

    made = time.perf_counter()
    courses, students = make_records(args.keys, args.seed)
    print(
        f"{len(courses):,} course records, {len(students):,} students "
        f"made in {time.perf_counter() - made:.0f} s",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="analytics-bench-") as tmp:
        workdir = Path(tmp)
        db_path = workdir / "engagement.duckdb"
        snapshotter = Snapshotter(db_path, workdir / "snapshots")
        source = RecordSource()
        fill(source, courses, students)
        made_keys = len(courses)
        del courses, students
        full = snapshot_seconds(snapshotter, source)
        changed = change(source, args.changed, args.seed)
        before = datetime.now(UTC)
        incremental = snapshot_seconds(snapshotter, source)
        # The floor for the incremental one: writing just the changed rows.
        where = f"WHERE snapshot_at > TIMESTAMPTZ '{before.isoformat()}'"
        with connect_readonly(db_path) as connection:
            latest = connection.execute(
                f"SELECT max(snapshot_at) FROM student_course_activity {where}"
            ).fetchone()[0]
        keys = (
            "SEMI JOIN (SELECT team_id, student_id, course_id "
            "FROM student_course_activity "
            f"WHERE snapshot_at = TIMESTAMPTZ '{latest.isoformat()}') "
            "USING (team_id, student_id, course_id)"
        )
        small_floor, _ = arrow_floor_seconds(
            workdir,
            db_path,
            {
                name: f"SELECT * FROM {name} {keys}"
                for name in ("student_course_activity", "engagement_daily")
            },
        )
        compaction = asyncio.run(snapshotter.compact())
        floor, plain = arrow_floor_seconds(workdir, db_path)
        plain_catalog(plain, workdir / "snapshots")
        rows = [
            ["full snapshot", f"{full:.2f}", f"{floor:.2f}", f"{full / floor:.1f}×"]
        ]
        rows.append(
            [
                f"incremental snapshot ({changed:,} keys changed)",
                f"{incremental:.2f}",
                f"{small_floor:.2f}",
                f"{incremental / small_floor:.1f}×",
            ]
        )
        rows.append(
            [f"compaction of {PARTITIONS} partitions", f"{compaction:.2f}", "", ""]
        )
        for name, sql in (
            ("churn_risk", "SELECT * FROM churn_risk_at(?)"),
            ("daily_active, 35 days", "SELECT * FROM daily_active_at(?)"),
        ):
            ours, count = query_seconds(db_path, sql)
            base, same = query_seconds(plain, sql)
            assert count == same, (name, count, same)
            rows.append(
                [
                    f"{name} ({count:,} rows)",
                    f"{ours:.2f}",
                    f"{base:.2f}",
                    f"{ours / base:.1f}×",
                ]
            )
    publish(
        f"analytics at {made_keys:,} keys",
        ["step", "seconds", "floor seconds", "ratio"],
        rows,
        args.output,
        numeric=(False, True, True, True),
    )


if __name__ == "__main__":
    main()
