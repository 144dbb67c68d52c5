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
    """Faust's aiokafka consumer, with whole batches for the app's batch topics."""

    @property
    def batch_handlers(self) -> Mapping[str, BatchHandler]:
        return getattr(self.app, "batch_handlers", {})

    async def _drain_messages(self, fetcher: Service) -> None:  # noqa: C901
        # The structure and the stop conditions are those of Faust's own loop.
        stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (stopped() or fetcher_stopped()):
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    # A rebalance began after the fetch: what it returned may
                    # belong to someone else now; read again from the commit.
                    await self.perform_seek()
                    continue
                await self._deliver(records, active)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def _deliver(
        self, records: Mapping[TP, list[ConsumerRecord]], active: set[TP] | None
    ) -> None:
        generation = self.app.consumer_generation_id
        handlers = self.batch_handlers
        pending: list[_Folded] = []
        for tp, fetched in records.items():
            paused = active is not None and tp not in active
            if paused and tp not in self._buffered_partitions:
                continue
            handler = handlers.get(tp.topic)
            if handler is None:
                await self._deliver_one_by_one(tp, fetched)
                continue
            unread = self._unread(tp, fetched)
            for start in range(0, len(unread), MAX_BATCH):
                if self._moved_on(generation):
                    return
                batch = unread[start : start + MAX_BATCH]
                offsets = self._offsets_to_ack(tp, batch)
                durable = await handler.fold(tp, batch)
                if self._moved_on(generation):
                    # The fold yielded (sending its changelog records) and a
                    # rebalance ran meanwhile: it has reset the read offsets
                    # to the committed ones, and they must stay so, or the
                    # records between would be skipped when read again.
                    return
                self._read_offset[tp] = batch[-1].offset
                pending.append((handler, tp, durable, offsets))
                if len(pending) >= SETTLE_EVERY:
                    await self._settle(pending, generation)
                    pending = []
        await self._settle(pending, generation)

    def _moved_on(self, generation: int) -> bool:
        """A rebalance began: the fetched records may be someone else's now."""
        return (
            self.app.consumer_generation_id != generation
            or not self.flow_active
            or self.app.rebalancing
        )

    async def _settle(self, pending: list[_Folded], generation: int) -> None:
        """Acknowledge the folded batches once durable; commit every so often."""
        for handler, tp, durable, offsets in pending:
            result = await durable
            if self._moved_on(generation):
                # Not acknowledged: whoever owns the partition now reads these
                # records again from the committed offset.
                continue
            handler.settle(tp, result)
            self._ack_range(tp, offsets)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    def _unread(self, tp: TP, batch: list[ConsumerRecord]) -> list[ConsumerRecord]:
        # Faust's rule: its read offset is the last record handed on, or the
        # committed offset after a seek, so a record at that offset is read.
        last_read = self._read_offset.get(tp)
        if last_read is None or batch[0].offset >= last_read:
            return batch
        return [record for record in batch if record.offset >= last_read]

    def _offsets_to_ack(self, tp: TP, batch: list[ConsumerRecord]) -> range:
        """Every offset up to the batch's last: the gaps before it are done too.

        Offsets have gaps (transaction markers, compaction), and Faust commits
        only up to its first unacknowledged offset; so the gap since the
        committed offset or the last record read is acknowledged with the
        batch. Offsets below the committed one are not acknowledged again.
        """
        first = batch[0].offset
        last_read = self._read_offset.get(tp)
        committed = self._committed_offset.get(tp)
        if last_read is None:
            start = first if committed is None else committed
        else:
            start = min(first, last_read)
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
