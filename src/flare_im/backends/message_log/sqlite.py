"""Message log on SQLite (embedded). Rows are unique on (conv, seq); appends are group-committed.

An operation event (recall, edit, reaction ...) is a row like any message; the same transaction applies
it to its target row (``version``, ``state``, ``body``, ``reactions``), so history reads current state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import msgspec

from flare_im.backends.message_log.base import Change, ConvHead, Revision, VersionConflict
from flare_im.backends.message_log.changes import edit_refs, react, reply_seq, unquote
from flare_im.backends.message_log.client_keys import RecentClientKeys
from flare_im.backends.sqlite_db import RowBatcher, SqliteDatabase, columns
from flare_im.ids import now_ms, snowflake_floor
from flare_im.protocol.frames import Message
from flare_im.protocol.values import decode_stored_body

# msg_id (time-ordered) is the rowid, so appends go to the end of the table and "recent" is a range on it.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        msg_id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
        cmid TEXT NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL, ts INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_conv_seq ON messages (conv, seq)",
    """CREATE TABLE IF NOT EXISTS conv_heads (
        conv TEXT PRIMARY KEY, max_seq INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS revisions (
        conv TEXT NOT NULL, seq INTEGER NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL, ts INTEGER NOT NULL,
        PRIMARY KEY (conv, seq, version)) WITHOUT ROWID""",
)
# Columns added after the first release; an existing file gets them in place.
_STATE_COLUMNS = (
    ("version", "INTEGER NOT NULL DEFAULT 1"),
    ("state", "TEXT NOT NULL DEFAULT ''"),
    ("edited_at", "INTEGER NOT NULL DEFAULT 0"),
    ("reactions", "BLOB"),  # JSON {emoji: [uid, ...]}, NULL when none
    ("reply_seq", "INTEGER"),  # the message quoted by this one (so a recall can update the quote)
    ("target", "INTEGER"),  # an operation event: the seq it applies to
)
# The idempotency key (sender, cmid) has no index in the file: client ids are random keys, and an index on them
# wrote a leaf page per append (see client_keys.py). Recent keys are in memory; older ones are found by a scan.
# Files from earlier releases lose their key index when opened.
_CLOCK_SLACK_MS = 60_000  # ids made by a node whose clock is ahead of ours are still found
_INDEXES = (
    "DROP INDEX IF EXISTS messages_client_id",
    "DROP INDEX IF EXISTS messages_client_key",
    "CREATE INDEX IF NOT EXISTS messages_reply ON messages (conv, reply_seq) WHERE reply_seq IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS messages_target ON messages (conv, target) WHERE target IS NOT NULL",
)

COLUMNS = "conv, seq, msg_id, sender, cmid, kind, body, ts, version, state, edited_at, reactions"  # message_of_row's
_encode = msgspec.json.Encoder().encode
_decode_body = decode_stored_body  # made to obey the body rule if stored before it (protocol/values.py)
_decode_reactions = msgspec.json.Decoder(dict[str, list[str]]).decode
_EMPTY = _encode({})


def message_of_row(row: Any) -> Message:
    """A row of ``COLUMNS`` as the protocol's Message (also read by the SQLite search index)."""
    return Message(
        conv=row[0],
        seq=row[1],
        msg_id=str(row[2]),
        sender=row[3],
        cmid=row[4],
        kind=row[5],
        body=_decode_body(row[6]),
        ts=row[7],
        version=row[8],
        state=row[9],
        edited_at=row[10],
        reactions=_decode_reactions(row[11]) if row[11] else {},
    )


def _heads(rows: list[tuple[Any, ...]]) -> Iterable[tuple[str, int, int]]:
    """One head update per conversation of the batch: its largest seq and version."""
    heads: dict[str, tuple[str, int, int]] = {}
    for row in rows:
        conv, seq, version = row[0], row[1], row[10]
        known = heads.get(conv)
        heads[conv] = (conv, max(seq, known[1]), max(version, known[2])) if known else (conv, seq, version)
    return heads.values()


class SqliteMessageLog:
    """``key_horizon_s``: how far back ``find_by_client_id`` answers from the keys in memory (the idempotency
    window and the router's slack); a lookup from further back scans the rows from there."""

    def __init__(self, db: SqliteDatabase, *, key_horizon_s: float = 360.0) -> None:
        self._db = db
        db.migrate(SCHEMA)
        present = {row[1] for row in db.reader.execute("PRAGMA table_info(messages)").fetchall()}
        db.migrate(f"ALTER TABLE messages ADD COLUMN {n} {d}" for n, d in _STATE_COLUMNS if n not in present)
        db.migrate(_INDEXES)
        self._keys = RecentClientKeys(horizon_s=key_horizon_s, clock_slack_ms=_CLOCK_SLACK_MS)
        since = now_ms() - int(key_horizon_s * 1000) - _CLOCK_SLACK_MS
        recent = "SELECT msg_id, sender, cmid FROM messages WHERE msg_id >= ?"
        rows = db.reader.execute(recent, (snowflake_floor(since),))
        self._keys.load(rows, since_ms=since)
        # Concurrent appends share one executemany per transaction (see RowBatcher).
        self._appends = RowBatcher(
            db,
            (
                (
                    "INSERT INTO messages (conv, seq, msg_id, sender, cmid, kind, body, ts, reply_seq, target)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    columns(*range(10)),
                ),
                (
                    "INSERT INTO conv_heads (conv, max_seq, version) VALUES (?,?,?) ON CONFLICT (conv) DO UPDATE"
                    " SET max_seq = max(max_seq, excluded.max_seq), version = max(version, excluded.version)",
                    _heads,
                ),
            ),
        )

    def append(self, message: Message, version: int) -> Awaitable[None]:
        m = message
        body = m.body
        quoted = reply_seq(body) if "reply_to" in body else None
        msg_id = int(m.msg_id)
        self._keys.add(m.sender, m.cmid, msg_id)  # before it commits: a retry racing the commit must find it
        return self._appends.submit(
            (m.conv, m.seq, msg_id, m.sender, m.cmid, m.kind, _encode(body), m.ts, quoted, None, version)
        )

    def apply(self, event: Message, change: Change, version: int) -> Awaitable[None]:
        e = event
        row = (e.conv, e.seq, int(e.msg_id), e.sender, e.cmid, e.kind, _encode(e.body), e.ts, None, change.target)
        self._keys.add(e.sender, e.cmid, row[2])
        self._appends.seal()  # appends called before this one commit before it, later ones after
        return self._db.write(lambda conn: _apply(conn, row, change, version))

    async def get(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        # Chunks of ascending seqs, each ordered: the rows come in seq order.
        rows = self._db.fetchall_in(
            f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq IN (?*) ORDER BY seq", sorted(set(seqs)), (conv,)
        )
        return [message_of_row(r) for r in rows]

    async def revisions(self, conv: str, seq: int) -> list[Revision]:
        rows = self._db.fetchall(
            "SELECT version, body, ts FROM revisions WHERE conv = ? AND seq = ? ORDER BY version", (conv, seq)
        )
        return [Revision(version=r[0], body=_decode_body(r[1]), ts=r[2]) for r in rows]

    async def max_seq(self, conv: str) -> int:
        row = self._db.fetchone("SELECT max_seq FROM conv_heads WHERE conv = ?", (conv,))
        return int(row[0]) if row else 0

    async def heads(self, convs: Sequence[str]) -> dict[str, ConvHead]:
        rows = self._db.fetchall_in(
            f"SELECT h.conv, h.max_seq, h.version, {', '.join('m.' + c.strip() for c in COLUMNS.split(','))}"
            " FROM conv_heads h LEFT JOIN messages m ON m.conv = h.conv AND m.seq = h.max_seq WHERE h.conv IN (?*)",
            convs,
        )
        heads: dict[str, ConvHead] = {}
        for r in rows:
            last = message_of_row(r[3:]) if r[3] is not None else None
            heads[r[0]] = ConvHead(conv=r[0], max_seq=r[1], version=r[2], last=last)
        return heads

    async def range(self, conv: str, *, after: int, before: int, limit: int, newest: bool) -> list[Message]:
        order = "DESC" if newest else "ASC"
        rows = self._db.fetchall(
            f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq > ? AND seq < ? ORDER BY seq {order} LIMIT ?",
            (conv, after, min(before, 2**63 - 1), limit),
        )
        if newest:
            rows.reverse()
        return [message_of_row(r) for r in rows]

    async def find_by_client_id(self, sender: str, cmid: str, *, since_ms: int) -> Message | None:
        floor = snowflake_floor(since_ms)
        if since_ms < self._keys.covered_from_ms:  # from before what memory holds: rare, and a scan
            row = self._db.fetchone(
                f"SELECT {COLUMNS} FROM messages WHERE msg_id >= ? AND sender = ? AND cmid = ? ORDER BY ts LIMIT 1",
                (floor, sender, cmid),
            )
            return message_of_row(row) if row else None
        ids = [i for i in self._keys.candidates(sender, cmid) if i >= floor]
        if not ids:
            return None
        rows = self._db.fetchall_in(f"SELECT {COLUMNS} FROM messages WHERE msg_id IN (?*)", ids)
        found = [r for r in rows if r[3] == sender and r[4] == cmid]  # other keys of the same hash drop out
        return message_of_row(min(found, key=lambda r: (r[7], r[2]))) if found else None

    async def recent_client_ids(self, since_ms: int, limit: int) -> list[tuple[str, str]]:
        rows = self._db.fetchall(
            "SELECT sender, cmid FROM messages WHERE msg_id >= ? ORDER BY msg_id DESC LIMIT ?",
            (snowflake_floor(since_ms), limit),
        )
        return [(r[0], r[1]) for r in rows]

    async def max_version(self) -> int:
        row = self._db.fetchone("SELECT coalesce(max(version), 0) FROM conv_heads")
        return int(row[0])


def _apply(conn: sqlite3.Connection, event: tuple[Any, ...], change: Change, version: int) -> None:
    """Runs on the writer thread inside its transaction; a savepoint keeps a failed op from leaving half."""
    conv, target = event[0], change.target
    conn.execute("SAVEPOINT op")
    try:
        row = conn.execute(f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq = ?", (conv, target)).fetchone()
        if row is None:
            raise LookupError(f"no message {conv}#{target}")
        current = message_of_row(row)
        content = bool(change.state) or change.body is not None
        if content and change.version != current.version + 1:
            raise VersionConflict(current)
        conn.execute(
            "INSERT INTO messages (conv, seq, msg_id, sender, cmid, kind, body, ts, reply_seq, target)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            event,
        )
        conn.execute(
            "INSERT INTO conv_heads (conv, max_seq, version) VALUES (?,?,?) ON CONFLICT (conv) DO UPDATE"
            " SET max_seq = max(max_seq, excluded.max_seq), version = max(version, excluded.version)",
            (conv, event[1], version),
        )
        if change.state:
            _remove_content(conn, current, change)
        elif change.body is not None:
            conn.execute(
                "INSERT OR IGNORE INTO revisions (conv, seq, version, body, ts) VALUES (?,?,?,?,?)",
                (conv, target, current.version, _encode(current.body), current.edited_at or current.ts),
            )
            conn.execute(
                "UPDATE messages SET body = ?, version = ?, edited_at = ? WHERE conv = ? AND seq = ?",
                (_encode(change.body), change.version, change.edited_at, conv, target),
            )
        elif change.reaction is not None:
            reactions = react(current.reactions, *change.reaction)
            conn.execute(
                "UPDATE messages SET reactions = ? WHERE conv = ? AND seq = ?",
                (_encode(reactions) if reactions else None, conv, target),
            )
        conn.execute("RELEASE op")
    except BaseException:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        raise


def _remove_content(conn: sqlite3.Connection, current: Message, change: Change) -> None:
    conv, target = current.conv, current.seq
    conn.execute(
        "UPDATE messages SET body = ?, state = ?, version = ?, reactions = NULL, edited_at = 0"
        " WHERE conv = ? AND seq = ?",
        (_EMPTY, change.state, change.version, conv, target),
    )
    conn.execute("DELETE FROM revisions WHERE conv = ? AND seq = ?", (conv, target))
    # Earlier edit events carried text of the message: keep only their references.
    for seq, body in conn.execute(
        "SELECT seq, body FROM messages WHERE conv = ? AND target = ? AND kind = 'edit'", (conv, target)
    ).fetchall():
        kept = edit_refs(_decode_body(body))
        conn.execute("UPDATE messages SET body = ? WHERE conv = ? AND seq = ?", (_encode(kept), conv, seq))
    # Replies keep their reference to it, without its text: in their current body, their earlier versions
    # and the edit events that carried those versions.
    replies = [r[0] for r in conn.execute("SELECT seq FROM messages WHERE conv = ? AND reply_seq = ?", (conv, target))]
    for reply in replies:
        rows = conn.execute(
            "SELECT 'm', seq, 0, body FROM messages WHERE conv = ? AND (seq = ? OR (target = ? AND kind = 'edit'))"
            " UNION ALL SELECT 'r', seq, version, body FROM revisions WHERE conv = ? AND seq = ?",
            (conv, reply, reply, conv, reply),
        ).fetchall()
        for where, seq, version, raw in rows:
            body = _decode_body(raw)
            holder = body if seq == reply or where == "r" else body.get("body")
            if not isinstance(holder, dict) or not unquote(holder, target, change.state):
                continue
            if where == "m":
                conn.execute("UPDATE messages SET body = ? WHERE conv = ? AND seq = ?", (_encode(body), conv, seq))
            else:
                conn.execute(
                    "UPDATE revisions SET body = ? WHERE conv = ? AND seq = ? AND version = ?",
                    (_encode(body), conv, seq, version),
                )
