"""Faust's Kafka transport, with the webhooks topic handed over a batch at a time.

Faust gives each record to its agents through a per-record path: flow control,
a lock, two futures raced against each other, a queue hop into the stream and
the stream's own bookkeeping. Measured here, that path alone holds an agent
that only counts to about 3,500 records/s (docs/benchmarks.md), a tenth of
what the engagement code can fold. So the worker keeps everything Faust is
good at -- the consumer group and its co-partitioned assignment, the RocksDB
tables, changelog recovery, standbys, timers and the web server -- and takes
the records of the topics it names off Faust's consumer as fetched: a list per
partition, folded in one call.

The per-record path stays for every other topic (the changelogs Faust reads
while recovering a table).

A batch's offsets are acknowledged only once what it wrote is durable: the
handler's changelog records delivered. A failure leaves a hole in the
acknowledged offsets, and Faust never commits past a hole, so the records are
consumed again after a restart. A rebalance that begins while a batch is being
folded discards its acknowledgement the same way (its records are read again
from the committed offset by whoever owns the partition next).

faust-streaming is pinned below 0.16 because this overrides its consumer's
fetch loop, whose attributes are private.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, cast

from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service


class BatchHandler(Protocol):
    """What the app gives the consumer for one topic."""

    async def fold(self, tp: TP, records: Sequence[ConsumerRecord]) -> Awaitable[Any]:
        """Fold a partition's records, in offset order.

        Returns an awaitable that completes once what the fold wrote is
        durable; it raises if that failed.
        """

    def settle(self, tp: TP, durable: Any) -> None:
        """The batch is durable and the partition still ours: finish it."""


# Records folded in one call: enough to coalesce a key's events, few enough to
# keep the event loop (the web pages, timers) answering between calls, about
# half a second here. Measured on 222k simulated bodies: 2,000 per call gave
# 5,900 events/s, 5,000 gave 8,000, and no bound 7,400.
MAX_BATCH = 5000
# Folded batches whose changelog deliveries are awaited together.
SETTLE_EVERY = 4

_Folded = tuple[BatchHandler, TP, Awaitable[Any], range]


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with whole batches for the app's batch topics.

    For each partition of a batch topic it keeps the next offset to fold, and
    folds only a batch that continues from there. Records fetched and then
    not folded or not acknowledged -- a rebalance began meanwhile -- are read
    again: the partition is sought back to its first such record as soon as
    the rebalance is over. Without that, the fetch position is already past
    them, and acknowledging the records that follow would commit over them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_offset: dict[TP, int] = {}
        self._rewind: dict[TP, int] = {}
        self._sought_over: dict[TP, tuple[int, int]] = {}
        self._read_before_revoke: set[TP] = set()

    @property
    def batch_handlers(self) -> Mapping[str, BatchHandler]:
        return getattr(self.app, "batch_handlers", {})

    def caught_up(self, tp: TP) -> bool:
        """Every record of a batch topic's partition, as of the last fetch,
        folded. False while nothing was fetched since it was assigned."""
        if tp in self._rewind:
            return False
        try:
            highwater = self.highwater(tp)
        except (AssertionError, IllegalStateError, KeyError):
            return False  # not assigned (any more)
        if highwater is None:
            return False
        return self._next_offset.get(tp, 0) >= highwater

    async def _drain_messages(self, fetcher: Service) -> None:  # noqa: C901
        # The structure and the stop conditions are those of Faust's own loop.
        stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (stopped() or fetcher_stopped()):
                if self._rewind and not self._rebalancing():
                    await self._seek_back()
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    # A rebalance began after the fetch: what it returned may
                    # belong to someone else now; read again from the commit.
                    await self._seek_committed_unless_reassigned()
                    continue
                await self._deliver(records, active)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        handlers = self.batch_handlers
        for partition, offset in committed.items():
            tp = TP(partition.topic, partition.partition)
            if tp.topic not in handlers:
                continue
            if offset is not None and offset > 0:
                # Read again from the commit, at or before any record left
                # unacknowledged.
                self._rewind.pop(tp, None)
                self._next_offset[tp] = offset
            else:
                # Nothing committed: aiokafka leaves the position where it
                # was, possibly past records fetched and never acknowledged.
                # Reading from the start is what "from the commit" means here.
                read = tp in self._next_offset or tp in self._read_before_revoke
                if read or tp in self._rewind:
                    self._rewind[tp] = 0
                self._next_offset.pop(tp, None)
            self._read_before_revoke.discard(tp)
        return committed

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        if partition.topic in self.batch_handlers:
            self._next_offset[TP(partition.topic, partition.partition)] = offset

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            if self._next_offset.pop(tp, None) is not None or tp in self._rewind:
                self._read_before_revoke.add(tp)
            self._rewind.pop(tp, None)
            self._sought_over.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def _rebalancing(self) -> bool:
        return not self.flow_active or self.app.rebalancing

    def _leave_unread(self, tp: TP, offset: int) -> None:
        """Records of tp from offset on were fetched but not folded and acked."""
        self._rewind[tp] = min(offset, self._rewind.get(tp, offset))

    async def _seek_back(self) -> None:
        assigned = self.assignment()
        rewind, self._rewind = self._rewind, {}
        for tp, offset in rewind.items():
            if tp in assigned:
                self.log.info(
                    "Reading %s[%d] again from offset %d: records fetched "
                    "there were left unacknowledged by a rebalance",
                    tp.topic,
                    tp.partition,
                    offset,
                )
                try:
                    await self.seek(tp, offset)
                except IllegalStateError:
                    # Revoked meanwhile: its next owner reads from the commit.
                    continue

    async def _seek_committed_unless_reassigned(self) -> None:
        try:
            await self.perform_seek()
        except IllegalStateError:
            # The assignment changed while seeking (a partition went to a
            # worker that just joined); the rebalance under way seeks the
            # partitions this worker keeps.
            self.log.info("Assignment changed while seeking; the rebalance seeks")

    def _unread(self, tp: TP, fetched: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """The records that continue the partition from its next offset.

        A batch that starts past the next offset means records were fetched
        and dropped on the way: the partition is sought back. Should the
        fetch after that seek start at the same place again, the offsets
        between hold no records (transaction markers, compaction, retention)
        and the batch is taken.
        """
        expected = self._next_offset.get(tp)
        first = fetched[0].offset
        if expected is None or first == expected:
            self._sought_over.pop(tp, None)
            return fetched
        if first < expected:
            return [record for record in fetched if record.offset >= expected]
        if self._sought_over.get(tp) == (expected, first):
            del self._sought_over[tp]
            return fetched
        self._sought_over[tp] = (expected, first)
        self._leave_unread(tp, expected)
        return []

    async def _deliver(
        self, records: Mapping[TP, list[ConsumerRecord]], active: set[TP] | None
    ) -> None:
        generation = self.app.consumer_generation_id
        handlers = self.batch_handlers
        pending: list[_Folded] = []
        # Records of the other topics (the tables' changelogs, read by Faust's
        # recovery) go first, and always: a fold abandoned for a rebalance
        # must not take them along, or recovery would never see them.
        batches = []
        for tp, fetched in records.items():
            handler = handlers.get(tp.topic)
            paused = active is not None and tp not in active
            if paused and tp not in self._buffered_partitions:
                if handler is not None:
                    self._leave_unread(tp, fetched[0].offset)
            elif handler is None:
                await self._deliver_one_by_one(tp, fetched)
            else:
                batches.append((tp, fetched))
        for index, (tp, fetched) in enumerate(batches):
            handler = handlers[tp.topic]
            unread = self._unread(tp, fetched)
            for start in range(0, len(unread), MAX_BATCH):
                if self._moved_on(generation):
                    self._abandon(batches[index:], pending)
                    return
                batch = unread[start : start + MAX_BATCH]
                offsets = self._offsets_to_ack(tp, batch)
                durable = await handler.fold(tp, batch)
                if self._moved_on(generation):
                    # The fold yielded (sending its changelog records) and a
                    # rebalance ran meanwhile.
                    self._leave_unread(tp, offsets.start)
                    self._abandon(batches[index + 1 :], pending)
                    return
                self._next_offset[tp] = batch[-1].offset + 1
                self._read_offset[tp] = batch[-1].offset
                pending.append((handler, tp, durable, offsets))
                if len(pending) >= SETTLE_EVERY:
                    await self._settle(pending, generation)
                    pending = []
        await self._settle(pending, generation)

    def _abandon(
        self, rest: list[tuple[TP, list[ConsumerRecord]]], pending: list[_Folded]
    ) -> None:
        """A rebalance began: nothing more is folded or acknowledged now."""
        for _handler, tp, _durable, offsets in pending:
            self._leave_unread(tp, offsets.start)
        for tp, fetched in rest:
            self._leave_unread(tp, self._next_offset.get(tp, fetched[0].offset))

    def _moved_on(self, generation: int) -> bool:
        """A rebalance began: the fetched records may be someone else's now."""
        return self.app.consumer_generation_id != generation or self._rebalancing()

    async def _settle(self, pending: list[_Folded], generation: int) -> None:
        """Acknowledge the folded batches once durable; commit every so often."""
        for handler, tp, durable, offsets in pending:
            result = await durable
            if self._moved_on(generation):
                self._leave_unread(tp, offsets.start)
                continue
            handler.settle(tp, result)
            self._ack_range(tp, offsets)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    def _offsets_to_ack(self, tp: TP, batch: list[ConsumerRecord]) -> range:
        """Every offset from the partition's next one to the batch's last.

        Offsets have gaps (transaction markers, compaction), and Faust commits
        only up to its first unacknowledged offset; so a gap before the batch
        is acknowledged with it. _unread has made sure the gap holds no record.
        Offsets below the committed one are not acknowledged again.
        """
        start = batch[0].offset
        expected = self._next_offset.get(tp)
        if expected is not None:
            start = min(start, expected)
        committed = self._committed_offset.get(tp)
        if committed is not None:
            start = max(start, committed)
        return range(start, batch[-1].offset + 1)

    def _ack_range(self, tp: TP, offsets: range) -> None:
        index = self._acked_index[tp]
        new = [offset for offset in offsets if offset not in index]
        if new:
            index.update(new)
            self._acked[tp].extend(new)
            self._n_acked += len(new)

    async def _deliver_one_by_one(self, tp: TP, batch: list[ConsumerRecord]) -> None:
        """Faust's per-record path, for the topics without a batch handler."""
        callback = self.callback
        for record in batch:
            last_read = self._read_offset.get(tp)
            if last_read is not None and record.offset < last_read:
                continue
            await self.wait_first(
                callback(self._to_message(tp, record)), self.suspend_flow.wait()
            )
            self._read_offset[tp] = record.offset


class Transport(faust_aiokafka.Transport):
    """``engagement-kafka://``: the aiokafka transport with batch delivery."""

    Consumer = cast(Any, BatchingConsumer)
