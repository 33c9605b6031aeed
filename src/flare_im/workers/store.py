"""The store worker (``flare worker store``): the messages topic into the message store, in batches.

At-least-once: offsets are committed only after a batch is written, so a worker killed mid-batch leaves it
to the next member of the group, which writes it again. Writing is idempotent on (conversation, seq): the
store takes an exact replay of an appended event as already done, and an operation whose event is already
stored is skipped, so the store holds every acknowledged event exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Protocol

from flare_im.backends.message_log.base import MessageLog, SeqTaken, VersionConflict
from flare_im.backends.message_log.queued import LogRecord, decode_record
from flare_im.observability import tracing
from flare_im.observability.stats import SIZE_BUCKETS, Histogram

log = logging.getLogger(__name__)


class Record(Protocol):
    value: bytes


class Batch(Protocol):
    records: Sequence[Any]

    async def commit(self) -> None: ...


class Consumer(Protocol):
    def batches(self, max_records: int, timeout_s: float) -> AsyncIterator[Batch]: ...


# What the store refuses for good (another event at the seq, an op on a changed or missing target): logged
# and skipped, where an unavailable store is retried.
_REFUSED = (SeqTaken, VersionConflict, LookupError, sqlite3.IntegrityError)


class StoreWorker:
    def __init__(self, consumer: Consumer, store: MessageLog, *, max_records: int = 5000) -> None:
        self._consumer = consumer
        self._store = store
        self._max_records = max_records
        self.written = 0  # events written (or found already written) since start
        self.batches = 0
        self.batch_sizes = Histogram(SIZE_BUCKETS)  # events per batch written (read by /metrics)
        self.write_seconds = Histogram()  # one batch's writes, retries included
        self.failures = 0  # batch writes that failed and were retried

    async def run(self) -> None:
        async for batch in self._consumer.batches(self._max_records, 0.5):
            if not batch.records:  # nothing arrived for a while
                continue
            records = [decode_record(r.value) for r in batch.records]
            # A span per record sent under a sampled trace, child of the gateway's send (across processes):
            # the trace runs on to the store; the batch's other records cost nothing.
            spans = tracing.record_spans("flare.store.write", batch.records) if tracing.ENABLED else None
            started = time.perf_counter()
            while True:
                try:
                    await self.write(records)
                    break
                except Exception:  # the store is unavailable: keep the batch (uncommitted) and retry
                    self.failures += 1
                    log.exception("writing a batch of %d events failed; retrying", len(records))
                    await asyncio.sleep(1.0)
            self.write_seconds.observe(time.perf_counter() - started)
            self.batch_sizes.observe(len(records))
            await batch.commit()
            if spans:
                tracing.end_all(spans)
            self.written += len(records)
            self.batches += 1

    async def write(self, records: Sequence[LogRecord]) -> None:
        """Write one batch in order; returns when all of it is stored."""
        ops: dict[str, list[int]] = {}
        for r in records:
            if r.change is not None:
                ops.setdefault(r.message.conv, []).append(r.message.seq)
        done: set[tuple[str, int, str]] = set()
        for conv, seqs in ops.items():  # operations already applied (a replayed batch) are skipped
            done.update((m.conv, m.seq, m.msg_id) for m in await self._store.get(conv, seqs))
        pending: list[tuple[LogRecord, Awaitable[None]]] = []
        for r in records:
            m = r.message
            change = r.to_change()
            if change is None:
                pending.append((r, self._store.append(m, r.version)))
            elif (m.conv, m.seq, m.msg_id) not in done:
                pending.append((r, self._store.apply(m, change, r.version)))
        results = await asyncio.gather(*(w for _, w in pending), return_exceptions=True)
        for (r, _), result in zip(pending, results, strict=True):
            if isinstance(result, _REFUSED):
                # The gateway checked this op against every node (L0 compare-and-set); a conflict here means
                # the store lost a write it had acknowledged. Keep going, loudly.
                log.error("event %s#%d not applied: %r", r.message.conv, r.message.seq, result)
            elif isinstance(result, BaseException):
                raise result
