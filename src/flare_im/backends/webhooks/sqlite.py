"""The webhook store on SQLite (the embedded database; the contract is in base.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from flare_im.backends.migrations import Migration, Schema
from flare_im.backends.sqlite_db import SqliteDatabase
from flare_im.backends.webhooks.base import (
    DEAD,
    DELIVERED,
    DELIVERY_COLS,
    ENDPOINT_COLS,
    PENDING,
    Delivery,
    Endpoint,
    delivery_values,
    endpoint_of,
    endpoint_values,
)

SCHEMA = Schema(
    "webhooks",
    (
        Migration(
            1,
            "webhook endpoints and deliveries",
            (
                """CREATE TABLE webhook_endpoints (
                endpoint_id TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, events TEXT NOT NULL,
                timeout_ms INTEGER NOT NULL, policy TEXT NOT NULL, enabled INTEGER NOT NULL, description TEXT NOT NULL,
                created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
                "CREATE TABLE webhook_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
                "INSERT INTO webhook_meta (name, value) VALUES ('revision', 0)",
                """CREATE TABLE webhook_deliveries (
                delivery_id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, event TEXT NOT NULL, event_id TEXT NOT NULL,
                payload TEXT NOT NULL, state TEXT NOT NULL, tries INTEGER NOT NULL, next_at INTEGER NOT NULL,
                last_error TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                lease_until INTEGER NOT NULL)""",
                "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending'",
                "CREATE INDEX webhook_deliveries_updated ON webhook_deliveries (updated_at)",
                "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, updated_at)",
            ),
        ),
    ),
)

_MARKS = ",".join("?" * 10)
_BUMP = "UPDATE webhook_meta SET value = value + 1 WHERE name = 'revision'"


class SqliteWebhookStore:
    """WebhookStore over one SqliteDatabase (migrated here, so build it before the database's ``start``)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.apply_migrations(SCHEMA)

    async def endpoints(self) -> list[Endpoint]:
        rows = self._db.fetchall(f"SELECT {ENDPOINT_COLS} FROM webhook_endpoints ORDER BY endpoint_id")
        return [endpoint_of(row) for row in rows]

    async def endpoints_revision(self) -> int:
        value: int = self._db.fetchone("SELECT value FROM webhook_meta WHERE name = 'revision'")[0]
        return value

    async def put_endpoint(self, endpoint: Endpoint) -> None:
        row = endpoint_values(endpoint)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT OR REPLACE INTO webhook_endpoints ({ENDPOINT_COLS}) VALUES ({_MARKS})", row)
            conn.execute(_BUMP)

        await self._db.write(op)

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute("DELETE FROM webhook_endpoints WHERE endpoint_id = ?", (endpoint_id,)).rowcount == 0:
                return False
            conn.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,))
            conn.execute(_BUMP)
            return True

        deleted: bool = await self._db.write(op)
        return deleted

    async def add_deliveries(self, deliveries: Sequence[Delivery], now: int, lease_ms: int) -> set[str]:
        if not deliveries:
            return set()
        rows = [(*delivery_values(d)[:5], PENDING, *delivery_values(d)[6:], now + lease_ms) for d in deliveries]

        def op(conn: sqlite3.Connection) -> set[str]:
            added: set[str] = set()
            for row in rows:
                cursor = conn.execute(
                    f"INSERT OR IGNORE INTO webhook_deliveries ({DELIVERY_COLS}, lease_until)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
                if cursor.rowcount:
                    added.add(row[0])
            return added

        result: set[str] = await self._db.write(op)
        return result

    async def take_due(self, now: int, lease_ms: int, limit: int) -> list[Delivery]:
        def op(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                f"SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE state = ? AND next_at <= ? AND lease_until <= ?"
                " ORDER BY next_at LIMIT ?",
                (PENDING, now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE webhook_deliveries SET lease_until = ? WHERE delivery_id = ?",
                [(now + lease_ms, row[0]) for row in rows],
            )
            return [Delivery(*row) for row in rows]

        taken: list[Delivery] = await self._db.write(op)
        return taken

    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        rows = [(d.state, d.tries, d.next_at, d.last_error, d.updated_at, d.delivery_id) for d in deliveries]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE webhook_deliveries SET state = ?, tries = ?, next_at = ?, last_error = ?, updated_at = ?,"
                " lease_until = 0 WHERE delivery_id = ?",
                rows,
            )

        await self._db.write(op)

    async def deliveries(
        self, *, endpoint_id: str = "", state: str = "", since: int = 0, limit: int = 100
    ) -> list[Delivery]:
        where, params = ["updated_at >= ?"], list[Any]([since])
        for column, value in (("endpoint_id", endpoint_id), ("state", state)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self._db.fetchall(
            f"SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE {' AND '.join(where)}"
            " ORDER BY updated_at DESC, delivery_id LIMIT ?",
            [*params, limit],
        )
        return [Delivery(*row) for row in rows]

    async def replay(self, now: int, *, endpoint_id: str = "", delivery_ids: Sequence[str] = ()) -> int:
        ids = list(delivery_ids)

        def op(conn: sqlite3.Connection) -> int:
            sql = (
                "UPDATE webhook_deliveries SET state = ?, tries = 0, next_at = ?, lease_until = 0, updated_at = ?"
                " WHERE state = ?"
            )
            if ids:
                marks = ",".join("?" * len(ids))
                extra = [endpoint_id] if endpoint_id else []
                where = f" AND delivery_id IN ({marks})" + (" AND endpoint_id = ?" if endpoint_id else "")
                return conn.execute(sql + where, (PENDING, now, now, DEAD, *ids, *extra)).rowcount
            return conn.execute(sql + " AND endpoint_id = ?", (PENDING, now, now, DEAD, endpoint_id)).rowcount

        count: int = await self._db.write(op)
        return count

    async def purge_deliveries(self, before: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM webhook_deliveries WHERE state IN (?, ?) AND updated_at < ?", (DELIVERED, DEAD, before)
            ).rowcount

        count: int = await self._db.write(op)
        return count
