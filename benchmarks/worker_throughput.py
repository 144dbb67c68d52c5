"""Events per second through one worker, beside its baselines, in one run.

    .venv/bin/python benchmarks/worker_throughput.py --students 48000

1. Simulated bodies (``engagement simulate``'s generator) are produced once to
   a fresh topic of the broker (ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS, or the
   local one, started if needed).
2. Each contender then consumes the whole topic with a fresh consumer group
   and persistent state, timed from the start of its process until its group
   has committed the whole topic (so start-up and the first rebalance count):
   - ``worker``: the real worker (``engagement worker``), as deployed;
   - ``hand-written``: the same folding code (app.tracking.Tracker) on a plain
     aiokafka consumer, with RocksDB (rocksdict) and a changelog topic written
     by hand, offsets committed after the changelog is flushed;
   - ``naive``: a Faust agent that validates each body with pydantic and
     writes the table once per event;
   - ``in-memory``: the folding code alone on dicts, no Kafka and no RocksDB,
     in the worker's batches: the ceiling of the engagement code itself;
   - ``faust-count`` (only with --only): a Faust agent that only counts.

Results are printed as a table and, with --output, appended to a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import publish  # noqa: E402
from engagement.kafka import (  # noqa: E402
    delete_topics,
    ensure_topic,
    wait_for_lag_zero,
)
from engagement.processes import free_port  # noqa: E402
from engagement.runtime import broker_for  # noqa: E402
from engagement.settings import Settings  # noqa: E402
from producers.simulate import Scale, simulate  # noqa: E402

PARTITIONS = 8


def generate(students: int, days: int, seed: int) -> list[tuple[bytes, bytes]]:
    scale = Scale(schools=10, students_per_school=students // 10, days=days, seed=seed)
    records = []
    for body in simulate(scale):
        data = body["data"]
        key = f"{data['team']['id']}:{data['student']['id']}".encode()
        records.append((key, orjson.dumps(body)))
    return records


async def preload(bootstrap: str, topic: str, records: list) -> None:
    await ensure_topic(bootstrap, topic, PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def wait_drained(
    bootstrap: str, group: str, topic: str, process: subprocess.Popen
) -> float:
    """Seconds until ``group`` has committed the whole topic."""

    def alive() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"{group} exited with {process.returncode}")

    started = time.perf_counter()
    await wait_for_lag_zero(
        bootstrap, group, topic, timeout=3600, poll_interval=0.25, alive=alive
    )
    return time.perf_counter() - started


def run_faust(
    bootstrap: str, topic: str, group: str, workdir: Path, module: str | None
) -> float:
    env = {
        **os.environ,
        "ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ENGAGEMENT_KAFKA_TOPIC": topic,
        "ENGAGEMENT_KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "ENGAGEMENT_WORKER_APP_ID": group,
        "ENGAGEMENT_WORKER_DATA_DIR": str(workdir / group),
        "ENGAGEMENT_WORKER_WEB_PORT": str(free_port()),
        "ENGAGEMENT_DUCKDB_PATH": str(workdir / f"{group}.duckdb"),
        "ENGAGEMENT_DUCKDB_SNAPSHOT_INTERVAL_SECONDS": "100000",
    }
    command = (
        [sys.executable, "-m", "engagement", "worker", "--loglevel", "warn"]
        if module is None
        else [sys.executable, "-m", "faust", "-A", module, "worker", "-l", "warn"]
    )
    log = open(workdir / f"{group}.log", "wb")  # noqa: SIM115 - the child's
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    try:
        # Measured from the start of the process: Faust's start-up is part of
        # what a restart costs, and it is small beside the stream.
        return asyncio.run(wait_drained(bootstrap, group, topic, process))
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def run_in_memory(records: list[tuple[bytes, bytes]]) -> float:
    """The folding code alone: dicts for tables, no Kafka, no RocksDB.

    Records are grouped by the partition Kafka would give them and folded in
    batches of the worker's size: the ceiling of the engagement code itself.
    """
    from app.batching import MAX_BATCH
    from app.tracking import Tracker

    partitions: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for key, value in records:
        partitions[(murmur2(key) & 0x7FFFFFFF) % PARTITIONS].append(value)
    tracker = Tracker({}, {})
    started = time.perf_counter()
    for partition, values in enumerate(partitions):
        for start in range(0, len(values), MAX_BATCH):
            tracker.fold(partition, values[start : start + MAX_BATCH])
    return time.perf_counter() - started


def run_hand_written(bootstrap: str, topic: str, group: str, workdir: Path) -> float:
    from benchmarks.hand_written import consume

    started = time.perf_counter()
    asyncio.run(consume(bootstrap, topic, group, workdir / group))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=44_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--only",
        choices=["worker", "hand-written", "naive", "in-memory", "faust-count"],
        action="append",
        help="run only these (faust-count: Faust's ceiling, an agent that counts)",
    )
    parser.add_argument("--output", type=Path, help="append the results here")
    args = parser.parse_args()
    contenders = args.only or ["worker", "hand-written", "naive", "in-memory"]

    records = generate(args.students, args.days, args.seed)
    keys = {
        (json.loads(v)["data"].get("course") or {}).get("id", "") + k.decode()
        for k, v in records
    }
    print(f"{len(records):,} bodies over {len(keys):,} (team, student, course) keys")

    run = f"bench-{secrets.token_hex(3)}"
    topic = f"{run}.alpaclass.webhooks"
    workdir = Path(tempfile.mkdtemp(prefix=f"{run}-"))
    results: dict[str, float] = {}
    with broker_for(Settings()) as bootstrap:
        asyncio.run(preload(bootstrap, topic, records))
        try:
            for name in contenders:
                group = f"{run}-{name}"
                if name == "worker":
                    seconds = run_faust(bootstrap, topic, group, workdir, None)
                elif name in ("naive", "faust-count"):
                    module = f"benchmarks.{name.replace('-', '_')}_app"
                    seconds = run_faust(bootstrap, topic, group, workdir, module)
                elif name == "in-memory":
                    seconds = run_in_memory(records)
                else:
                    seconds = run_hand_written(bootstrap, topic, group, workdir)
                results[name] = len(records) / seconds
                print(f"{name:>13}: {results[name]:>9,.0f} events/s ({seconds:.1f} s)")
        finally:
            asyncio.run(delete_topics(bootstrap, [run]))
            shutil.rmtree(workdir, ignore_errors=True)

    worker = results.get("worker")
    publish(
        f"{len(records):,} bodies, {len(keys):,} keys",
        ["contender", "events/s", "worker ÷ contender"],
        [
            [
                name,
                f"{rate:,.0f}",
                f"{worker / rate:.2f}×" if worker and name != "worker" else "",
            ]
            for name, rate in results.items()
        ],
        args.output,
        numeric=[False, True, True],
    )


if __name__ == "__main__":
    main()
