"""The batching consumer's offset bookkeeping, under rebalances at any moment.

No broker: the consumer's fetch, seek and commit are replaced by a log held
in the test, so that a rebalance can be made to begin at exactly the awkward
moments (during a fold, after the rebalance's own seek has already run). What
is checked is the promise the worker's exactness rests on: an offset is
committed only once its record was folded, and every record is folded in the
end. The broker-backed counterpart is tests/test_worker_recovery.py.
"""

from __future__ import annotations

import asyncio
import random

import faust
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

import app.batching as batching
from app.batching import BatchingConsumer

TOPIC = "webhooks"
PARTITIONS = 3


class Broker:
    """Partition logs (with holes in their offsets), positions and commits."""

    def __init__(self, rng: random.Random) -> None:
        self.logs: dict[TP, list[int]] = {}
        for partition in range(PARTITIONS):
            offsets, offset = [], 0
            for _ in range(rng.randint(1, 60)):
                offset += 1 if rng.random() > 0.1 else rng.randint(2, 4)
                offsets.append(offset)
            self.logs[TP(TOPIC, partition)] = offsets
        self.position = {tp: 0 for tp in self.logs}
        self.committed: dict[TP, int | None] = {tp: None for tp in self.logs}

    def fetch(self, rng: random.Random) -> dict[TP, list[ConsumerRecord]]:
        records = {}
        for tp, log in self.logs.items():
            waiting = [offset for offset in log if offset >= self.position[tp]]
            if waiting:
                taken = waiting[: rng.randint(1, 12)]
                records[tp] = [_record(tp, offset) for offset in taken]
                self.position[tp] = taken[-1] + 1
        return records


class ConsumerThread:
    """Stands in for Faust's aiokafka thread, with aiokafka's seek rules."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def seek_to_committed(self) -> dict[TP, int | None]:
        # aiokafka moves a partition to its commit only when there is one
        # above 0; otherwise the position stays where it was.
        for tp, offset in self.broker.committed.items():
            if offset:
                self.broker.position[tp] = offset
        return dict(self.broker.committed)

    def seek(self, tp: TP, offset: int) -> None:
        self.broker.position[tp] = offset

    def assignment(self) -> set[TP]:
        return set(self.broker.logs)


def _record(tp: TP, offset: int) -> ConsumerRecord:
    return ConsumerRecord(
        tp.topic, tp.partition, offset, 0, 0, None, b"{}", None, 0, 2, []
    )


class Handler:
    """Folds by remembering offsets; may start a rebalance while it folds."""

    def __init__(self, on_fold) -> None:
        self.folded: dict[TP, set[int]] = {}
        self.on_fold = on_fold

    async def fold(self, tp, records):
        self.folded.setdefault(tp, set()).update(r.offset for r in records)
        await self.on_fold()
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def settle(self, tp, result) -> None:
        pass


def _consumer(broker: Broker, handler: Handler) -> BatchingConsumer:
    app = faust.App("batching-test", broker="engagement-kafka://127.0.0.1:1")
    app.batch_handlers = {TOPIC: handler}
    consumer = app.consumer
    consumer._commit_every = None
    consumer._thread = ConsumerThread(broker)

    async def app_revoked(revoked):
        pass

    consumer._on_partitions_revoked = app_revoked
    return consumer


class Rebalances:
    """Eager rebalances, in the phases the worker lives through.

    One begins during a fold (another coroutine runs while the fold sends
    its changelog): the generation moves on, every partition is revoked and
    reassigned. Its seek to the committed offsets comes then, or a few
    fetches later (Faust resumes the flow to read changelogs before it seeks
    the stream partitions), and the app stays flagged as rebalancing for a
    few fetches after that.
    """

    def __init__(self, rng: random.Random, consumer: BatchingConsumer) -> None:
        self.rng, self.consumer = rng, consumer
        self.seek_in: int | None = None
        self.end_in = 0

    async def maybe_begin(self) -> None:
        if self.consumer.app.rebalancing or self.rng.random() > 0.15:
            return
        consumer = self.consumer
        consumer.app.consumer_generation_id += 1
        consumer.app.rebalancing = True
        await consumer.on_partitions_revoked(consumer.assignment())
        self.seek_in = self.rng.randint(0, 2)
        self.end_in = self.rng.randint(0, 3)
        await self.step()

    async def step(self) -> None:
        if self.seek_in is not None:
            if self.seek_in == 0:
                self.seek_in = None
                await self.consumer.perform_seek()
            else:
                self.seek_in -= 1
        elif self.end_in > 0:
            self.end_in -= 1
        else:
            self.consumer.app.rebalancing = False


async def _run(seed: int) -> None:
    rng = random.Random(seed)
    broker = Broker(rng)

    async def on_fold():
        await rebalances.maybe_begin()

    handler = Handler(on_fold)
    consumer = _consumer(broker, handler)
    rebalances = Rebalances(rng, consumer)
    await consumer.perform_seek()

    for _step in range(600):
        await rebalances.step()
        if consumer._rewind and not consumer._rebalancing():
            await consumer._seek_back()
        records = broker.fetch(rng)
        if records:
            await consumer._deliver(records, None)
        for tp in broker.logs:
            offset = consumer._new_offset(tp)
            if offset is not None:
                consumer._committed_offset[tp] = broker.committed[tp] = offset
                below = {o for o in broker.logs[tp] if o < offset}
                assert below <= handler.folded.get(tp, set()), (
                    f"{tp.partition}: committed {offset} over records never folded"
                )

    for tp, log in broker.logs.items():
        assert handler.folded.get(tp, set()) >= set(log)
        assert broker.committed[tp] == log[-1] + 1


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_commits_cover_only_folded_records_whatever_the_rebalances(seed):
    asyncio.run(_run(seed))


def test_a_partition_left_mid_fetch_is_read_again(monkeypatch):
    """The race seen on the broker: records dropped after the rebalance's seek."""
    monkeypatch.setattr(batching, "MAX_BATCH", 5)
    rng = random.Random(1)
    broker = Broker(rng)
    tp = TP(TOPIC, 0)
    broker.logs = {tp: list(range(20))}
    broker.position = {tp: 0}
    broker.committed = {tp: None}

    folds = {"count": 0}

    async def on_fold():
        folds["count"] += 1
        if folds["count"] == 1:
            consumer.app.rebalancing = True
            await consumer.perform_seek()

    handler = Handler(on_fold)
    consumer = _consumer(broker, handler)

    async def run():
        await consumer.perform_seek()
        await consumer._deliver(broker.fetch_all(), None)
        consumer.app.rebalancing = False
        assert consumer._rewind == {tp: 0}
        await consumer._seek_back()
        await consumer._deliver(broker.fetch_all(), None)

    def fetch_all():
        records = [_record(tp, o) for o in broker.logs[tp] if o >= broker.position[tp]]
        broker.position[tp] = broker.logs[tp][-1] + 1
        return {tp: records}

    broker.fetch_all = fetch_all
    asyncio.run(run())
    assert handler.folded[tp] == set(range(20))
    assert consumer._new_offset(tp) == 20


def test_a_partition_revoked_while_seeking_does_not_stop_the_consumer():
    from aiokafka.errors import IllegalStateError

    class Revoking(ConsumerThread):
        async def seek_to_committed(self):
            raise IllegalStateError("No current assignment for partition")

        def seek(self, tp, offset):
            raise IllegalStateError("No current assignment for partition")

    async def run() -> None:
        broker = Broker(random.Random(1))
        consumer = _consumer(broker, Handler(_nothing))
        consumer._thread = Revoking(broker)
        await consumer._seek_committed_unless_reassigned()  # raised before
        consumer._rewind[TP(TOPIC, 0)] = 3
        await consumer._seek_back()
        assert consumer._rewind == {}  # its next owner reads from the commit

    asyncio.run(run())


async def _nothing() -> None:
    return None


def test_changelog_records_reach_recovery_even_when_a_fold_is_abandoned():
    """Records of other topics are not dropped with a batch a rebalance stopped."""
    changelog = TP("engagement-students-changelog", 1)
    broker = Broker(random.Random(2))
    tp = TP(TOPIC, 0)

    async def on_fold():
        consumer.app.rebalancing = True  # a rebalance begins while it folds

    handler = Handler(on_fold)
    consumer = _consumer(broker, handler)
    delivered: list[int] = []

    async def one_by_one(tp, batch):
        delivered.extend(record.offset for record in batch)

    consumer._deliver_one_by_one = one_by_one

    async def run():
        # The webhooks' records come first in the fetch, the changelog's after.
        records = {
            tp: [_record(tp, offset) for offset in (0, 1, 2)],
            changelog: [_record(changelog, offset) for offset in range(5)],
        }
        await consumer._deliver(records, None)

    asyncio.run(run())
    assert delivered == [0, 1, 2, 3, 4]
    assert handler.folded[tp] == {0, 1, 2}  # folded, then left unacknowledged
