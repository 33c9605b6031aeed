"""The media store on the embedded SQLite database (its own schema component, ``media``)."""

from __future__ import annotations

import sqlite3

from flare_im.backends.media.base import COLS, COLUMNS, DELETED, Media, MediaRef, media_of, media_values
from flare_im.backends.migrations import Migration, Schema
from flare_im.backends.sqlite_db import SqliteDatabase

SCHEMA = Schema(
    "media",
    (
        Migration(
            1,
            "media files and the messages that reference them",
            (
                """CREATE TABLE media (
                media_id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
                name TEXT NOT NULL, mime TEXT NOT NULL, size INTEGER NOT NULL, created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL, upload_id TEXT NOT NULL, parts INTEGER NOT NULL, width INTEGER NOT NULL,
                height INTEGER NOT NULL, duration_ms INTEGER NOT NULL, thumb_mime TEXT NOT NULL,
                thumb_size INTEGER NOT NULL, thumb_width INTEGER NOT NULL, thumb_height INTEGER NOT NULL,
                blurhash TEXT NOT NULL, moderation TEXT NOT NULL) WITHOUT ROWID""",
                "CREATE INDEX media_owner ON media (owner, state)",
                "CREATE INDEX media_state ON media (state, updated_at)",
                """CREATE TABLE media_refs (
                media_id TEXT NOT NULL, conv TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
                PRIMARY KEY (media_id, conv, seq)) WITHOUT ROWID""",
                "CREATE INDEX media_refs_message ON media_refs (conv, seq)",
            ),
        ),
    ),
)

_PLACES = ", ".join("?" for _ in COLUMNS)
_SET = ", ".join(f"{c} = ?" for c in COLUMNS[1:])


class SqliteMediaStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.apply_migrations(SCHEMA)

    async def insert(self, media: Media) -> None:
        def op(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO media ({COLS}) VALUES ({_PLACES})", media_values(media))
            except sqlite3.IntegrityError:
                raise KeyError(media.media_id) from None

        await self._db.write(op)

    async def get(self, media_id: str) -> Media | None:
        row = self._db.fetchone(f"SELECT {COLS} FROM media WHERE media_id = ?", (media_id,))
        return media_of(row) if row else None

    async def update(self, media: Media, *, expect: str) -> bool:
        values = media_values(media)

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"UPDATE media SET {_SET} WHERE media_id = ? AND state = ?", (*values[1:], media.media_id, expect)
            )
            return cursor.rowcount == 1

        done: bool = await self._db.write(op)
        return done

    async def usage(self, owner: str) -> int:
        row = self._db.fetchone(
            "SELECT coalesce(sum(size + thumb_size), 0) FROM media WHERE owner = ? AND state != ?", (owner, DELETED)
        )
        return int(row[0])

    async def add_ref(self, ref: MediaRef) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO media_refs (media_id, conv, seq, sender) VALUES (?,?,?,?)",
                (ref.media_id, ref.conv, ref.seq, ref.sender),
            )

        await self._db.write(op)

    async def refs(self, media_id: str) -> list[MediaRef]:
        rows = self._db.fetchall(
            "SELECT media_id, conv, seq, sender FROM media_refs WHERE media_id = ? ORDER BY conv, seq", (media_id,)
        )
        return [MediaRef(*row) for row in rows]

    async def drop_refs(self, conv: str, seq: int) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            ids = [
                r[0] for r in conn.execute("SELECT media_id FROM media_refs WHERE conv = ? AND seq = ?", (conv, seq))
            ]
            conn.execute("DELETE FROM media_refs WHERE conv = ? AND seq = ?", (conv, seq))
            return [
                i for i in ids if conn.execute("SELECT 1 FROM media_refs WHERE media_id = ?", (i,)).fetchone() is None
            ]

        unreferenced: list[str] = await self._db.write(op)
        return unreferenced

    async def stale(self, state: str, before_ms: int, limit: int) -> list[Media]:
        rows = self._db.fetchall(
            f"SELECT {COLS} FROM media WHERE state = ? AND updated_at < ? ORDER BY updated_at LIMIT ?",
            (state, before_ms, limit),
        )
        return [media_of(r) for r in rows]

    async def delete(self, media_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM media_refs WHERE media_id = ?", (media_id,))
            conn.execute("DELETE FROM media WHERE media_id = ?", (media_id,))

        await self._db.write(op)

    async def close(self) -> None:
        return None
