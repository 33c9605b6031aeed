"""Contract of the IdempotencyStore port (src/flare_im/backends/idempotency/base.py), for every backend.

``idempotency_backend.open()`` opens a store over the backend's shared state (one per node).
"""

from __future__ import annotations

import asyncio
from typing import Any

from flare_im.backends.idempotency.base import CLAIMED, HELD, RECLAIMED, IdempotencyStore

TTL_S = 60.0
# The ttls and windows that tests let run out. ``idempotency_backend.advance`` moves the memory store's clock
# and sleeps for Redis (its own time): at least that much passes, more on a busy machine, so what must still
# hold is checked at once (a second to spare) and what must have run out only gains from extra time.
SHORT_S = 1.0


async def test_one_claim_then_the_result(idempotency_backend: Any) -> None:
    store: IdempotencyStore = idempotency_backend.open()
    assert await store.get("alice", "m1") is None
    assert await store.reserve("alice", "m1", TTL_S)
    assert not await store.reserve("alice", "m1", TTL_S)
    assert await store.get("alice", "m1") is None  # claimed, no result yet
    await store.complete("alice", "m1", b'{"seq": 7}', TTL_S)
    assert await store.get("alice", "m1") == b'{"seq": 7}'
    assert not await store.reserve("alice", "m1", TTL_S)  # a retry finds the result instead


async def test_another_node_sees_the_claim_and_the_result(idempotency_backend: Any) -> None:
    a: IdempotencyStore = idempotency_backend.open()
    b: IdempotencyStore = idempotency_backend.open()
    assert await a.reserve("alice", "m1", TTL_S)
    assert not await b.reserve("alice", "m1", TTL_S)  # the retry landed on another node
    await a.complete("alice", "m1", b"\x00ack\xff", TTL_S)
    assert await b.get("alice", "m1") == b"\x00ack\xff"


async def test_release_lets_a_retry_claim_again(idempotency_backend: Any) -> None:
    a: IdempotencyStore = idempotency_backend.open()
    b: IdempotencyStore = idempotency_backend.open()
    assert await a.reserve("alice", "m1", TTL_S)
    await a.release("alice", "m1")  # the append failed
    assert await b.reserve("alice", "m1", TTL_S)
    await b.complete("alice", "m1", b"stored", TTL_S)
    await a.release("alice", "m1")  # a late release does not drop a stored result
    assert await b.get("alice", "m1") == b"stored"
    await a.release("nobody", "never-claimed")  # a no-op


async def test_concurrent_claims_from_two_nodes_have_one_winner(idempotency_backend: Any) -> None:
    a: IdempotencyStore = idempotency_backend.open()
    b: IdempotencyStore = idempotency_backend.open()
    keys = [f"m{i}" for i in range(100)]
    won = await asyncio.gather(*(s.reserve("alice", k, TTL_S) for k in keys for s in (a, b, a)))
    for i in range(len(keys)):
        assert sum(won[i * 3 : i * 3 + 3]) == 1


async def test_claims_and_results_expire(idempotency_backend: Any) -> None:
    store: IdempotencyStore = idempotency_backend.open()
    assert await store.reserve("alice", "claimed", SHORT_S)
    assert await store.reserve("alice", "done", 60)
    await store.complete("alice", "done", b"r", SHORT_S)
    assert not await store.reserve("alice", "claimed", 60)
    assert await store.get("alice", "done") == b"r"
    await idempotency_backend.advance(SHORT_S * 1.5)
    assert await store.get("alice", "done") is None
    assert await store.reserve("alice", "claimed", 60)  # a claim that outlived its ttl is free again
    assert await store.reserve("alice", "done", 60)


async def test_keys_are_per_sender_and_taken_literally(idempotency_backend: Any) -> None:
    store: IdempotencyStore = idempotency_backend.open()
    assert await store.reserve("a:b", "c", TTL_S)
    assert await store.reserve("a", "b:c", TTL_S)
    assert await store.reserve("bob", "c", TTL_S)
    await store.complete("a:b", "c", b"", TTL_S)
    assert await store.get("a:b", "c") == b""  # an empty result is a result
    assert await store.get("a", "b:c") is None


async def test_a_claim_that_ran_out_is_reclaimed_with_a_warning(idempotency_backend: Any) -> None:
    # The node holding a claim died: the next claim succeeds, and says the message may be stored already.
    a: IdempotencyStore = idempotency_backend.open()
    b: IdempotencyStore = idempotency_backend.open()
    assert await a.reserve("alice", "m1", SHORT_S) == CLAIMED
    assert await b.reserve("alice", "m1", TTL_S) == HELD
    await idempotency_backend.advance(SHORT_S * 1.5)
    assert await b.reserve("alice", "m1", TTL_S) == RECLAIMED
    # A released claim (the send failed before storing anything) is reclaimed with the same warning: the
    # store does not know how far the send got; the caller's log lookup settles it.
    await b.release("alice", "m1")
    assert await a.reserve("alice", "m1", TTL_S) == RECLAIMED
    assert await a.reserve("alice", "other", TTL_S) == CLAIMED


async def test_a_store_that_lost_its_data_does_not_vouch_until_restored(idempotency_backend: Any) -> None:
    a: IdempotencyStore = idempotency_backend.open()
    b: IdempotencyStore = idempotency_backend.open()
    assert await a.vouched()
    assert await a.reserve("alice", "before", TTL_S) == CLAIMED
    await a.complete("alice", "before", b"stored", TTL_S)

    await idempotency_backend.flush()  # Redis restarted empty: the claim and the result are gone
    assert not await a.vouched()
    assert not await b.vouched()
    assert await b.reserve("alice", "new", TTL_S) == RECLAIMED  # cannot tell: look in the log
    assert await b.reserve("alice", "new", TTL_S) == HELD

    # A node restores it from the log's recent sends: those answer RECLAIMED, others CLAIMED again.
    assert await a.restore([("alice", "before"), ("bob", "x")], complete=True, window_s=600.0)
    assert await b.vouched()
    assert await b.reserve("alice", "before", TTL_S) == RECLAIMED
    assert await b.reserve("bob", "x", TTL_S) == RECLAIMED
    assert await b.reserve("alice", "after", TTL_S) == CLAIMED


async def test_an_incomplete_restore_vouches_after_the_window(idempotency_backend: Any) -> None:
    store: IdempotencyStore = idempotency_backend.open()
    await idempotency_backend.flush()
    assert await store.restore([("alice", "m1")], complete=False, window_s=SHORT_S)
    assert not await store.vouched()
    assert await store.reserve("alice", "m2", TTL_S) == RECLAIMED
    await idempotency_backend.advance(SHORT_S * 1.5)
    assert await store.vouched()
    assert await store.reserve("alice", "m3", TTL_S) == CLAIMED


async def test_concurrent_restores_leave_the_store_vouched(idempotency_backend: Any) -> None:
    a: IdempotencyStore = idempotency_backend.open()
    b: IdempotencyStore = idempotency_backend.open()
    await idempotency_backend.flush()
    keys = [("alice", f"m{i}") for i in range(12_000)]  # more than one pipeline of the Redis store
    done = await asyncio.gather(*(s.restore(keys, complete=True, window_s=600.0) for s in (a, b)))
    assert any(done)
    assert await a.vouched()
    assert await b.reserve("alice", "m11999", TTL_S) == RECLAIMED
    assert await b.reserve("alice", "m12000", TTL_S) == CLAIMED
