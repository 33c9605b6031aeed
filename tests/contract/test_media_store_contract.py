"""Contract suite of the media metadata store (backends/media): SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.conftest import fresh_postgres_schema

from flare_im.backends.media.base import DELETED, READY, UPLOADING, Media, MediaRef, MediaStore
from flare_im.backends.migrations import PostgresMigrator, SchemaError
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaStore]:
    if request.param == "sqlite":
        from flare_im.backends.media.sqlite import SqliteMediaStore

        db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
        sqlite_store = SqliteMediaStore(db)
        db.start()
        try:
            yield sqlite_store
        finally:
            await db.close()
        return
    import asyncpg

    from flare_im.backends.media.postgres import SCHEMA, PostgresMediaStore

    async with fresh_postgres_schema() as url:
        with pytest.raises(SchemaError, match="flare migrate"):
            await PostgresMediaStore.open(url)
        conn = await asyncpg.connect(url)
        try:
            await PostgresMigrator(conn, SCHEMA).apply()
        finally:
            await conn.close()
        pg_store = await PostgresMediaStore.open(url)
        try:
            yield pg_store
        finally:
            await pg_store.close()


def media(media_id: str = "m1", owner: str = "alice", **changes: object) -> Media:
    base = Media(media_id, owner, "image", UPLOADING, "cat.jpg", "image/jpeg", 1000, 1, 1)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def test_insert_get_and_duplicate(store: MediaStore) -> None:
    assert await store.get("m1") is None
    row = media(width=640, height=480, blurhash="LEHV6nWB2yk8", moderation="pending")
    await store.insert(row)
    assert await store.get("m1") == row
    with pytest.raises(KeyError):
        await store.insert(media(owner="mallory"))
    assert await store.get("m1") == row  # the refused insert changed nothing


async def test_update_is_compare_and_set(store: MediaStore) -> None:
    await store.insert(media())
    ready = media(state=READY, size=2048, updated_at=5, thumb_mime="image/webp", thumb_size=100)
    assert await store.update(ready, expect=UPLOADING)
    assert await store.get("m1") == ready
    assert not await store.update(media(state=DELETED), expect=UPLOADING)  # lost the race: no change
    assert await store.get("m1") == ready
    results = await asyncio.gather(*(store.update(media(state=DELETED, size=n), expect=READY) for n in range(5)))
    assert sorted(results) == [False, False, False, False, True]


async def test_usage_counts_live_rows_of_the_owner(store: MediaStore) -> None:
    await store.insert(media("a", size=100))
    await store.insert(media("b", state=READY, size=1000, thumb_size=10))
    await store.insert(media("c", state=DELETED, size=5000))
    await store.insert(media("d", owner="bob", size=7))
    assert await store.usage("alice") == 1110
    assert await store.usage("bob") == 7
    assert await store.usage("nobody") == 0


async def test_refs_and_drop(store: MediaStore) -> None:
    await store.insert(media("a"))
    await store.insert(media("b"))
    for ref in (
        MediaRef("a", "g:x", 5, "alice"),
        MediaRef("a", "d:alice:bob", 2, "alice"),
        MediaRef("b", "g:x", 5, "u"),
    ):
        await store.add_ref(ref)
    await store.add_ref(MediaRef("a", "g:x", 5, "alice"))  # idempotent
    assert [(r.conv, r.seq) for r in await store.refs("a")] == [("d:alice:bob", 2), ("g:x", 5)]
    # Message g:x 5 referenced both; "a" is still referenced by d:alice:bob 2.
    assert await store.drop_refs("g:x", 5) == ["b"]
    assert await store.drop_refs("g:x", 5) == []
    assert await store.drop_refs("d:alice:bob", 2) == ["a"]
    assert await store.refs("a") == []


async def test_racing_drops_release_once(store: MediaStore) -> None:
    await store.insert(media("a"))
    for seq in range(1, 9):
        await store.add_ref(MediaRef("a", "g:x", seq, "alice"))
    released = await asyncio.gather(*(store.drop_refs("g:x", seq) for seq in range(1, 9)))
    assert sorted(i for ids in released for i in ids) == ["a"]


async def test_stale_and_delete(store: MediaStore) -> None:
    await store.insert(media("old", updated_at=10))
    await store.insert(media("older", updated_at=5))
    await store.insert(media("new", updated_at=100))
    await store.insert(media("done", state=READY, updated_at=1))
    assert [m.media_id for m in await store.stale(UPLOADING, 50, 10)] == ["older", "old"]
    assert [m.media_id for m in await store.stale(UPLOADING, 50, 1)] == ["older"]
    await store.add_ref(MediaRef("old", "g:x", 1, "alice"))
    await store.delete("old")
    await store.delete("old")
    assert await store.get("old") is None
    assert await store.refs("old") == []
    assert [m.media_id for m in await store.stale(UPLOADING, 50, 10)] == ["older"]
