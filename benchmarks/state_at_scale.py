"""Memory per key, and the time to be ready after a restart, at a million keys.

    .venv/bin/python benchmarks/state_at_scale.py --keys 1000000

1. The simulator's traffic (``engagement simulate``'s generator), school by
   school, keeping the first course event of each (team, student, course)
   until there are ``--keys`` keys: the most keys for the fewest records.
2. They are produced to a fresh topic, and one worker (``engagement worker``)
   folds them all. Its resident memory is read before and after, and the size
   of its data directory after.
3. The worker is stopped and started again three ways, each timed from the
   start of the process until its /health says it owns every partition with
   its tables recovered; a snapshot then confirms the rows are all there:
   - with its local store, as after a deploy;
   - after ``kill -9``, with the local store as the crash left it;
   - with the local store deleted, so that Faust recovers it from the
     changelog topics.

Results are printed as a table and, with --output, appended to a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import publish  # noqa: E402
from benchmarks.worker_throughput import preload  # noqa: E402
from engagement.kafka import delete_topics, wait_for_lag_zero  # noqa: E402
from engagement.processes import (  # noqa: E402
    Service,
    free_port,
    request_snapshot,
    start_service,
)
from engagement.runtime import broker_for  # noqa: E402
from engagement.settings import Settings  # noqa: E402
from producers.simulate import Scale, simulate  # noqa: E402

PARTITIONS = 8
STUDENTS_PER_SCHOOL = 5000


def first_visits(keys: int, seed: int) -> Iterator[tuple[bytes, bytes]]:
    """(partition key, body) for the first course event of ``keys`` keys."""
    seen: set[tuple[str, str, str]] = set()
    school = 0
    while len(seen) < keys:
        scale = Scale(
            schools=1, students_per_school=STUDENTS_PER_SCHOOL, days=1, seed=seed
        )
        for body in simulate(scale):
            data = body["data"]
            if "course" not in data:
                continue
            # Each call is one school of the same seed: tell them apart.
            team = {**data["team"], "id": f"{data['team']['id']}-{school}"}
            key = (team["id"], data["student"]["id"], data["course"]["id"])
            if key in seen:
                continue
            seen.add(key)
            body = {**body, "data": {**data, "team": team}}
            yield f"{key[0]}:{key[1]}".encode(), orjson.dumps(body)
            if len(seen) == keys:
                return
        school += 1
        seed += 1


def rss_mib(service: Service) -> float:
    return psutil.Process(service.process.pid).memory_info().rss / 2**20


def tree_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


class Worker:
    def __init__(self, bootstrap: str, topic: str, group: str, root: Path) -> None:
        self.port = free_port()
        self.data_dir = root / "worker"
        self.env = {
            "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ENGAGEMENT_KAFKA_TOPIC": topic,
            "ENGAGEMENT_KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
            "ENGAGEMENT_WORKER_APP_ID": group,
            "ENGAGEMENT_WORKER_DATA_DIR": str(self.data_dir),
            "ENGAGEMENT_WORKER_WEB_PORT": str(self.port),
            "ENGAGEMENT_DUCKDB_PATH": str(root / "engagement.duckdb"),
            "ENGAGEMENT_DUCKDB_SNAPSHOT_INTERVAL_SECONDS": "100000",
        }
        self.log = root / "worker.log"

    def start(self) -> Service:
        return start_service(
            "worker",
            "worker",
            self.env,
            f"http://127.0.0.1:{self.port}/health",
            self.log,
        )

    def ready_seconds(self) -> tuple[float, int]:
        """Start the worker; seconds until it owns every partition, recovered.

        Then a snapshot (not timed) counts the rows the state holds.
        """
        started = time.perf_counter()
        self.service = service = self.start()
        while True:
            service.check_alive()
            try:
                health = httpx.get(service.health_url, timeout=5).json()
            except httpx.HTTPError:
                health = {}
            if health.get("ready") and len(health["partitions"]) == PARTITIONS:
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        result = request_snapshot(f"http://127.0.0.1:{self.port}", timeout=3600)
        return seconds, result["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--output", type=Path, help="append the results here")
    args = parser.parse_args()

    started = time.perf_counter()
    records = list(first_visits(args.keys, args.seed))
    elapsed = time.perf_counter() - started
    print(f"{len(records):,} bodies, one per key, made in {elapsed:.0f} s")

    run = f"bench-{secrets.token_hex(3)}"
    topic = f"{run}.alpaclass.webhooks"
    root = Path(tempfile.mkdtemp(prefix=f"{run}-"))
    rows: list[tuple[str, str]] = []
    with broker_for(Settings()) as bootstrap:
        asyncio.run(preload(bootstrap, topic, records))
        del records
        worker = Worker(bootstrap, topic, f"{run}-worker", root)
        try:
            service = worker.start()
            service.wait_healthy(120)
            idle = rss_mib(service)
            started = time.perf_counter()
            asyncio.run(
                wait_for_lag_zero(
                    bootstrap,
                    f"{run}-worker",
                    topic,
                    timeout=7200,
                    poll_interval=0.5,
                    alive=service.check_alive,
                )
            )
            folded = time.perf_counter() - started
            loaded = rss_mib(service)
            disk = tree_mib(worker.data_dir)
            rows += [
                ("keys folded", f"{args.keys:,} in {folded:.0f} s"),
                ("resident memory, idle", f"{idle:,.0f} MiB"),
                ("resident memory, 1 key per body folded", f"{loaded:,.0f} MiB"),
                (
                    "memory per key",
                    f"{(loaded - idle) * 2**20 / args.keys:,.0f} bytes",
                ),
                (
                    "local store (RocksDB) per key",
                    f"{disk * 2**20 / args.keys:,.0f} bytes ({disk:,.0f} MiB)",
                ),
            ]

            service.stop(120)
            seconds, count = worker.ready_seconds()
            rows.append(("ready after a restart", f"{seconds:.1f} s ({count:,} rows)"))

            os.kill(worker.service.process.pid, signal.SIGKILL)
            worker.service.process.wait()
            seconds, count = worker.ready_seconds()
            rows.append(("ready after kill -9", f"{seconds:.1f} s ({count:,} rows)"))

            worker.service.stop(120)
            shutil.rmtree(worker.data_dir)
            seconds, count = worker.ready_seconds()
            rows.append(
                (
                    "ready with the local store deleted (changelog recovery)",
                    f"{seconds:.1f} s ({count:,} rows)",
                )
            )
            worker.service.stop(120)
        finally:
            asyncio.run(delete_topics(bootstrap, [run]))
            shutil.rmtree(root, ignore_errors=True)

    publish(
        f"{args.keys:,} keys",
        ["measure", "value"],
        rows,
        args.output,
        numeric=[False, True],
    )


if __name__ == "__main__":
    main()
