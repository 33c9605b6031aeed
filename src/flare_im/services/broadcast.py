"""System notices to every user or to a list (issue U8), fanned out through the queue at a bounded rate.

**What a user receives.** A notice is a message of kind ``system`` in the direct conversation between the user and
the server's system user (``system_user``, ``system`` by default, created at start): ``d:<uid>:system`` (ids
sorted). So every notice has a conversation and a seq like everything else the server delivers: it counts as
unread, syncs to every device, is pushed to offline devices, and a device that missed it pulls it by seq. Its body
is ``{"event": "notice", "text": ..., "title": ..., "broadcast_id": ...}``.

**How it travels.** ``POST /v1/admin/broadcasts`` stores the broadcast and returns at once (202). A planner task
pages through the recipients (the list, or every user) and publishes them in chunks of ``CHUNK`` users to the
broadcast topic (the in-process queue on one node, Kafka with several). It stays at most ``MAX_AHEAD`` users ahead
of delivery, so a notice to 1,000,000 users holds a bounded number of recipients in memory. Consumers (a task on
every node, one consumer group) take chunks and append each user's notice at no more than
``broadcast_rate_per_s`` notices per second per node, ``CONCURRENCY`` at a time: neither the sender's request nor
the node's send path is starved. Each notice's client id is ``bc:<broadcast id>:<uid>``, so a chunk delivered
again after a crash appends nothing twice (the router's idempotency).

**Stops.** On one node the queue is in memory: at start the node plans again every broadcast that is not done
(``resume``), and each recipient still gets its notice once. With several nodes the chunks already published
stay in Kafka; not guaranteed there: a node that stops while *planning* leaves the rest of that broadcast
unplanned (its state stays ``planning``). Recipients created after the planner passed them get nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from flare_im.backends.admin.base import AdminStore, Broadcast
from flare_im.backends.queue.base import Consumer, Position
from flare_im.backends.relational.base import UserStore
from flare_im.identity import check_id, check_text
from flare_im.ids import now_ms
from flare_im.protocol.errors import FlareError, invalid, not_found
from flare_im.services.admin import AccountGate
from flare_im.services.conversations import direct_conv
from flare_im.services.router import MessageRouter

log = logging.getLogger(__name__)

CHUNK = 200  # recipients per queue record
MAX_AHEAD = 20 * CHUNK  # recipients planned but not yet delivered, at most (per broadcast)
CONCURRENCY = 32  # notices being appended at once per node
MAX_LIST = 10_000  # user ids in one request
PLANNING, SENDING, DONE = "planning", "sending", "done"

Publish = Callable[[str, str, bytes], Awaitable[Position]]


class Chunk(msgspec.Struct, array_like=True):
    broadcast_id: str
    body: dict[str, Any]
    uids: list[str]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Chunk).decode


class Broadcaster:
    def __init__(
        self,
        *,
        store: AdminStore,
        publish: Publish,
        topic: str,
        router: MessageRouter,
        users: UserStore,
        gate: AccountGate,
        system_user: str,
        rate_per_s: float,
    ) -> None:
        self._store = store
        self._publish = publish
        self._topic = topic
        self._router = router
        self._users = users
        self._gate = gate
        self._system = system_user
        self._interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._next_slot = 0.0
        self._planners: set[asyncio.Task[None]] = set()
        self.appended = 0  # notices this node appended

    async def start(self, text: str, title: str, uids: list[str] | None, key_id: str) -> Broadcast:
        """Store a broadcast to ``uids`` (None: every user) and start planning it; returns it at once."""
        if not text or len(text) > 4000:
            raise invalid("text must be 1-4000 characters")
        if len(title) > 256:
            raise invalid("title must be at most 256 characters")
        check_text(title, "title")
        wanted: list[str] | None = None
        if uids is not None:
            if not 1 <= len(uids) <= MAX_LIST:
                raise invalid(f"user_ids must hold 1-{MAX_LIST} ids")
            wanted = list(dict.fromkeys(check_id(u, "user id") for u in uids))
            found: set[str] = set()
            for i in range(0, len(wanted), 500):
                found.update(u.uid for u in await self._users.get_users(wanted[i : i + 500]))
            missing = [u for u in wanted if u not in found]
            if missing:
                raise not_found(f"no such user: {', '.join(missing[:5])}")
        broadcast_id = f"{now_ms():x}{secrets.token_hex(4)}"
        body = {"event": "notice", "text": text, "title": title, "broadcast_id": broadcast_id}
        stored = body if wanted is None else {**body, "user_ids": wanted}  # the list, to plan it again (resume)
        broadcast = Broadcast(
            broadcast_id, now_ms(), key_id, msgspec.json.encode(stored).decode(), "all" if wanted is None else "list",
            0, 0, PLANNING,
        )  # fmt: skip
        await self._store.put_broadcast(broadcast)
        self._spawn(broadcast_id, body, wanted)
        return broadcast

    def _spawn(self, broadcast_id: str, body: dict[str, Any], uids: list[str] | None) -> None:
        task = asyncio.ensure_future(self._plan(broadcast_id, body, uids))
        self._planners.add(task)
        task.add_done_callback(self._planners.discard)

    async def resume(self, limit: int = 1000) -> int:
        """Plan again, from the start, the broadcasts a stop interrupted (one node: its queue was in memory). Each
        recipient still gets its notice once: those appended before are recognised by their client id."""
        resumed = 0
        for b in await self._store.broadcasts(limit):
            if b.state == DONE:
                continue
            body = msgspec.json.decode(b.body)
            uids = body.pop("user_ids", None) if b.target == "list" else None
            await self._store.put_broadcast(dataclasses.replace(b, recipients=0, delivered=0, state=PLANNING))
            self._spawn(b.broadcast_id, body, uids)
            resumed += 1
        return resumed

    async def _plan(self, broadcast_id: str, body: dict[str, Any], uids: list[str] | None) -> None:
        planned = 0
        try:
            after = ""
            index = 0
            while True:
                if uids is not None:
                    chunk = uids[index * CHUNK : (index + 1) * CHUNK]
                else:
                    page = await self._store.user_ids(after, CHUNK)
                    after = page[-1] if page else after
                    chunk = [u for u in page if u != self._system]
                    if not page:
                        break
                if uids is not None and not chunk:
                    break
                if chunk:
                    while True:  # stay at most MAX_AHEAD recipients ahead of delivery (bounded memory)
                        current = await self._store.get_broadcast(broadcast_id)
                        if current is None or planned - current.delivered <= MAX_AHEAD:
                            break
                        await asyncio.sleep(0.2)
                    await self._store.broadcast_progress(broadcast_id, recipients=len(chunk))
                    await self._publish(
                        self._topic, f"{broadcast_id}:{index}", _encode(Chunk(broadcast_id, body, chunk))
                    )
                    planned += len(chunk)
                index += 1
            await self._store.broadcast_progress(broadcast_id, state=SENDING)
            await self._maybe_done(broadcast_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("planning broadcast %s stopped after %d recipients", broadcast_id, planned)

    async def _maybe_done(self, broadcast_id: str) -> None:
        current = await self._store.get_broadcast(broadcast_id)
        if current is not None and current.state == SENDING and current.delivered >= current.recipients:
            await self._store.broadcast_progress(broadcast_id, state=DONE)

    async def run(self, consumer: Consumer) -> None:
        """Deliver chunks from ``consumer`` until it is closed; a chunk is committed once every notice in it
        is appended (or refused for good)."""
        async for batch in consumer.batches(max_records=1, timeout_s=1.0):
            for record in batch.records:
                try:
                    chunk = _decode(record.value)
                except msgspec.DecodeError:
                    log.warning("broadcast record %s:%d is not a chunk; skipped", record.topic, record.offset)
                    continue
                try:
                    await self._deliver(chunk)
                except Exception as exc:  # progress not recorded; the notices appended are kept
                    log.warning("broadcast %s: a chunk's progress was not recorded: %r", chunk.broadcast_id, exc)
            with contextlib.suppress(Exception):  # not committed: the chunk comes again, appends nothing twice
                await batch.commit()

    async def _deliver(self, chunk: Chunk) -> None:
        running = asyncio.Semaphore(CONCURRENCY)
        tasks = []
        urgent = self._router.urgent
        for uid in chunk.uids:
            await self._pace()
            await urgent.wait_clear()  # a call under way on this node goes first (services/priority.py)
            await running.acquire()
            task = asyncio.ensure_future(self._notify(uid, chunk))
            task.add_done_callback(lambda _: running.release())
            tasks.append(task)
        await asyncio.gather(*tasks)
        await self._store.broadcast_progress(chunk.broadcast_id, delivered=len(chunk.uids))
        await self._maybe_done(chunk.broadcast_id)

    async def _pace(self) -> None:
        """At most one notice per ``interval`` on this node (a token bucket of depth one)."""
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(self._next_slot, now)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _notify(self, uid: str, chunk: Chunk) -> None:
        ban = self._gate.ban_of(uid)
        if ban is not None and ban.kind == "deleted":
            return
        conv = direct_conv(uid, self._system)
        cmid = f"bc:{chunk.broadcast_id}:{uid}"
        for attempt in range(5):
            try:
                _, duplicate = await self._router.send(self._system, conv, cmid, "system", chunk.body, trusted=True)
            except FlareError as exc:
                if exc.retryable and attempt < 4:
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                log.info("broadcast %s not delivered to %s: %s", chunk.broadcast_id, uid, exc.message)
                return
            except Exception as exc:  # the store failed: this user misses the notice, the others still get theirs
                log.warning("broadcast %s not delivered to %s: %r", chunk.broadcast_id, uid, exc)
                return
            if not duplicate:
                self.appended += 1
            return

    async def close(self) -> None:
        for task in list(self._planners):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
