"""Behaviour of the Redis adapters beyond their ports' contracts: the sequencer's batch option and how it
takes a failed seq back, the node bus across a killed connection and a restarted server, and the sequencer
and route table across a real restart of an empty Redis.

Uses the shared test Redis (``redis_backend``, see conftest.py) and, for restarts, a private
``redis-server`` on a free port that the test starts and stops itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from tests.services import fail_or_skip

from flare_im.backends.bus.redis import RedisNodeBus
from flare_im.backends.redis_client import redis_from_url
from flare_im.backends.routes.redis import RedisRouteTable
from flare_im.backends.sequencer.redis import RedisSequencer


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the condition is a plain list a handler appends to
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------- sequencer: batch option


async def test_batch_takes_seqs_from_redis_batch_at_a_time(redis_backend: Any, seed_log: Any) -> None:
    seed_log.max_seq["g:a"] = 4
    sequencer = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p, batch=10))
    assert [await sequencer.next_seq("g:a") for _ in range(10)] == list(range(5, 15))
    counter = redis_backend.clients[0]
    assert await counter.hget(f"{redis_backend.prefix}seq:g:a", "n") == b"14"  # one batch taken
    assert await sequencer.next_seq("g:a") == 15
    assert await counter.hget(f"{redis_backend.prefix}seq:g:a", "n") == b"24"
    assert seed_log.calls == ["g:a"]


async def test_batches_of_several_nodes_interleave_and_never_collide(redis_backend: Any, seed_log: Any) -> None:
    nodes = [redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p, batch=16)) for _ in range(3)]

    async def node_sends(sequencer: RedisSequencer) -> list[int]:
        out = []
        for _ in range(40):
            out.append(await sequencer.next_seq("g:a"))
            await asyncio.sleep(0)
        return out

    per_node = await asyncio.gather(*(node_sends(s) for s in nodes))
    every = [s for seqs in per_node for s in seqs]
    assert len(set(every)) == 120  # never the same seq twice
    for seqs in per_node:
        assert seqs == sorted(seqs)  # each node moves forward
    assert max(every) <= 3 * 48  # at most each node's last batch is partly unused


async def test_a_node_that_stops_with_an_unused_batch_leaves_a_gap(redis_backend: Any, seed_log: Any) -> None:
    first = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p, batch=10))
    assert [await first.next_seq("g:a") for _ in range(3)] == [1, 2, 3]
    restarted = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p, batch=10))
    assert await restarted.next_seq("g:a") == 11  # 4..10 were the dead node's: a gap, never reused


async def test_batch_forget_gives_back_the_failed_seq_and_the_unused_rest(redis_backend: Any, seed_log: Any) -> None:
    sequencer = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p, batch=10))
    assert [await sequencer.next_seq("g:a") for _ in range(3)] == [1, 2, 3]
    seed_log.max_seq["g:a"] = 2  # the append of 3 failed
    sequencer.forget("g:a")
    assert [await sequencer.next_seq("g:a") for _ in range(3)] == [3, 4, 5]
    counter = redis_backend.clients[0]
    assert await counter.hget(f"{redis_backend.prefix}seq:g:a", "n") == b"12"  # 3..12: one new batch


# ---------------------------------------------------------------- sequencer: taking a failed seq back


async def test_a_failed_seq_is_a_gap_once_another_node_took_a_later_one(redis_backend: Any, seed_log: Any) -> None:
    a = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p))
    b = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p))
    seed_log.max_seq["g:a"] = 10
    assert await a.next_seq("g:a") == 11
    assert await b.next_seq("g:a") == 12  # in flight on node b
    a.forget("g:a")  # 11 failed
    assert await a.next_seq("g:a") == 13  # 11 stays a gap; 12 is not handed out again
    assert await b.next_seq("g:a") == 14


async def test_a_counter_recreated_after_a_flush_is_not_set_back(redis_backend: Any, seed_log: Any) -> None:
    a = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p))
    b = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p))
    seed_log.max_seq["g:a"] = 10
    assert await a.next_seq("g:a") == 11
    a.forget("g:a")  # 11 failed; a gives it back on its next call
    await redis_backend.flush()
    assert await b.next_seq("g:a") == 11  # re-seeded from the log (11 was never stored): b's, in flight
    # The re-created counter stands at 11 again, as a's was, but it is another counter (epoch): a must
    # not set it back and hand out b's 11 a second time.
    assert await a.next_seq("g:a") == 12


async def test_forget_after_a_failed_call_gives_nothing_back(
    redis_backend: Any, seed_log: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sequencer = redis_backend.open(lambda c, p: RedisSequencer(c, seed_log, p))
    assert await sequencer.next_seq("g:a") == 1  # stored
    seed_log.max_seq["g:a"] = 1

    async def unreachable(*_: Any, **__: Any) -> Any:
        raise ConnectionError("Redis unreachable")

    monkeypatch.setattr(sequencer._pipe, "script", unreachable)  # the hot call goes through the pipeliner
    with pytest.raises(ConnectionError):
        await sequencer.next_seq("g:a")
    sequencer.forget("g:a")  # what the router does after any failure
    monkeypatch.undo()
    assert await sequencer.next_seq("g:a") == 2  # 1 was stored: it must not be handed out again


# ---------------------------------------------------------------- node bus: reconnects


def _named_client(url: str, name: str) -> Redis:
    return Redis.from_pool(BlockingConnectionPool.from_url(url, client_name=name))


async def _probe_until_delivered(sender: RedisNodeBus, node: str, got: list[bytes], timeout_s: float) -> None:
    """Publish probes until one arrives (payloads sent while the subscriber is away are lost)."""
    async with asyncio.timeout(timeout_s):
        while b"probe" not in got:
            sender.publish(node, b"probe")
            await asyncio.sleep(0.05)


async def test_the_subscriber_comes_back_after_its_connection_is_killed(redis_backend: Any) -> None:
    name = f"flare-test-{uuid.uuid4().hex[:12]}"
    receiver_client = _named_client(_test_url(), name)
    receiver = RedisNodeBus(receiver_client, redis_backend.prefix, max_reconnect_delay_s=0.2)
    sender = redis_backend.open(lambda c, p: RedisNodeBus(c, p))
    got: list[bytes] = []
    try:
        await receiver.subscribe("n1", got.append)
        sender.publish("n1", b"before")
        await until(lambda: got == [b"before"])

        admin = redis_backend.clients[0]
        killed = 0
        for client in await admin.client_list():
            if client.get("name") == name:
                killed += await admin.client_kill_filter(_id=client["id"])
        assert killed >= 1

        await _probe_until_delivered(sender, "n1", got, timeout_s=10)
        got.clear()
        for i in range(100):
            sender.publish("n1", str(i).encode())
        await until(lambda: len(got) >= 100)
        assert [p for p in got if p != b"probe"] == [str(i).encode() for i in range(100)]
    finally:
        await receiver.close()
        await receiver_client.aclose()


def _test_url() -> str:
    return os.environ.get("FLARE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


# ---------------------------------------------------------------- a private Redis that really restarts


class PrivateRedis:
    """A ``redis-server`` of the test's own, without persistence: a restart comes back empty."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", str(self.workdir)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except OSError:
                        await asyncio.sleep(0.05)
                    except Exception as exc:  # redis-py wraps refused connections
                        if "Connection" not in type(exc).__name__:
                            raise
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
        self._process = None


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        fail_or_skip(reason)
    server = PrivateRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_sequencer_and_routes_after_redis_restarts_empty(private_redis: PrivateRedis, seed_log: Any) -> None:
    client = redis_from_url(private_redis.url)
    sequencer = RedisSequencer(client, seed_log, "t:")
    routes = RedisRouteTable(client, "t:")
    try:
        await routes.heartbeat("n1", [])
        await routes.register("u1", "phone", "n1")
        for _ in range(10):
            seq = await sequencer.next_seq("g:a")
            seed_log.max_seq["g:a"] = seq  # stored

        await private_redis.stop()
        await private_redis.start()  # back, empty

        assert await sequencer.next_seq("g:a") == 11
        assert await routes.lookup(["u1"]) == {}
        await routes.heartbeat("n1", [("u1", "phone")])
        assert await routes.lookup(["u1"]) == {"u1": {"phone": "n1"}}
    finally:
        await client.aclose()


async def test_the_bus_comes_back_after_redis_restarts(private_redis: PrivateRedis) -> None:
    receiver = RedisNodeBus(private_redis.url, "t:", max_reconnect_delay_s=0.2)
    sender = RedisNodeBus(private_redis.url, "t:", min_reconnect_delay_s=0.01, max_reconnect_delay_s=0.05)
    got: list[bytes] = []
    try:
        await receiver.subscribe("n1", got.append)
        sender.publish("n1", b"before")
        await until(lambda: got == [b"before"])

        await private_redis.stop()
        sender.publish("n1", b"lost while Redis is down")
        await asyncio.sleep(0.5)  # long enough for redis-py's own reconnect attempts to give up
        await private_redis.start()

        await _probe_until_delivered(sender, "n1", got, timeout_s=15)
        assert b"lost while Redis is down" not in got
        got.clear()
        for i in range(50):
            sender.publish("n1", str(i).encode())
        await until(lambda: len([p for p in got if p != b"probe"]) >= 50)
        assert [p for p in got if p != b"probe"] == [str(i).encode() for i in range(50)]
        assert sender.lost >= 1
    finally:
        await receiver.close()
        await sender.close()
