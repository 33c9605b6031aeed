"""Contract of the admin port (src/flare_im/backends/admin/base.py), on SQLite and PostgreSQL: keys, the audit
log, bans and their revision, accounts (paging ids, erasing), daily activity, broadcasts and node statistics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flare_im.backends.admin.base import BANNED, DELETED, AdminKey, AuditEntry, Ban, Broadcast, NodeStats
from flare_im.backends.relational.base import User


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """(admin store, relational store) over one database."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            from flare_im.backends.admin.sqlite import SqliteAdminStore
            from flare_im.backends.relational.sqlite import SqliteRelational
            from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase

            db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "t.db")))
            relational: Any = SqliteRelational(db)
            admin: Any = SqliteAdminStore(db)
            db.start()
            stack.push_async_callback(db.close)
        else:
            import asyncpg

            from flare_im.backends.admin.postgres import PostgresAdminStore
            from flare_im.backends.migrations import PostgresMigrator
            from flare_im.backends.relational.postgres import SCHEMA, PostgresConfig, PostgresRelational

            url = await stack.enter_async_context(request.getfixturevalue("postgres_schemas")())
            conn = await asyncpg.connect(url)
            try:
                await PostgresMigrator(conn, SCHEMA).apply()
            finally:
                await conn.close()
            relational = await PostgresRelational.open(PostgresConfig(url=url, min_connections=1))
            stack.push_async_callback(relational.close)
            admin = await PostgresAdminStore.open(url)
            stack.push_async_callback(admin.close)
            # A second open (another node starting) finds the component migrated and changes nothing.
            await (await PostgresAdminStore.open(url)).close()
        yield admin, relational


def key(key_id: str, scope: str = "read", created_at: int = 1) -> AdminKey:
    return AdminKey(key_id, "h-" + key_id, scope, "note", created_at, "root")


async def test_keys_are_created_once_listed_and_revoked_once(stores: tuple[Any, Any]) -> None:
    admin, _ = stores
    await admin.create_key(key("k1", "read", 1))
    await admin.create_key(key("k2", "full", 2))
    with pytest.raises(KeyError):
        await admin.create_key(key("k1", "full", 3))
    assert (await admin.get_key("k1")).scope == "read"  # the refused create changed nothing
    assert await admin.get_key("nope") is None
    assert [k.key_id for k in await admin.keys()] == ["k1", "k2"]
    assert await admin.revoke_key("k1", 50) is True
    assert await admin.revoke_key("k1", 60) is False
    assert await admin.revoke_key("nope", 60) is False
    assert (await admin.get_key("k1")).revoked_at == 50


async def test_audit_entries_get_increasing_ids_and_are_read_newest_first(stores: tuple[Any, Any]) -> None:
    admin, _ = stores
    ids = []
    for i in range(5):
        entry = AuditEntry(0, 100 + i, "k1" if i % 2 else "k2", "POST /x", f"i={i}", 200, "{}", "127.0.0.1")
        ids.append(await admin.append_audit(entry))
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    newest = await admin.audit(since=0, until=10**15, key_id=None, before_id=2**62, limit=3)
    assert [e.target for e in newest] == ["i=4", "i=3", "i=2"]
    older = await admin.audit(since=0, until=10**15, key_id=None, before_id=newest[-1].entry_id, limit=10)
    assert [e.target for e in older] == ["i=1", "i=0"]
    assert [e.target for e in await admin.audit(since=0, until=10**15, key_id="k1", before_id=2**62, limit=10)] == [
        "i=3",
        "i=1",
    ]
    assert [e.ts for e in await admin.audit(since=101, until=103, key_id=None, before_id=2**62, limit=10)] == [
        102,
        101,
    ]


async def test_bans_bump_the_revision_and_a_deletion_is_never_lifted(stores: tuple[Any, Any]) -> None:
    admin, _ = stores
    r0 = await admin.bans_revision()
    r1 = await admin.put_ban(Ban("alice", BANNED, "spam", 10, "k1"))
    assert r1 > r0
    assert await admin.bans_revision() == r1
    r2 = await admin.put_ban(Ban("alice", BANNED, "spam again", 11, "k1"))
    assert r2 > r1
    assert [(b.uid, b.reason) for b in await admin.bans()] == [("alice", "spam again")]
    assert await admin.delete_ban("bob") is None
    assert await admin.bans_revision() == r2  # nothing lifted, nothing changed
    r3 = await admin.delete_ban("alice")
    assert r3 is not None
    assert r3 > r2
    assert await admin.bans() == []
    await admin.put_ban(Ban("carol", DELETED, "account deleted", 12, "root"))
    revision = await admin.bans_revision()
    assert await admin.delete_ban("carol") is None
    await admin.put_ban(Ban("carol", BANNED, "x", 13, "k1"))
    assert [(b.kind, b.reason) for b in await admin.bans()] == [(DELETED, "account deleted")]
    assert await admin.bans_revision() == revision


async def test_concurrent_ban_changes_each_get_their_own_revision(stores: tuple[Any, Any]) -> None:
    admin, _ = stores
    revisions = await asyncio.gather(*(admin.put_ban(Ban(f"u{i}", BANNED, "r", i, "k")) for i in range(10)))
    assert len(set(revisions)) == 10
    assert await admin.bans_revision() == max(revisions)


async def test_user_ids_page_in_order_and_erase_keeps_the_id(stores: tuple[Any, Any]) -> None:
    admin, relational = stores
    for uid in ["carol", "alice", "bob", "dave"]:
        await relational.create_user(User(uid, uid, uid.title(), "a.png", 1), "hash")
    assert await admin.user_ids("", 3) == ["alice", "bob", "carol"]
    assert await admin.user_ids("carol", 3) == ["dave"]
    assert await admin.erase_user("bob") is True
    assert await admin.erase_user("nobody") is False
    [bob] = await relational.get_users(["bob"])
    assert (bob.display_name, bob.avatar, bob.username) == ("", "", None)
    assert await relational.get_credentials("bob") is None
    assert await relational.get_credentials("alice") is not None  # the others are untouched
    assert await admin.user_ids("", 10) == ["alice", "bob", "carol", "dave"]


async def test_daily_activity_counts_each_user_once_per_day(stores: tuple[Any, Any]) -> None:
    admin, _ = stores
    await admin.record_active("2026-12-01", ["alice", "bob"])
    await admin.record_active("2026-12-01", ["alice"])
    await admin.record_active("2026-12-02", ["alice", "carol"])
    await admin.record_active("2026-12-05", ["dave"])
    per_day, total = await admin.daily_active("2026-12-01", "2026-12-02")
    assert per_day == {"2026-12-01": 2, "2026-12-02": 2}
    assert total == 3
    assert await admin.daily_active("2026-11-01", "2026-11-30") == ({}, 0)


async def test_broadcast_progress_adds_up_across_concurrent_updates(stores: tuple[Any, Any]) -> None:
    admin, _ = stores
    await admin.put_broadcast(Broadcast("b1", 1, "root", '{"text": "hi"}', "all", 0, 0, "planning"))
    await admin.put_broadcast(Broadcast("b2", 2, "root", '{"text": "yo"}', "list", 3, 0, "sending"))
    await asyncio.gather(*(admin.broadcast_progress("b1", recipients=10, delivered=7) for _ in range(10)))
    await admin.broadcast_progress("b1", state="done")
    b1 = await admin.get_broadcast("b1")
    assert (b1.recipients, b1.delivered, b1.state) == (100, 70, "done")
    assert [b.broadcast_id for b in await admin.broadcasts(10)] == ["b2", "b1"]
    assert await admin.get_broadcast("nope") is None


async def test_node_stats_are_replaced_per_node(stores: tuple[Any, Any]) -> None:
    admin, _ = stores
    await admin.put_node_stats(NodeStats("node-0", 1, 5, 4, 100, 2.5))
    await admin.put_node_stats(NodeStats("node-1", 1, 1, 1, 0, 0.0))
    await admin.put_node_stats(NodeStats("node-0", 2, 6, 5, 120, 20.0))
    assert await admin.node_stats() == [NodeStats("node-0", 2, 6, 5, 120, 20.0), NodeStats("node-1", 1, 1, 1, 0, 0.0)]
