"""Inactivity checks at a million keys: the worker's deadline index beside a scan.

    .venv/bin/python benchmarks/alert_checks.py --keys 1000000

No broker: course records are made here, as the worker's tables hold them,
over 8 partitions, and written to a RocksDB store (rocksdict, as Faust's).
Each key was last seen at a time spread over the last 40 days; --crossings
of them (the same number at every table size) cross the 7-day threshold
during the measured --seconds. A clock the benchmark moves by --interval
seconds per check stands in for the wall clock; what a check costs is real
CPU time.

In the same run, for --keys and for a tenth of them:

- index: the worker's AlertChecker. Its index is rebuilt from the store (as
  after a restart); then it catches up, as the worker does, a check per
  interval of at most app.alert_flow.CHECK_LIMIT keys per partition, until
  nothing is due (most keys are past a threshold, never alerted); then one
  check per interval for --seconds. Alerts are recorded in the store and
  observed, as the alerts topic's handler does (not counted in the checks).
- scan: the floor of a scheduler that reads every record at each check and
  decodes only what deciding needs (the header and the ``alerted`` entry,
  app.state.alert_summary), for --scan-checks checks.

Reported: CPU per check (over all partitions), alerts per check, and the
delay from a crossing to its alert: the clock's wait for the next check plus
the check's own duration. Printed and, with --output, appended to a file.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rocksdict import Rdict, WriteBatch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.alert_checker import AlertChecker  # noqa: E402
from app.alert_flow import CHECK_LIMIT, alert_key, recorded  # noqa: E402
from app.alerts import DAY_US, due_thresholds  # noqa: E402
from app.state import CourseActivity, alert_summary, course_key  # noqa: E402
from benchmarks.report import publish  # noqa: E402
from engagement.alerts_config import AlertRules  # noqa: E402

SECOND_US = 1_000_000
THRESHOLDS = (7.0, 14.0, 30.0)


PARTITIONS = 8
# When the measured checks begin, after the start: catching up ends before.
STEADY_AFTER_S = 900


def make_store(path: Path, keys: int, crossings: int, run_s: float, start_us: int):
    """Records of ``keys`` keys in a RocksDB store; ``crossings`` to come."""
    rng = random.Random(keys)
    db = Rdict(str(path))
    batch = WriteBatch()
    steady_us = start_us + STEADY_AFTER_S * SECOND_US
    for n in range(keys):
        if n < crossings:  # crosses 7 days during the measured checks
            offset = rng.randrange(1, int(run_s * SECOND_US))
            last = steady_us - 7 * DAY_US + offset
        else:
            last = start_us - rng.randrange(0, 40 * DAY_US)
        state = CourseActivity(
            f"team{n % 50}", f"s{n}", f"c{n % 7}", partition=n % PARTITIONS
        )
        state.first_seen_at = state.last_seen_at = last
        state.counted = {f"e{n}": [last, 0]}
        state.days = {last // DAY_US: [1, 1, 0, 0]}
        state.student_name = [last, f"e{n}", f"Student {n}"]
        if n % 20 == 0:
            state.course = [last, f"e{n}", 1]  # finished: never alerted
        batch.put(
            course_key(state.team_id, state.student_id, state.course_id), state.dumps()
        )
        if len(batch) >= 50_000:
            db.write(batch)
            batch = WriteBatch()
    db.write(batch)
    return db


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def run_index(db: Rdict, start_us: int, args: argparse.Namespace) -> dict:
    clock = Clock(start_us)
    checker = AlertChecker(AlertRules.load(None), clock)

    def lookup(key: bytes) -> CourseActivity | None:
        raw = db.get(key)
        return None if raw is None else CourseActivity.loads(raw)

    def check_all(catching_up: bool) -> tuple[list, float]:
        """One check of every partition, as the worker's timer runs it."""
        cpu = time.process_time()
        alerts = []
        for partition in range(PARTITIONS):
            alerts += checker.check(
                partition, lookup, lambda key: None, catching_up, CHECK_LIMIT
            )
        cost = time.process_time() - cpu
        for alert in alerts:  # what the alerts topic's handler does
            key = alert_key(alert)
            state = CourseActivity.loads(db[key])
            state.alerted = recorded(state.alerted, alert)
            db[key] = state.dumps()
            checker.observe_course(state)
        return alerts, cost

    cpu = time.process_time()
    for partition in range(PARTITIONS):
        checker.start_rebuild(partition)
    for raw in db.values():
        checker.observe_course(alert_summary(raw), rebuilding=True)
    for partition in range(PARTITIONS):
        checker.finish_rebuild(partition)
    rebuild_s = time.process_time() - cpu

    catch_up_costs, caught_up = [], 0
    while any(checker.has_due(p) for p in range(PARTITIONS)):
        clock.now_us += int(args.interval * SECOND_US)
        alerts, cost = check_all(catching_up=not catch_up_costs)
        catch_up_costs.append(cost)
        caught_up += len(alerts)
    assert clock.now_us < start_us + STEADY_AFTER_S * SECOND_US, "catch-up too long"

    while clock.now_us < start_us + STEADY_AFTER_S * SECOND_US:  # not measured
        clock.now_us += int(args.interval * SECOND_US)
        check_all(catching_up=False)
    costs, delays, alerted = [], [], 0
    for _ in range(int(args.seconds / args.interval)):
        clock.now_us += int(args.interval * SECOND_US)
        alerts, cost = check_all(catching_up=False)
        costs.append(cost)
        alerted += len(alerts)
        for alert in alerts:
            crossed = alert.last_seen_us + round(alert.threshold_days * DAY_US)
            delays.append((clock.now_us - crossed) / SECOND_US + cost)
    return {
        "rebuild_s": rebuild_s,
        "caught_up": caught_up,
        "catch_up_checks": len(catch_up_costs),
        "catch_up_max_s": max(catch_up_costs),
        "costs": costs,
        "delays": delays,
        "alerts": alerted,
    }


def run_scan(db: Rdict, start_us: int, args: argparse.Namespace) -> dict:
    """Each check reads every record and decides from it, as a cron job would."""
    now = start_us
    costs, delays, alerted = [], [], 0
    for _ in range(args.scan_checks):
        now += int(args.interval * SECOND_US)
        cpu = time.process_time()
        due = []
        for raw in db.values():
            state = alert_summary(raw)
            if state.course_finished or state.last_seen_at is None:
                continue
            done = None
            if state.alerted is not None and state.alerted[0] == state.last_seen_at:
                done = float(state.alerted[1])
            crossed = due_thresholds(state.last_seen_at, done, THRESHOLDS, now, False)
            if crossed:
                due.append((state, crossed))
        cost = time.process_time() - cpu
        costs.append(cost)
        # Counted, not recorded: the keys due are the first check's backlog.
        alerted += len(due)
        delays.append(args.interval + cost)
    return {"costs": costs, "delays": delays, "alerts": alerted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--crossings", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--scan-checks", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    start_us = time.time_ns() // 1000
    rows = []
    for keys in (args.keys // 10, args.keys):
        with tempfile.TemporaryDirectory(prefix="alert-checks-") as folder:
            made = time.monotonic()
            db = make_store(
                Path(folder) / "db", keys, args.crossings, args.seconds, start_us
            )
            print(
                f"{keys} records written in {time.monotonic() - made:.1f} s",
                file=sys.stderr,
            )
            index = run_index(db, start_us, args)
            scan = run_scan(db, start_us, args)
            db.close()
        mean = statistics.fmean(index["costs"])
        rows.append(
            [
                f"{keys:,}",
                "index",
                f"{index['rebuild_s']:.1f}",
                f"{index['caught_up']:,} in {index['catch_up_checks']} checks, "
                f"≤ {index['catch_up_max_s']:.2f} s each",
                f"{mean * 1000:.2f} (max {max(index['costs']) * 1000:.1f})",
                f"{index['alerts'] / len(index['costs']):.1f}",
                f"{max(index['delays']):.2f}",
            ]
        )
        rows.append(
            [
                f"{keys:,}",
                "scan",
                "—",
                "—",
                f"{statistics.fmean(scan['costs']) * 1000:.0f}",
                f"{scan['alerts'] / len(scan['costs']):,.0f} due",
                f"{max(scan['delays']):.2f}",
            ]
        )
    publish(
        f"inactivity checks, every {args.interval:g} s for {args.seconds:g} s, "
        f"{args.crossings:,} keys crossing 7 days meanwhile",
        [
            "keys",
            "check",
            "rebuild s",
            "catching up: alerts, CPU",
            "CPU ms per check",
            "alerts per check",
            "max delay s",
        ],
        rows,
        args.output,
        numeric=(True, False, True, False, True, True, True),
    )


if __name__ == "__main__":
    main()
