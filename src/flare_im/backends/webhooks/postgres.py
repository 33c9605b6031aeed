"""The webhook store on PostgreSQL (several nodes; the contract is in base.py). Its schema is applied by
``flare migrate``, as the relational one is; ``open`` refuses a database that is behind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from flare_im.backends.migrations import Migration, PostgresMigrator, Schema, check_version
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
                timeout_ms INT NOT NULL, policy TEXT NOT NULL, enabled BOOLEAN NOT NULL, description TEXT NOT NULL,
                created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)""",
                "CREATE TABLE webhook_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
                "INSERT INTO webhook_meta (name, value) VALUES ('revision', 0)",
                """CREATE TABLE webhook_deliveries (
                delivery_id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, event TEXT NOT NULL, event_id TEXT NOT NULL,
                payload TEXT NOT NULL, state TEXT NOT NULL, tries INT NOT NULL, next_at BIGINT NOT NULL,
                last_error TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                lease_until BIGINT NOT NULL)""",
                "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending'",
                "CREATE INDEX webhook_deliveries_updated ON webhook_deliveries (updated_at)",
                "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, updated_at)",
            ),
        ),
    ),
)

_BUMP = "UPDATE webhook_meta SET value = value + 1 WHERE name = 'revision'"


class PostgresWebhookStore:
    """WebhookStore over its own small asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, max_connections: int = 4) -> PostgresWebhookStore:
        """Connect; raises SchemaError when the webhooks schema is not the one this code needs."""
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_connections)
        try:
            async with pool.acquire() as conn:
                version = await PostgresMigrator(conn, SCHEMA).current_version()
            check_version(SCHEMA, version, "the PostgreSQL database")
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def endpoints(self) -> list[Endpoint]:
        rows = await self._pool.fetch(f"SELECT {ENDPOINT_COLS} FROM webhook_endpoints ORDER BY endpoint_id")
        return [endpoint_of(row) for row in rows]

    async def endpoints_revision(self) -> int:
        value: int = await self._pool.fetchval("SELECT value FROM webhook_meta WHERE name = 'revision'")
        return value

    async def put_endpoint(self, endpoint: Endpoint) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO webhook_endpoints ({ENDPOINT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
                " ON CONFLICT (endpoint_id) DO UPDATE SET url = excluded.url, secret = excluded.secret,"
                " events = excluded.events, timeout_ms = excluded.timeout_ms, policy = excluded.policy,"
                " enabled = excluded.enabled, description = excluded.description,"
                " created_at = excluded.created_at, updated_at = excluded.updated_at",
                *endpoint_values(endpoint),
            )
            await conn.execute(_BUMP)

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM webhook_endpoints WHERE endpoint_id = $1", endpoint_id)
            if status == "DELETE 0":
                return False
            await conn.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id)
            await conn.execute(_BUMP)
            return True

    async def add_deliveries(self, deliveries: Sequence[Delivery], now: int, lease_ms: int) -> set[str]:
        if not deliveries:
            return set()
        columns = list(zip(*(delivery_values(d) for d in deliveries), strict=True))
        rows = await self._pool.fetch(
            f"INSERT INTO webhook_deliveries ({DELIVERY_COLS}, lease_until)"
            " SELECT d, e, ev, eid, p, $6, t, n, le, c, u, $12 FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::text[], $5::text[], $7::int[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[])"
            " AS x(d, e, ev, eid, p, t, n, le, c, u)"
            " ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id",
            list(columns[0]),
            list(columns[1]),
            list(columns[2]),
            list(columns[3]),
            list(columns[4]),
            PENDING,
            list(columns[6]),
            list(columns[7]),
            list(columns[8]),
            list(columns[9]),
            list(columns[10]),
            now + lease_ms,
        )
        return {row[0] for row in rows}

    async def take_due(self, now: int, lease_ms: int, limit: int) -> list[Delivery]:
        rows = await self._pool.fetch(
            f"UPDATE webhook_deliveries SET lease_until = $3 WHERE delivery_id IN ("
            " SELECT delivery_id FROM webhook_deliveries WHERE state = $1 AND next_at <= $2 AND lease_until <= $2"
            " ORDER BY next_at LIMIT $4 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {DELIVERY_COLS}",
            PENDING,
            now,
            now + lease_ms,
            limit,
        )
        return sorted((Delivery(*row) for row in rows), key=lambda d: d.next_at)

    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        await self._pool.executemany(
            "UPDATE webhook_deliveries SET state = $1, tries = $2, next_at = $3, last_error = $4, updated_at = $5,"
            " lease_until = 0 WHERE delivery_id = $6",
            [(d.state, d.tries, d.next_at, d.last_error, d.updated_at, d.delivery_id) for d in deliveries],
        )

    async def deliveries(
        self, *, endpoint_id: str = "", state: str = "", since: int = 0, limit: int = 100
    ) -> list[Delivery]:
        where, params = ["updated_at >= $1"], list[Any]([since])
        for column, value in (("endpoint_id", endpoint_id), ("state", state)):
            if value:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        params.append(limit)
        rows = await self._pool.fetch(
            f"SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE {' AND '.join(where)}"
            f" ORDER BY updated_at DESC, delivery_id LIMIT ${len(params)}",
            *params,
        )
        return [Delivery(*row) for row in rows]

    async def replay(self, now: int, *, endpoint_id: str = "", delivery_ids: Sequence[str] = ()) -> int:
        sql = (
            "UPDATE webhook_deliveries SET state = $1, tries = 0, next_at = $2, lease_until = 0, updated_at = $2"
            " WHERE state = $3"
        )
        if delivery_ids:
            status = await self._pool.execute(
                sql + " AND delivery_id = ANY($4::text[]) AND ($5 = '' OR endpoint_id = $5)",
                PENDING,
                now,
                DEAD,
                list(delivery_ids),
                endpoint_id,
            )
        else:
            status = await self._pool.execute(sql + " AND endpoint_id = $4", PENDING, now, DEAD, endpoint_id)
        return int(status.split()[-1])

    async def purge_deliveries(self, before: int) -> int:
        status = await self._pool.execute(
            "DELETE FROM webhook_deliveries WHERE state IN ($1, $2) AND updated_at < $3", DELIVERED, DEAD, before
        )
        return int(status.split()[-1])
