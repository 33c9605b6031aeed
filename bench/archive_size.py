"""Bytes per message in each tier: the SQLite message log (hot, embedded) against its Parquet archive (cold).

Run: .venv/bin/python bench/archive_size.py [messages] [conversations] [clickhouse_http_url]
Writes ``messages`` text messages (ids, cmids and bodies as the server makes them: a few to a few dozen words
from a 2,000-word vocabulary) over 90 days into ``conversations`` conversations through SqliteMessageLog,
VACUUMs, archives them all with the archiver, VACUUMs again, and prints the SQLite bytes that left (table and
indexes) and the Parquet bytes that arrived, each per message. With a ClickHouse HTTP URL, the same messages
also go into a scratch database with the cluster store's schema (``messages`` and ``client_ids``, one row each
per message), merged with OPTIMIZE FINAL, and their parts' bytes on disk are printed; the database is dropped.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

from flare_im.archive import archiver
from flare_im.backends.message_log.clickhouse_schema import ClientIdRow, MessageRow, schema
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.objects.local import LocalConfig, LocalObjectStore
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.ids import snowflake_floor
from flare_im.protocol.frames import Message

DAY = 86_400_000


def _vacuumed_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    return path.stat().st_size


def _messages(n: int, convs: int) -> list[Message]:
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    start = int(time.time() * 1000) - 200 * DAY
    seqs = [0] * convs
    out = []
    for i in range(n):
        c = rng.randrange(convs)
        seqs[c] += 1
        ts = start + i * 90 * DAY // n
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 30)))
        out.append(
            Message(
                conv=f"g:{c:05d}",
                seq=seqs[c],
                msg_id=str(snowflake_floor(ts) + (i % 4096)),
                sender=f"user{rng.randrange(10_000)}",
                cmid=f"{rng.getrandbits(64):016x}",
                kind="text",
                body={"text": text},
                ts=ts,
            )
        )
    return out


def _clickhouse(url: str, messages: list[Message]) -> None:
    db = f"flare_archive_size_{int(time.time())}"

    def q(sql: str, data: bytes | None = None, database: str = "") -> str:
        params = {"query": sql, **({"database": database} if database else {})}
        reply = httpx.post(url, params=params, content=data, timeout=600)
        reply.raise_for_status()
        return reply.text

    q(f"CREATE DATABASE {db}")
    try:
        for statement in schema(codecs=False):  # as on 18.16; with codecs from 20.1 the sizes differ
            q(statement, database=db)
        rows = [
            MessageRow(
                conv=m.conv, seq=m.seq, msg_id=int(m.msg_id), sender=m.sender, cmid=m.cmid, kind=m.kind,
                body=json.dumps(m.body, separators=(",", ":")), ts=m.ts, version=1, state="", edited_at=0,
                reactions="", list_version=i + 1, reply_seq=0, target=0, row_version=1,
            )
            for i, m in enumerate(messages)
        ]  # fmt: skip
        ids = [
            ClientIdRow(sender=m.sender, cmid=m.cmid, msg_id=int(m.msg_id), conv=m.conv, seq=m.seq, ts=m.ts)
            for m in messages
        ]
        for table, batch in (("messages", rows), ("client_ids", ids)):
            q(f"INSERT INTO {table} FORMAT JSONEachRow", b"\n".join(msgspec.json.encode(r) for r in batch), db)
            q(f"OPTIMIZE TABLE {table} FINAL", database=db)
        parts = q(
            "SELECT table, sum(bytes_on_disk), count() FROM system.parts"
            f" WHERE database = '{db}' AND active GROUP BY table"
        )
        for line in sorted(parts.splitlines()):
            table, size, count = line.split("\t")
            print(f"ClickHouse {table}: {int(size) / len(messages):.1f} bytes/message ({count} parts)")
    finally:
        q(f"DROP DATABASE {db}")


async def main(n: int, convs: int, clickhouse: str) -> None:
    messages = _messages(n, convs)
    if clickhouse:
        _clickhouse(clickhouse, messages)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flare.db"
        db = SqliteDatabase(SqliteConfig(path=str(path), synchronous="OFF"))
        log = SqliteMessageLog(db)
        db.start()
        pending = []
        for i, m in enumerate(messages):
            pending.append(log.append(m, i + 1))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await db.close()
        hot = _vacuumed_size(path)
        conn = archiver.open_catalog(str(path))
        store = LocalObjectStore(LocalConfig(root=str(Path(tmp) / "media")))
        t0 = time.monotonic()
        report = await archiver.run(conn, store, older_than_s=60 * 86400)
        took = time.monotonic() - t0
        left = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        conn.close()
        await store.close()
        after = _vacuumed_size(path)
        print(f"{n} messages in {convs} conversations; archived {report.rows} in {report.parts} parts in {took:.1f} s")
        print(f"SQLite: {hot} bytes with all, {after} after, {left} rows left")
        print(f"hot tier (SQLite, vacuumed): {(hot - after) / report.rows:.1f} bytes/message")
        print(f"cold tier (Parquet, zstd): {report.bytes / report.rows:.1f} bytes/message")


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]) if args else 100_000, int(args[1]) if len(args) > 1 else 100, "".join(args[2:3])))
