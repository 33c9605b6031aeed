"""Events for the gRPC ``Subscribe`` stream: every event stored in any conversation, as it is stored.

Where the events come from depends on the deployment, so that a subscriber sees every conversation whichever
node it is connected to:

- one node: every send, system message and operation goes through this node's fan-out, so a decorator of the
  router's Fanout (``TappedFanout``) hands each stored event to the feed. It is only installed when the gRPC
  API is on: a server without it pays nothing on the send path.
- several nodes: a node's fan-out only sees the events sent through that node, but every event of every node
  is on the messages topic (Kafka), acknowledged before its sender's ack. ``KafkaEventSource`` reads the topic
  from its end, outside any consumer group (the store worker's offsets are untouched), while at least one
  stream is open on this node.

Delivery is at most once, as on the WebSocket (DESIGN.md §3): a subscriber whose queue is full (it reads
slower than events arrive) is ended with RESOURCE_EXHAUSTED, and a broken stream misses what was stored
meanwhile. The log is the reliability mechanism: a subscriber resumes by reading each conversation's history
after the last seq it saw. Events of one conversation arrive in seq order (one node: the order the router
stores them; several nodes: Kafka keeps a conversation in one partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from flare_im.backends.message_log.queued import decode_record
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import Message
from flare_im.services.router import Fanout, FanoutDecorator

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 10_000  # events waiting for one subscriber before it is ended as too slow


class Subscription:
    """One open ``Subscribe`` stream: the events it wants, queued until it reads them."""

    def __init__(self, convs: frozenset[str], max_queue: int) -> None:
        self.convs = convs  # empty: every conversation
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.max_queue = max_queue
        self.overflowed = False

    def offer(self, message: Message) -> None:
        if self.overflowed or (self.convs and message.conv not in self.convs):
            return
        if self.queue.qsize() >= self.max_queue:
            self.overflowed = True
            self.queue.put_nowait(None)  # wakes the reader, which ends the stream
            return
        self.queue.put_nowait(message)


class EventFeed:
    """This node's open subscriptions; ``publish`` hands an event to each of them (never blocks)."""

    def __init__(self, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self._subscriptions: set[Subscription] = set()
        self._max_queue = max_queue
        self.source: KafkaEventSource | None = None  # several nodes: started while someone subscribes

    def __len__(self) -> int:
        return len(self._subscriptions)

    async def subscribe(self, convs: Iterable[str]) -> Subscription:
        """A new subscription; once this returns, every event stored from then on reaches it."""
        subscription = Subscription(frozenset(convs), self._max_queue)
        self._subscriptions.add(subscription)
        if self.source is not None:
            try:
                await self.source.acquire()
            except Exception as exc:
                self._subscriptions.discard(subscription)
                log.warning("Subscribe: the messages topic cannot be read: %r", exc)
                raise FlareError(ErrorCode.UNAVAILABLE, "the event stream is unavailable; retry later") from exc
            except BaseException:
                self._subscriptions.discard(subscription)
                raise
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.discard(subscription)
            if self.source is not None:
                await self.source.release()

    def publish(self, message: Message) -> None:
        for subscription in self._subscriptions:
            subscription.offer(message)

    def end_all(self) -> None:
        """Shutting down: every stream ends (UNAVAILABLE) once it has read what was queued for it."""
        for subscription in self._subscriptions:
            subscription.queue.put_nowait(None)


class TappedFanout(FanoutDecorator):
    """The router's Fanout on one node with the gRPC API on: delivers as before, and feeds ``Subscribe``."""

    def __init__(self, inner: Fanout, feed: EventFeed) -> None:
        super().__init__(inner)
        self._feed = feed

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: tuple[str, str] | None) -> None:
        self._inner.deliver_message(uids, message, skip=skip)
        if len(self._feed):
            self._feed.publish(message)


class KafkaEventSource:
    """Several nodes: the messages topic, read from its end while this node has subscribers.

    ``acquire`` returns once the consumer sits at the end of every partition, so nothing stored after it
    is missed. It reads without a consumer group: it commits nothing and takes no partition from the store
    worker."""

    def __init__(self, feed: EventFeed, bootstrap_servers: str, topic: str, *, client_id: str = "flare-events") -> None:
        self._feed = feed
        self._servers = bootstrap_servers
        self._topic = topic
        self._client_id = client_id
        self._users = 0
        self._lock = asyncio.Lock()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        async with self._lock:
            self._users += 1
            if self._consumer is None:
                try:
                    await self._start()
                except BaseException:
                    self._users -= 1
                    raise

    async def release(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users == 0:
                await self._stop()

    async def close(self) -> None:
        async with self._lock:
            self._users = 0
            await self._stop()

    async def _start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._servers,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
        )
        try:
            await consumer.start()
            partitions = consumer.partitions_for_topic(self._topic) or set()
            if not partitions:
                await consumer.force_metadata_update()
                partitions = consumer.partitions_for_topic(self._topic) or set()
            assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            ends = await consumer.end_offsets(assigned)
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.ensure_future(self._pump(consumer))

    async def _stop(self) -> None:
        consumer, task = self._consumer, self._task
        self._consumer = self._task = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if consumer is not None:
            await consumer.stop()

    async def _pump(self, consumer: Any) -> None:
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker away: the consumer reconnects; subscribers miss events meanwhile
                log.warning("reading the messages topic for Subscribe failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for records in fetched.values():
                for record in records:
                    try:
                        message = decode_record(record.value).message
                    except Exception:
                        log.warning("skipping an unreadable record at %s offset %d", record.topic, record.offset)
                        continue
                    self._feed.publish(message)
