"""Snapshots and readers side by side: no failed query, no lost or torn snapshot.

The worker's Snapshotter is driven directly with state records (no broker:
what is under test is the file layout, the catalog and what each snapshot
writes). Readers are separate processes, as an analyst's DuckDB session
would be.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, MutableMapping
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import app.snapshot as snapshot_module
from analytics.catalog import connect_readonly
from app.snapshot import RecordSource, Snapshotter
from app.state import DAY_US, HORIZON_DAYS, CourseActivity, Student, course_key
from app.state import student_key as student_key_of
from app.tracking import Tracker

PARTITIONS = 4
REPO = Path(__file__).resolve().parents[1]
ACTIVITY = "student_course_activity"


def _put(source: RecordSource, n: int, generation: int) -> None:
    """Key n's record, with activity_events = generation."""
    partition = n % PARTITIONS
    state = CourseActivity("team", f"s{n}", "course", partition)
    state.first_seen_at = state.last_seen_at = 1_796_000_000_000_000 + n
    state.activity_events = generation
    state.days = {20_787: [generation, 0, 0, 0]}
    source.put(
        ACTIVITY, course_key("team", f"s{n}", "course"), state.dumps(), partition
    )
    student = Student("team", f"s{n}", partition)
    source.put("students", student_key_of("team", f"s{n}"), student.dumps(), partition)


def _generation(source: RecordSource, generation: int, keys: range) -> None:
    for n in keys:
        _put(source, n, generation)


def _snapshot(snapshotter: Snapshotter, source: RecordSource) -> None:
    asyncio.run(snapshotter.snapshot(source, set(range(PARTITIONS))))


def _events(db_path: Path, table: str) -> dict[str, int]:
    """activity_events by student of a table holding one row per student."""
    with connect_readonly(db_path) as connection:
        rows = connection.execute(
            f"SELECT student_id, activity_events FROM {table}"
        ).fetchall()
    assert len(rows) == len({student for student, _ in rows}), "a row appears twice"
    return dict(rows)


def _activity(db_path: Path) -> dict[str, int]:
    return _events(db_path, "student_course_activity")


def _daily_events(db_path: Path) -> dict[str, int]:
    return _events(db_path, "engagement_daily")


def _started(
    tmp_path: Path, keys: int, grace: float
) -> tuple[Path, Path, Snapshotter, RecordSource]:
    """A database with a first (whole) snapshot of keys at generation 1."""
    db_path, snapshot_dir = tmp_path / "engagement.duckdb", tmp_path / "snapshots"
    snapshotter = Snapshotter(db_path, snapshot_dir, grace_seconds=grace)
    source = RecordSource()
    _generation(source, 1, range(keys))
    _snapshot(snapshotter, source)
    return db_path, snapshot_dir, snapshotter, source


def _files(snapshot_dir: Path, table: str, kind: str) -> list[Path]:
    return sorted((snapshot_dir / table).glob(f"{kind}-*.parquet"))


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
                    "SELECT count(*), sum(activity_events) FROM engagement_daily"
                ).fetchone()
            seen.add((rows[0], rows[1], rows[2], days[0], days[1]))
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
    source = RecordSource()
    _generation(source, 1, range(keys))
    _snapshot(snapshotter, source)

    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(db_path), "12"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    # Every key changes in every snapshot: each one is a delta big enough to
    # be compacted at once, so readers see deltas and compactions alike.
    generation = 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        generation += 1
        _generation(source, generation, range(keys))
        _snapshot(snapshotter, source)

    for reader in readers:
        out, err = reader.communicate(timeout=60)
        failures, distinct = (int(x) for x in out.splitlines()[0].split())
        assert failures == 0, err
        # Every answer is one whole snapshot: all keys, one generation.
        for line in out.splitlines()[1:]:
            count, low, high, days, day_events = (int(x) for x in line.split())
            assert (count, days) == (keys, keys) and low == high, line
            assert day_events == keys * low, line
        assert distinct > 1, "the reader never saw a snapshot change"

    assert _activity(db_path) == {f"s{n}": generation for n in range(keys)}


def test_a_snapshot_writes_only_the_keys_that_changed(tmp_path):
    db_path = tmp_path / "engagement.duckdb"
    snapshot_dir = tmp_path / "snapshots"
    snapshotter = Snapshotter(db_path, snapshot_dir)
    source = RecordSource()
    _generation(source, 1, range(400))
    _snapshot(snapshotter, source)
    assert len(_files(snapshot_dir, ACTIVITY, "base")) == PARTITIONS

    changed = [3, 17, 222]  # partitions 3, 1 and 2
    expected = {f"s{n}": 1 for n in range(400)}
    for n in changed:
        _put(source, n, 2)
        expected[f"s{n}"] = 2
    _snapshot(snapshotter, source)

    deltas = _files(snapshot_dir, ACTIVITY, "delta")
    assert len(deltas) == 3  # partition 0 had no change: no file
    written = sorted(
        student
        for path in deltas
        for student in pq.read_table(path)["student_id"].to_pylist()
    )
    assert written == sorted(f"s{n}" for n in changed)
    students = [
        student
        for path in _files(snapshot_dir, "students", "delta")
        for student in pq.read_table(path)["student_id"].to_pylist()
    ]
    assert sorted(students) == sorted(f"s{n}" for n in changed)
    assert _activity(db_path) == expected
    assert _daily_events(db_path) == expected

    # Nothing changed: nothing is written, and the views stay as they were.
    before = sorted(p.name for p in snapshot_dir.rglob("*.parquet"))
    _snapshot(snapshotter, source)
    assert sorted(p.name for p in snapshot_dir.rglob("*.parquet")) == before
    assert _activity(db_path) == expected


def test_compaction_merges_deltas_into_a_base_with_the_same_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_module, "COMPACT_AFTER_DELTAS", 3)
    db_path, snapshot_dir, snapshotter, source = _started(tmp_path, 200, grace=0)
    expected = {f"s{n}": 1 for n in range(200)}
    for generation in (2, 3, 4):
        for n in range(10 * generation, 10 * generation + 8):  # two per partition
            _put(source, n, generation)
            expected[f"s{n}"] = generation
        _snapshot(snapshotter, source)
        assert _activity(db_path) == expected

    # The third delta made the partitions due: one base each, no delta left.
    for table in (ACTIVITY, "students", "engagement_daily"):
        assert len(_files(snapshot_dir, table, "base")) == PARTITIONS, table
        assert not _files(snapshot_dir, table, "delta"), table
    assert snapshotter.last is not None and snapshotter.last.compacted == PARTITIONS
    merged = {}
    for path in _files(snapshot_dir, ACTIVITY, "base"):
        table = pq.read_table(path)
        merged.update(
            zip(
                table["student_id"].to_pylist(),
                table["activity_events"].to_pylist(),
                strict=True,
            )
        )
    assert merged == expected


def test_compaction_after_a_students_only_delta_replaces_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_module, "COMPACT_AFTER_DELTAS", 2)
    db_path, snapshot_dir, snapshotter, source = _started(tmp_path, 40, grace=3600)
    inodes = {p: p.stat().st_ino for p in snapshot_dir.rglob("*.parquet")}

    # Only students change (registrations, no activity): students deltas only.
    for n in range(40):
        student = Student("team", f"s{n}", n % PARTITIONS)
        student.created = [1, "e", 1_796_000_000_000_000]
        key = student_key_of("team", f"s{n}")
        source.put("students", key, student.dumps(), n % PARTITIONS)
        _snapshot(snapshotter, source)
        if snapshotter.last.compacted:
            break
    assert snapshotter.last.compacted, "never compacted"
    bases = _files(snapshot_dir, "students", "base")
    assert len(bases) > PARTITIONS  # the compaction's, beside the first ones

    for path, inode in inodes.items():
        assert path.stat().st_ino == inode, f"{path.name} was written again"
    with connect_readonly(db_path) as connection:
        created = connection.execute(
            "SELECT count(*) FROM students WHERE created_at IS NOT NULL"
        ).fetchone()[0]
    assert created == n + 1
    assert _activity(db_path) == {f"s{n}": 1 for n in range(40)}


def test_history_keeps_each_snapshots_rows_for_its_retention(tmp_path):
    db_path, snapshot_dir, snapshotter, source = _started(tmp_path, 20, grace=0)
    for generation in (2, 3):
        _put(source, 5, generation)
        _snapshot(snapshotter, source)
    with connect_readonly(db_path) as connection:
        history = connection.execute(
            "SELECT student_id, activity_events, snapshot_at "
            "FROM student_course_activity_history ORDER BY snapshot_at"
        ).fetchall()
        columns = [
            c[0]
            for c in connection.execute(
                "DESCRIBE student_course_activity_history"
            ).fetchall()
        ]
    # The first snapshot wrote every key; the next two only s5.
    assert len(history) == 20 + 2
    assert [(s, e) for s, e, _ in history if s == "s5"] == [
        ("s5", 1),
        ("s5", 2),
        ("s5", 3),
    ]
    assert len({at for s, _, at in history if s == "s5"}) == 3
    assert "student_email" not in columns and "student_name" not in columns

    # Past its retention, a snapshot's rows leave the history.
    snapshotter.retention_days = 1.0 / 86400  # one second
    time.sleep(1.2)
    _put(source, 6, 9)
    _snapshot(snapshotter, source)
    with connect_readonly(db_path) as connection:
        kept = connection.execute(
            "SELECT student_id, activity_events FROM student_course_activity_history"
        ).fetchall()
    assert kept == [("s6", 9)]
    files = list((snapshot_dir / "student_course_activity_history").glob("delta-*"))
    assert len(files) == 1


def test_two_workers_show_every_key_once_and_a_takeover_rewrites_the_partition(
    tmp_path,
):
    db_path = tmp_path / "engagement.duckdb"
    snapshot_dir = tmp_path / "snapshots"
    one, two = (Snapshotter(db_path, snapshot_dir) for _ in range(2))
    source_one, source_two = RecordSource(), RecordSource()
    _generation(source_one, 1, range(0, 100))
    _generation(source_two, 1, range(0, 100))  # both hold every record ...
    asyncio.run(one.snapshot(source_one, {0, 1}))  # ... each owns two partitions
    asyncio.run(two.snapshot(source_two, {2, 3}))
    assert _activity(db_path) == {f"s{n}": 1 for n in range(100)}

    # Worker one loses partition 1 to worker two, which changed some of its
    # keys while worker one never heard of them.
    one.forget({1})
    for n in (1, 5, 9):
        _put(source_two, n, 7)
    source_two.take_changed(ACTIVITY)  # as if a snapshot had taken them elsewhere
    asyncio.run(two.snapshot(source_two, {1, 2, 3}))
    asyncio.run(one.snapshot(source_one, {0}))
    expected = {f"s{n}": 1 for n in range(100)}
    expected.update({"s1": 7, "s5": 7, "s9": 7})
    assert _activity(db_path) == expected
    assert two.last is not None and two.last.full_partitions == 1


KILLED = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    import analytics.snapshots as snapshots
    import app.snapshot as snapshot_module
    from tests.test_snapshots import PARTITIONS, _generation
    from app.snapshot import RecordSource

    db, marker, phase = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    snapshot_module.COMPACT_AFTER_DELTAS = 1 if phase == "compaction" else 100
    snapshot_module.COMPACT_AFTER_SHARE = 100.0
    snapshotter = snapshot_module.Snapshotter(db, db.with_suffix(".snapshots"))
    source = RecordSource()
    _generation(source, 1, range(1000))
    if phase != "full":
        asyncio.run(snapshotter.snapshot(source, set(range(PARTITIONS))))
        # The test's view of the database is this snapshot, generation 1.
    calls = 0

    def stop_after(original, nth):
        def wrapper(*args, **kwargs):
            global calls
            result = original(*args, **kwargs)
            calls += 1
            if calls == nth:  # part of the snapshot is on disk
                marker.write_text("half")
                time.sleep(600)
            return result
        return wrapper

    if phase == "compaction":
        snapshot_module.publish = stop_after(snapshots.publish, 2)
        _generation(source, 2, range(0, 1000, 3))
    else:
        snapshot_module.write_file = stop_after(snapshots.write_file, 5)
        _generation(source, 2, range(1000))
    if phase != "compaction":
        marker.with_suffix(".ready").write_text("")
    asyncio.run(snapshotter.snapshot(source, set(range(PARTITIONS))))
    """
)


def _expected_after_kill(phase: str) -> dict[str, int]:
    if phase == "compaction":  # the delta of generation 2 was published
        return {f"s{n}": 2 if n % 3 == 0 else 1 for n in range(1000)}
    return {f"s{n}": 1 for n in range(1000)}


@pytest.mark.parametrize("phase", ["full", "delta", "compaction"])
def test_a_snapshot_killed_mid_write_leaves_the_previous_one_whole(tmp_path, phase):
    db_path = tmp_path / "engagement.duckdb"
    snapshot_dir = db_path.with_suffix(".snapshots")
    if phase == "full":  # a previous snapshot, by an earlier worker
        source = RecordSource()
        _generation(source, 1, range(1000))
        _snapshot(Snapshotter(db_path, snapshot_dir), source)

    marker = tmp_path / "half-written"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(db_path), str(marker), phase],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert process.poll() is None, "the snapshot process died on its own"
        assert time.monotonic() < deadline, "the snapshot never got half-way"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    expected = _expected_after_kill(phase)
    assert _activity(db_path) == expected
    assert _daily_events(db_path) == expected

    # A new worker takes over from the debris: a whole snapshot of its own.
    source = RecordSource()
    _generation(source, 3, range(1000))
    _snapshot(Snapshotter(db_path, snapshot_dir), source)
    assert _activity(db_path) == {f"s{n}": 3 for n in range(1000)}


def test_superseded_files_go_after_the_grace_period(tmp_path):
    db_path, snapshot_dir, snapshotter, source = _started(tmp_path, 100, grace=3600)
    for generation in (2, 3):  # every key changes: compacted every time
        _generation(source, generation, range(100))
        _snapshot(snapshotter, source)
    bases = _files(snapshot_dir, ACTIVITY, "base-0000")
    assert len(bases) == 3  # all within the grace period

    snapshotter.grace_seconds = 0
    _generation(source, 4, range(100))
    _snapshot(snapshotter, source)
    for table in (ACTIVITY, "students", "engagement_daily"):
        for partition in range(PARTITIONS):
            kept = list((snapshot_dir / table).glob(f"*-{partition:04d}-*"))
            assert len(kept) == 1, (table, partition, kept)
    assert _activity(db_path) == {f"s{n}": 4 for n in range(100)}


class _SourceTable(MutableMapping[bytes, bytes]):
    """A table as the Tracker writes it, feeding a RecordSource."""

    def __init__(self, source: RecordSource, name: str) -> None:
        self.source, self.name, self.partition = source, name, 0

    def __getitem__(self, key: bytes) -> bytes:
        return self.source.tables[self.name][key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.source.put(self.name, key, value, self.partition)

    def __delitem__(self, key: bytes) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.source.tables[self.name])

    def __len__(self) -> int:
        return len(self.source.tables[self.name])


def _body(event_id: str, name: str, sent_us: int) -> bytes:
    sent = datetime.fromtimestamp(sent_us / 1e6, UTC)
    ids = {"team": "team", "student": "s1", "course": "c1", "lesson": "l1"}
    return json.dumps(
        {
            "id": event_id,
            "event": f"alpaclass.{name}",
            "sentDate": sent.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": {ref: {"id": value} for ref, value in ids.items()},
        }
    ).encode()


def test_days_the_worker_lets_go_stay_in_engagement_daily(tmp_path, fixtures_dir):
    """Real folds: a key's old days leave the worker's state, not DuckDB."""
    db_path = tmp_path / "engagement.duckdb"
    snapshot_dir = tmp_path / "snapshots"
    source = RecordSource()
    snapshotter = Snapshotter(db_path, snapshot_dir)
    tracker = Tracker(
        _SourceTable(source, ACTIVITY),
        _SourceTable(source, "students"),
        snapshotter.snapshotted,
    )
    start = 20_700 * DAY_US  # 2026-09-04
    old_day = 20_700
    late_day = old_day + HORIZON_DAYS + 5

    def fold(*bodies: bytes) -> None:
        outcomes = tracker.fold(0, bodies)
        assert outcomes.get("rejected", 0) == 0, outcomes

    def daily() -> dict[int, list[int]]:
        with connect_readonly(db_path) as connection:
            rows = connection.execute(
                "SELECT day, activity_events, visits, lesson_finishes, comments "
                "FROM engagement_daily WHERE student_id = 's1'"
            ).fetchall()
        return {(day - date(1970, 1, 1)).days: counts for day, *counts in rows}

    def snap(whole: Snapshotter | None = None) -> None:
        asyncio.run((whole or snapshotter).snapshot(source, {0}))

    fold(
        _body("a", "student_course_last_seen", start + 10),
        _body("b", "student_lesson_finished", start + 20),
        _body("c", "student_comment_created", start + 30),
    )
    snap()
    assert daily() == {old_day: [3, 1, 1, 1]}
    # Fifty days on, the worker lets the old day go: DuckDB keeps it.
    fold(_body("d", "student_course_last_seen", late_day * DAY_US))
    snap()
    assert daily() == {old_day: [3, 1, 1, 1], late_day: [1, 1, 0, 0]}
    # The next fold knows that snapshot is durable and drops the day for good.
    fold(_body("e", "student_course_last_seen", late_day * DAY_US + 1))
    record = CourseActivity.loads(
        source.tables[ACTIVITY][course_key("team", "s1", "c1")]
    )
    assert record.released == []
    snap()
    assert daily() == {old_day: [3, 1, 1, 1], late_day: [2, 2, 0, 0]}
    # A late event lands in the old day again: the day's total is the sum.
    fold(_body("f", "student_course_last_seen", start + 40))
    snap()
    assert daily() == {old_day: [4, 2, 1, 1], late_day: [2, 2, 0, 0]}
    # Let go a second time, and written twice (a new worker's whole snapshot
    # before the state dropped it): still one row, the same total.
    fold(_body("g", "student_course_last_seen", late_day * DAY_US + 2 * DAY_US))
    snap()
    snap(Snapshotter(db_path, snapshot_dir))
    assert daily() == {
        old_day: [4, 2, 1, 1],
        late_day: [2, 2, 0, 0],
        late_day + 2: [1, 1, 0, 0],
    }


class _Table:
    """What TableWrites uses of a Faust table: its store and changelog name."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog_topic_name = "changelog"


def test_a_redelivered_batch_marks_no_key_changed():
    from app.folder import TableWrites

    courses, students = TableWrites(_Table()), TableWrites(_Table())
    tracker = Tracker(courses, students)

    def fold(*bodies: bytes) -> set[bytes]:
        for writes in (courses, students):
            writes.begin()
        tracker.fold(0, bodies)
        for writes in (courses, students):
            writes.mark_changed(0)
        changed = courses.changed.pop(0, set()) | students.changed.pop(0, set())
        assert set(courses.written) <= set(courses.store)  # written all the same
        return changed

    first = _body("a", "student_course_last_seen", 1_796_000_000_000_000)
    course, student = course_key("team", "s1", "c1"), student_key_of("team", "s1")
    assert fold(first) == {course, student}
    assert fold(first) == set()  # a redelivery: rewritten for the changelog only
    assert set(courses.written) == {course}
    later = _body("b", "student_course_last_seen", 1_796_000_100_000_000)
    assert fold(first, later) == {course}  # the student's names did not change


def test_a_file_once_named_is_never_replaced(tmp_path):
    from analytics.schema import SNAPSHOT_TABLES
    from analytics.snapshots import write_file

    schema = SNAPSHOT_TABLES["rejected_events"]
    path = tmp_path / "rejected_events" / "partition-0000-1-2.parquet"
    first = schema.empty_table()
    write_file(path, first)
    inode = path.stat().st_ino

    with pytest.raises(FileExistsError):
        write_file(path, first)
    write_file(path, first, exist_ok=True)  # the same rows, read again
    assert path.stat().st_ino == inode
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no debris


def test_daily_active_refuses_more_days_than_its_masks_hold(tmp_path):
    import duckdb

    db_path, _, _, _ = _started(tmp_path, 4, grace=0)  # active on 2026-11-30
    as_of = "TIMESTAMPTZ '2026-12-01 00:00:00+00'"
    with connect_readonly(db_path) as connection:
        rows = connection.execute(
            f"SELECT count(*) FROM daily_active_at({as_of}, days := 100)"
        ).fetchone()
        # Active only on the window's last day: one day with anyone active in
        # the 28 days ending then, for the course and for the whole school.
        assert rows == (2,)
        with pytest.raises(duckdb.Error, match="between 1 and 100"):
            connection.execute(f"SELECT * FROM daily_active_at({as_of}, days := 101)")
