"""Contract of the webhook store port (src/flare_im/backends/webhooks/base.py), on SQLite and PostgreSQL:
endpoints and their revision, deliveries as the after-event queue's dedupe record, schedule and dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import fresh_postgres_schema

from flare_im.backends.migrations import PostgresMigrator, SchemaError
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.backends.webhooks.base import DEAD, DELIVERED, PENDING, Delivery, Endpoint


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        from flare_im.backends.webhooks.sqlite import SqliteWebhookStore

        db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "t.db")))
        adapter = SqliteWebhookStore(db)
        db.start()
        try:
            yield adapter
        finally:
            await db.close()
        return
    import asyncpg

    from flare_im.backends.webhooks.postgres import SCHEMA, PostgresWebhookStore

    async with fresh_postgres_schema() as url:
        conn = await asyncpg.connect(url)
        try:
            await PostgresMigrator(conn, SCHEMA).apply()
        finally:
            await conn.close()
        adapter = await PostgresWebhookStore.open(url)
        try:
            yield adapter
        finally:
            await adapter.close()


def endpoint(endpoint_id: str = "wh_a", **kw: Any) -> Endpoint:
    fields: dict[str, Any] = {
        "url": "https://example.com/hook",
        "secret": "s3cret",
        "events": ("before_send", "after_send"),
        "created_at": 1_000,
        "updated_at": 1_000,
    }
    fields.update(kw)
    return Endpoint(endpoint_id=endpoint_id, **fields)


def delivery(event_id: str, *, endpoint_id: str = "wh_a", **kw: Any) -> Delivery:
    fields: dict[str, Any] = {"event": "after_send", "payload": f'{{"id":"{event_id}"}}', "created_at": 1_000}
    fields.update(kw)
    return Delivery(f"{endpoint_id}|{event_id}", endpoint_id, event_id=event_id, **fields)


async def test_endpoints_are_put_replaced_deleted_and_move_the_revision(store: Any) -> None:
    assert await store.endpoints() == []
    start = await store.endpoints_revision()
    a = endpoint(policy="closed", timeout_ms=500, description="moderation")
    await store.put_endpoint(a)
    await store.put_endpoint(endpoint("wh_b", events=("presence",), enabled=False))
    assert await store.endpoints() == [a, endpoint("wh_b", events=("presence",), enabled=False)]
    after_puts = await store.endpoints_revision()
    assert after_puts > start
    await store.put_endpoint(replace(a, url="https://example.org/other", updated_at=2_000))
    assert (await store.endpoints())[0].url == "https://example.org/other"
    assert await store.endpoints_revision() > after_puts
    before_delete = await store.endpoints_revision()
    assert await store.delete_endpoint("wh_b")
    assert [e.endpoint_id for e in await store.endpoints()] == ["wh_a"]
    deleted = await store.endpoints_revision()
    assert deleted > before_delete
    assert not await store.delete_endpoint("wh_b")  # nothing there: nothing changes
    assert await store.endpoints_revision() == deleted


async def test_a_delivery_is_stored_once_and_leased_to_its_adder(store: Any) -> None:
    await store.put_endpoint(endpoint())
    assert await store.add_deliveries([delivery("e1"), delivery("e2")], 2_000, 30_000) == {"wh_a|e1", "wh_a|e2"}
    # The queue record handled again (a redelivery): nothing new, and nothing due while the lease holds.
    assert await store.add_deliveries([delivery("e1")], 3_000, 30_000) == set()
    assert await store.take_due(3_000, 30_000, 10) == []
    # The worker died before recording: after the lease, the due loop takes them over.
    taken = await store.take_due(32_000, 30_000, 10)
    assert sorted(d.delivery_id for d in taken) == ["wh_a|e1", "wh_a|e2"]
    assert all(d.state == PENDING and d.payload.startswith('{"id"') for d in taken)
    assert await store.take_due(33_000, 30_000, 10) == []  # leased again, to that caller


async def test_concurrent_takes_never_share_a_delivery(store: Any) -> None:
    await store.add_deliveries([delivery(f"e{i}", next_at=0) for i in range(20)], 0, 0)
    taken = await asyncio.gather(*(store.take_due(1_000, 30_000, 5) for _ in range(6)))
    ids = [d.delivery_id for batch in taken for d in batch]
    assert len(ids) == len(set(ids)) == 20


async def test_recorded_outcomes_retries_dead_letters_and_replay(store: Any) -> None:
    await store.add_deliveries([delivery("ok"), delivery("flaky"), delivery("bad")], 1_000, 0)
    await store.record_deliveries(
        [
            delivery("ok", state=DELIVERED, tries=1, updated_at=1_100),
            delivery("flaky", tries=1, next_at=5_000, last_error="503 Service Unavailable", updated_at=1_100),
            delivery("bad", state=DEAD, tries=8, last_error="8 tries; last: timeout", updated_at=1_200),
        ]
    )
    assert await store.take_due(4_999, 30_000, 10) == []  # the retry is not due yet; final ones never are
    [retry] = await store.take_due(5_000, 30_000, 10)
    assert (retry.delivery_id, retry.tries, retry.last_error) == ("wh_a|flaky", 1, "503 Service Unavailable")
    [dead] = await store.deliveries(state=DEAD)
    assert (dead.delivery_id, dead.tries, dead.payload) == ("wh_a|bad", 8, '{"id":"bad"}')
    # Replay: only dead ones move; the delivered one is left alone even when named.
    assert await store.replay(9_000, delivery_ids=["wh_a|ok", "wh_a|bad"]) == 1
    assert await store.deliveries(state=DEAD) == []
    [again] = await store.take_due(9_000, 30_000, 10)
    assert (again.delivery_id, again.state, again.tries, again.next_at) == ("wh_a|bad", PENDING, 0, 9_000)


async def test_replay_of_every_dead_delivery_of_one_endpoint(store: Any) -> None:
    await store.add_deliveries([delivery("x"), delivery("y"), delivery("z", endpoint_id="wh_b")], 1_000, 0)
    dead = [delivery("x", state=DEAD), delivery("y", state=DEAD), delivery("z", endpoint_id="wh_b", state=DEAD)]
    await store.record_deliveries([replace(d, updated_at=1_500) for d in dead])
    assert await store.replay(2_000, endpoint_id="wh_a") == 2
    assert [d.delivery_id for d in await store.deliveries(state=DEAD)] == ["wh_b|z"]
    assert await store.replay(2_000, endpoint_id="wh_a", delivery_ids=["wh_b|z"]) == 0  # not that endpoint's


async def test_listing_filters_orders_and_limits(store: Any) -> None:
    await store.add_deliveries([delivery(f"e{i}", updated_at=1_000 + i) for i in range(5)], 1_000, 0)
    await store.add_deliveries([delivery("other", endpoint_id="wh_b", updated_at=2_000)], 1_000, 0)
    newest = await store.deliveries(limit=3)
    assert [d.delivery_id for d in newest] == ["wh_b|other", "wh_a|e4", "wh_a|e3"]
    assert [d.delivery_id for d in await store.deliveries(endpoint_id="wh_a", since=1_003)] == ["wh_a|e4", "wh_a|e3"]
    assert await store.deliveries(state=DELIVERED) == []


async def test_deleting_an_endpoint_deletes_its_deliveries(store: Any) -> None:
    await store.put_endpoint(endpoint())
    await store.put_endpoint(endpoint("wh_b"))
    await store.add_deliveries([delivery("e1"), delivery("e2", endpoint_id="wh_b")], 1_000, 0)
    assert await store.delete_endpoint("wh_a")
    assert [d.delivery_id for d in await store.deliveries()] == ["wh_b|e2"]
    await store.record_deliveries([delivery("e1", state=DELIVERED, updated_at=5_000)])  # gone: ignored
    assert [d.delivery_id for d in await store.deliveries()] == ["wh_b|e2"]


async def test_purge_deletes_only_old_final_deliveries(store: Any) -> None:
    await store.add_deliveries([delivery("old"), delivery("dead"), delivery("new"), delivery("wait")], 1_000, 0)
    await store.record_deliveries(
        [
            delivery("old", state=DELIVERED, updated_at=1_000),
            delivery("dead", state=DEAD, updated_at=1_000),
            delivery("new", state=DELIVERED, updated_at=9_000),
            delivery("wait", tries=3, next_at=99_000, updated_at=1_000),
        ]
    )
    assert await store.purge_deliveries(5_000) == 2
    assert sorted(d.delivery_id for d in await store.deliveries()) == ["wh_a|new", "wh_a|wait"]


async def test_postgres_refuses_a_database_without_the_schema() -> None:
    from flare_im.backends.webhooks.postgres import PostgresWebhookStore

    async with fresh_postgres_schema() as url:
        with pytest.raises(SchemaError, match="flare migrate"):
            await PostgresWebhookStore.open(url)
