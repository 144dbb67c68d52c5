"""Snapshots and readers side by side: no failed query, no lost or torn snapshot.

The worker's Snapshotter is driven directly with state records (no broker:
what is under test is the file layout and the catalog). Readers are separate
processes, as an analyst's DuckDB session would be.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

from analytics.catalog import connect_readonly
from app.snapshot import Snapshotter
from app.state import CourseActivity, Student

PARTITIONS = 4
REPO = Path(__file__).resolve().parents[1]


def _records(generation: int, keys: int) -> tuple[list[bytes], list[bytes]]:
    """keys course records and their students; activity_events = generation."""
    courses, students = [], []
    for n in range(keys):
        partition = n % PARTITIONS
        state = CourseActivity("team", f"s{n}", "course", partition)
        state.first_seen_at = state.last_seen_at = 1_796_000_000_000_000 + n
        state.activity_events = generation
        state.days = {20_787: [generation, 0, 0, 0]}
        courses.append(state.dumps())
        students.append(Student("team", f"s{n}", partition).dumps())
    return courses, students


def _snapshot(snapshotter: Snapshotter, generation: int, keys: int) -> None:
    courses, students = _records(generation, keys)
    asyncio.run(snapshotter.snapshot(courses, students, set(range(PARTITIONS))))


READER = textwrap.dedent(
    """
    import sys, time, duckdb
    db, seconds = sys.argv[1], float(sys.argv[2])
    failures, seen = 0, set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with duckdb.connect(db, read_only=True) as con:
                rows = con.execute(
                    "SELECT count(*), min(activity_events), max(activity_events),"
                    " sum(length(student_id)) FROM student_course_activity"
                ).fetchone()
                days = con.execute(
                    "SELECT count(*) FROM engagement_daily"
                ).fetchone()[0]
            seen.add((rows[0], rows[1], rows[2], days))
        except Exception as error:
            failures += 1
            print("FAILED", type(error).__name__, error, file=sys.stderr)
    print(failures, len(seen))
    for item in sorted(seen, key=str):
        print(*item)
    """
)


def test_readers_never_fail_while_snapshots_replace_each_other(tmp_path):
    db_path = tmp_path / "engagement.duckdb"
    snapshotter = Snapshotter(db_path, tmp_path / "snapshots", grace_seconds=60)
    keys = 4000
    _snapshot(snapshotter, 1, keys)

    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(db_path), "12"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    generation = 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        generation += 1
        _snapshot(snapshotter, generation, keys)

    for reader in readers:
        out, err = reader.communicate(timeout=60)
        failures, distinct = (int(x) for x in out.splitlines()[0].split())
        assert failures == 0, err
        # Every answer is one whole snapshot: all keys, one generation.
        for line in out.splitlines()[1:]:
            count, low, high, days = (int(x) for x in line.split())
            assert (count, days) == (keys, keys) and low == high, line
        assert distinct > 1, "the reader never saw a snapshot change"

    with connect_readonly(db_path) as connection:
        latest = connection.execute(
            "SELECT count(*), min(activity_events) FROM student_course_activity"
        ).fetchone()
    assert latest == (keys, generation)


KILLED = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    import analytics.snapshots as snapshots
    import app.snapshot as snapshot_module
    from tests.test_snapshots import PARTITIONS, _records

    db, marker = Path(sys.argv[1]), Path(sys.argv[2])
    written = 0
    original = snapshots.write_partition

    def slow_write(*args, **kwargs):
        global written
        path = original(*args, **kwargs)
        written += 1
        if written == 5:  # part of the snapshot is on disk
            marker.write_text("half")
            time.sleep(600)
        return path

    snapshot_module.write_partition = slow_write
    snapshotter = snapshot_module.Snapshotter(db, db.with_suffix(".snapshots"))
    courses, students = _records(2, 1000)
    asyncio.run(snapshotter.snapshot(courses, students, set(range(PARTITIONS))))
    """
)


def test_a_snapshot_killed_mid_write_leaves_the_previous_one_whole(tmp_path):
    db_path = tmp_path / "engagement.duckdb"
    snapshot_dir = db_path.with_suffix(".snapshots")
    _snapshot(Snapshotter(db_path, snapshot_dir), 1, 1000)

    marker = tmp_path / "half-written"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(db_path), str(marker)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, "the snapshot process died on its own"
        assert time.monotonic() < deadline, "the snapshot never got half-way"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    with connect_readonly(db_path) as connection:
        state = connection.execute(
            "SELECT count(*), min(activity_events), max(activity_events) "
            "FROM student_course_activity"
        ).fetchone()
        days = connection.execute("SELECT count(*) FROM engagement_daily").fetchone()
    assert state == (1000, 1, 1) and days == (1000,)

    # The next snapshot takes over from the debris.
    _snapshot(Snapshotter(db_path, snapshot_dir), 3, 1000)
    with connect_readonly(db_path) as connection:
        state = connection.execute(
            "SELECT count(*), min(activity_events), max(activity_events) "
            "FROM student_course_activity"
        ).fetchone()
    assert state == (1000, 3, 3)


def test_superseded_files_go_after_the_grace_period(tmp_path):
    db_path = tmp_path / "engagement.duckdb"
    snapshot_dir = tmp_path / "snapshots"
    snapshotter = Snapshotter(db_path, snapshot_dir, grace_seconds=3600)
    for generation in (1, 2, 3):
        _snapshot(snapshotter, generation, 100)
    folder = snapshot_dir / "student_course_activity"
    versions = sorted(p.name for p in folder.glob("partition-0000-*.parquet"))
    assert len(versions) == 3  # all within the grace period

    snapshotter.grace_seconds = 0
    _snapshot(snapshotter, 4, 100)
    for table in ("student_course_activity", "students", "engagement_daily"):
        for partition in range(PARTITIONS):
            kept = list((snapshot_dir / table).glob(f"partition-{partition:04d}-*"))
            assert len(kept) == 1, (table, partition, kept)
    with connect_readonly(db_path) as connection:
        assert connection.execute(
            "SELECT count(*), min(activity_events) FROM student_course_activity"
        ).fetchone() == (100, 4)


def test_days_the_worker_lets_go_stay_in_engagement_daily(tmp_path):
    db_path = tmp_path / "engagement.duckdb"
    snapshotter = Snapshotter(db_path, tmp_path / "snapshots")
    old_day, recent_day = 20_700, 20_787  # 2026-09-04 and 2026-11-30

    def state(days: dict[int, list[int]]) -> bytes:
        record = CourseActivity("team", "s1", "course", 0)
        record.first_seen_at = record.last_seen_at = 1_796_000_000_000_000
        record.activity_events = sum(counts[0] for counts in days.values())
        record.days = days
        return record.dumps()

    def daily() -> dict:
        with connect_readonly(db_path) as connection:
            rows = connection.execute(
                "SELECT day, activity_events, visits, lesson_finishes, comments "
                "FROM engagement_daily"
            ).fetchall()
        return {(day - date(1970, 1, 1)).days: counts for day, *counts in rows}

    def snap(days: dict[int, list[int]]) -> None:
        asyncio.run(snapshotter.snapshot([state(days)], [], {0}))

    snap({old_day: [3, 2, 1, 0], recent_day: [1, 1, 0, 0]})
    assert daily() == {old_day: [3, 2, 1, 0], recent_day: [1, 1, 0, 0]}
    # Past the horizon, the worker lets the old day go: DuckDB keeps it.
    snap({recent_day: [2, 1, 0, 0]})
    assert daily() == {old_day: [3, 2, 1, 0], recent_day: [2, 1, 0, 0]}
    # A late event lands in the old day again: the day's total is the sum.
    snap({old_day: [1, 0, 0, 1], recent_day: [2, 1, 0, 0]})
    assert daily() == {old_day: [4, 2, 1, 1], recent_day: [2, 1, 0, 0]}
    # Let go a second time: two archived pieces of one day, still one row.
    snap({recent_day: [2, 1, 0, 0]})
    assert daily() == {old_day: [4, 2, 1, 1], recent_day: [2, 1, 0, 0]}
