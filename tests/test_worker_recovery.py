"""The worker's state under crashes and rebalances, on the real broker.

Bodies are produced straight to a fresh topic (the receiver is not what these
tests are about), with a tenth of them delivered twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time

import pytest

from engagement.kafka import consumer_lag
from tests.compare import assert_exact
from tests.streams import PARTITIONS, Job, produce, simulated_documents

pytestmark = pytest.mark.kafka


def _lag(job: Job) -> int:
    return asyncio.run(consumer_lag(job.bootstrap, job.app_id, job.topic))


def test_kill_9_mid_stream_then_lost_store_recovers_exactly(job):
    documents = simulated_documents(students=400, redeliveries=0.1, seed=11)
    produce(job.bootstrap, job.topic, documents)

    worker = job.start_worker("worker")
    deadline = time.monotonic() + 120
    lag_at_kill = len(documents)
    # Killed as soon as a commit shows it part-way: the next commit is seconds
    # away, so the records since the last one are read again after restart.
    while not 0 < lag_at_kill < len(documents) and time.monotonic() < deadline:
        time.sleep(0.1)
        lag_at_kill = _lag(job)
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait()
    assert 0 < lag_at_kill < len(documents), "the kill did not land mid-stream"

    worker = job.start_worker("worker")
    job.wait_processed(worker)
    job.snapshot(worker)
    assert_exact(job.db_path, documents)

    # The local store gone: the state comes back from the changelog alone.
    worker.stop()
    shutil.rmtree(job.root / "worker")
    worker = job.start_worker("worker")
    try:
        job.snapshot(worker)
        assert_exact(job.db_path, documents)
    finally:
        worker.stop()


def _settled(job: Job, workers: list, timeout: float = 120) -> list[set[int]]:
    """The partitions each worker owns, once they are ready and cover the topic."""
    deadline = time.monotonic() + timeout
    while True:
        health = [job.health(w) for w in workers]
        owned = [set(h["partitions"]) for h in health]
        covered = set().union(*owned) == set(range(PARTITIONS))
        if (all(h["ready"] for h in health) and covered) or (
            time.monotonic() > deadline
        ):
            return owned
        time.sleep(0.5)


def test_two_workers_share_the_keys_and_one_takes_over(job):
    documents = simulated_documents(students=400, redeliveries=0.1, seed=12)
    first, second = documents[: len(documents) // 2], documents[len(documents) // 2 :]

    # Worker two joins while worker one works through a backlog: the
    # rebalance lands in the middle of folds, and records one had fetched for
    # partitions it gives up must be read again by whoever owns them next.
    produce(job.bootstrap, job.topic, first)
    workers = [job.start_worker("one")]
    try:
        workers.append(job.start_worker("two"))
        one, two = workers
        owned = _settled(job, [one, two])
        assert owned[0] and owned[1] and not owned[0] & owned[1]
        assert owned[0] | owned[1] == set(range(PARTITIONS))

        job.wait_processed(one, two)
        job.snapshot(one)
        job.snapshot(two)
        assert_exact(job.db_path, first)

        two.stop()
        produce(job.bootstrap, job.topic, second)
        job.wait_processed(one)
        job.snapshot(one)
        assert set(job.health(one)["partitions"]) == set(range(PARTITIONS))
        assert_exact(job.db_path, documents)
    finally:
        for worker in workers:
            worker.stop()
