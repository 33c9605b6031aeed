"""Message log on SQLite (embedded). Rows are unique on (conv, seq); appends are group-committed."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import msgspec

from flare_im.backends.message_log.base import ConvHead
from flare_im.backends.sqlite_db import RowBatcher, SqliteDatabase, columns
from flare_im.ids import snowflake_floor
from flare_im.protocol.frames import Message

# msg_id (time-ordered) is the rowid, so appends go to the end of the table and "recent" is a range on it.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        msg_id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
        cmid TEXT NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL, ts INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_conv_seq ON messages (conv, seq)",
    "CREATE INDEX IF NOT EXISTS messages_client_id ON messages (sender, cmid)",
    """CREATE TABLE IF NOT EXISTS conv_heads (
        conv TEXT PRIMARY KEY, max_seq INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID""",
)

_COLUMNS = "conv, seq, msg_id, sender, cmid, kind, body, ts"
_encode = msgspec.json.Encoder().encode
_decode_body = msgspec.json.Decoder(dict[str, Any]).decode


def _row_to_message(row: Any) -> Message:
    return Message(
        conv=row[0],
        seq=row[1],
        msg_id=str(row[2]),
        sender=row[3],
        cmid=row[4],
        kind=row[5],
        body=_decode_body(row[6]),
        ts=row[7],
    )


def _heads(rows: list[tuple[Any, ...]]) -> Iterable[tuple[str, int, int]]:
    """One head update per conversation of the batch: its largest seq and version."""
    heads: dict[str, tuple[str, int, int]] = {}
    for row in rows:
        conv, seq, version = row[0], row[1], row[8]
        known = heads.get(conv)
        heads[conv] = (conv, max(seq, known[1]), max(version, known[2])) if known else (conv, seq, version)
    return heads.values()


class SqliteMessageLog:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.migrate(SCHEMA)
        # Concurrent appends share one executemany per transaction (see RowBatcher).
        self._appends = RowBatcher(
            db,
            (
                (f"INSERT INTO messages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", columns(*range(8))),
                (
                    "INSERT INTO conv_heads (conv, max_seq, version) VALUES (?,?,?) ON CONFLICT (conv) DO UPDATE"
                    " SET max_seq = max(max_seq, excluded.max_seq), version = max(version, excluded.version)",
                    _heads,
                ),
            ),
        )

    def append(self, message: Message, version: int) -> Awaitable[None]:
        m = message
        return self._appends.submit(
            (m.conv, m.seq, int(m.msg_id), m.sender, m.cmid, m.kind, _encode(m.body), m.ts, version)
        )

    async def max_seq(self, conv: str) -> int:
        row = self._db.fetchone("SELECT max_seq FROM conv_heads WHERE conv = ?", (conv,))
        return int(row[0]) if row else 0

    async def heads(self, convs: Sequence[str]) -> dict[str, ConvHead]:
        out: dict[str, ConvHead] = {}
        for i in range(0, len(convs), 500):
            chunk = list(convs[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._db.fetchall(
                f"SELECT h.conv, h.max_seq, h.version, {', '.join('m.' + c.strip() for c in _COLUMNS.split(','))}"
                f" FROM conv_heads h LEFT JOIN messages m ON m.conv = h.conv AND m.seq = h.max_seq"
                f" WHERE h.conv IN ({marks})",
                chunk,
            )
            for r in rows:
                last = _row_to_message(r[3:]) if r[3] is not None else None
                out[r[0]] = ConvHead(conv=r[0], max_seq=r[1], version=r[2], last=last)
        return out

    async def range(self, conv: str, *, after: int, before: int, limit: int, newest: bool) -> list[Message]:
        order = "DESC" if newest else "ASC"
        rows = self._db.fetchall(
            f"SELECT {_COLUMNS} FROM messages WHERE conv = ? AND seq > ? AND seq < ? ORDER BY seq {order} LIMIT ?",
            (conv, after, min(before, 2**63 - 1), limit),
        )
        if newest:
            rows.reverse()
        return [_row_to_message(r) for r in rows]

    async def find_by_client_id(self, sender: str, cmid: str) -> Message | None:
        row = self._db.fetchone(
            f"SELECT {_COLUMNS} FROM messages WHERE sender = ? AND cmid = ? ORDER BY ts LIMIT 1", (sender, cmid)
        )
        return _row_to_message(row) if row else None

    async def recent_client_ids(self, since_ms: int, limit: int) -> list[tuple[str, str]]:
        rows = self._db.fetchall(
            "SELECT sender, cmid FROM messages WHERE msg_id >= ? ORDER BY msg_id DESC LIMIT ?",
            (snowflake_floor(since_ms), limit),
        )
        return [(r[0], r[1]) for r in rows]

    async def max_version(self) -> int:
        row = self._db.fetchone("SELECT coalesce(max(version), 0) FROM conv_heads")
        return int(row[0])
