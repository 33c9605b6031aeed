"""The media store on PostgreSQL (several nodes). Its schema (component ``media``) is applied by ``flare
migrate``, as the relational one is; ``open`` refuses a database that is behind."""

from __future__ import annotations

import asyncpg

from flare_im.backends.media.base import COLS, COLUMNS, DELETED, Media, MediaRef, media_of, media_values
from flare_im.backends.migrations import Migration, PostgresMigrator, Schema, check_version

SCHEMA = Schema(
    "media",
    (
        Migration(
            1,
            "media files and the messages that reference them",
            (
                """CREATE TABLE media (
                media_id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
                name TEXT NOT NULL, mime TEXT NOT NULL, size BIGINT NOT NULL, created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL, upload_id TEXT NOT NULL, parts INT NOT NULL, width INT NOT NULL,
                height INT NOT NULL, duration_ms BIGINT NOT NULL, thumb_mime TEXT NOT NULL, thumb_size BIGINT NOT NULL,
                thumb_width INT NOT NULL, thumb_height INT NOT NULL, blurhash TEXT NOT NULL,
                moderation TEXT NOT NULL)""",
                "CREATE INDEX media_owner ON media (owner, state)",
                "CREATE INDEX media_state ON media (state, updated_at)",
                """CREATE TABLE media_refs (
                media_id TEXT NOT NULL, conv TEXT NOT NULL, seq BIGINT NOT NULL, sender TEXT NOT NULL,
                PRIMARY KEY (media_id, conv, seq))""",
                "CREATE INDEX media_refs_message ON media_refs (conv, seq)",
            ),
        ),
    ),
)

_PLACES = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
_SET = ", ".join(f"{c} = ${i}" for i, c in enumerate(COLUMNS[1:], start=2))
_EXPECT = f"${len(COLUMNS) + 1}"


class PostgresMediaStore:
    """MediaStore over its own small asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, max_connections: int = 4) -> PostgresMediaStore:
        """Connect; raises SchemaError when the media schema is not the one this code needs."""
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

    async def insert(self, media: Media) -> None:
        try:
            await self._pool.execute(f"INSERT INTO media ({COLS}) VALUES ({_PLACES})", *media_values(media))
        except asyncpg.UniqueViolationError:
            raise KeyError(media.media_id) from None

    async def get(self, media_id: str) -> Media | None:
        row = await self._pool.fetchrow(f"SELECT {COLS} FROM media WHERE media_id = $1", media_id)
        return media_of(tuple(row)) if row else None

    async def update(self, media: Media, *, expect: str) -> bool:
        status: str = await self._pool.execute(
            f"UPDATE media SET {_SET} WHERE media_id = $1 AND state = {_EXPECT}", *media_values(media), expect
        )
        return status == "UPDATE 1"

    async def usage(self, owner: str) -> int:
        total = await self._pool.fetchval(
            "SELECT coalesce(sum(size + thumb_size), 0) FROM media WHERE owner = $1 AND state != $2", owner, DELETED
        )
        return int(total)

    async def add_ref(self, ref: MediaRef) -> None:
        await self._pool.execute(
            "INSERT INTO media_refs (media_id, conv, seq, sender) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            ref.media_id,
            ref.conv,
            ref.seq,
            ref.sender,
        )

    async def refs(self, media_id: str) -> list[MediaRef]:
        rows = await self._pool.fetch(
            "SELECT media_id, conv, seq, sender FROM media_refs WHERE media_id = $1 ORDER BY conv, seq", media_id
        )
        return [MediaRef(*row) for row in rows]

    async def drop_refs(self, conv: str, seq: int) -> list[str]:
        async with self._pool.acquire() as conn, conn.transaction():
            dropped = await conn.fetch(
                "DELETE FROM media_refs WHERE conv = $1 AND seq = $2 RETURNING media_id", conv, seq
            )
            ids = sorted({r[0] for r in dropped})
            if not ids:
                return []
            # Lock the media rows so a concurrent drop of another message's reference sees ours gone.
            await conn.execute("SELECT 1 FROM media WHERE media_id = ANY($1::text[]) FOR UPDATE", ids)
            left = await conn.fetch("SELECT DISTINCT media_id FROM media_refs WHERE media_id = ANY($1::text[])", ids)
            still = {r[0] for r in left}
            return [i for i in ids if i not in still]

    async def stale(self, state: str, before_ms: int, limit: int) -> list[Media]:
        rows = await self._pool.fetch(
            f"SELECT {COLS} FROM media WHERE state = $1 AND updated_at < $2 ORDER BY updated_at LIMIT $3",
            state,
            before_ms,
            limit,
        )
        return [media_of(tuple(r)) for r in rows]

    async def delete(self, media_id: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM media_refs WHERE media_id = $1", media_id)
            await conn.execute("DELETE FROM media WHERE media_id = $1", media_id)
