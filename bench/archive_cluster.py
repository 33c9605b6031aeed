"""Bytes per message before and after the cluster's archive pass: ClickHouse (hot) against Parquet (cold).

Run: .venv/bin/python bench/archive_cluster.py [messages] [conversations] [clickhouse_url] [postgres_url]
(defaults: 100000 100 clickhouse://127.0.0.1:18123/default postgresql://postgres@127.0.0.1:5432/postgres).
The messages of bench/archive_size.py (90 days) go into a scratch ClickHouse database with the store's schema
(one INSERT, then OPTIMIZE FINAL: merged, as a store settles); a real pass (archive/clickhouse_source.py, a
scratch PostgreSQL catalog, a local directory as the object store, no grace period) archives the first 60
of the 90 days; ``messages`` is merged again and its bytes on disk before and after, the Parquet bytes, and the
pass's time are printed. Both scratch databases are dropped.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

import aiohttp
import asyncpg
import msgspec
from archive_size import _messages

from flare_im.archive import clickhouse_source, pg_catalog
from flare_im.archive.clickhouse_source import ClickHouseSource
from flare_im.backends.clickhouse_client import connect
from flare_im.backends.message_log.clickhouse_schema import MessageRow, schema
from flare_im.backends.objects.local import LocalConfig, LocalObjectStore


async def main(n: int, convs: int, clickhouse: str, postgres: str) -> None:
    name = f"flare_archive_cluster_{int(time.time())}"
    admin = connect(clickhouse)
    await admin.query(f"CREATE DATABASE {name}")
    pg = await asyncpg.connect(postgres)
    await pg.execute(f'CREATE DATABASE "{name}"')
    client = connect(clickhouse.rsplit("/", 1)[0] + f"/{name}")
    try:
        for statement in schema(codecs=False):  # as on 18.16
            await client.query(statement)
        messages = _messages(n, convs)
        rows = [
            MessageRow(
                conv=m.conv, seq=m.seq, msg_id=int(m.msg_id), sender=m.sender, cmid=m.cmid, kind=m.kind,
                body=msgspec.json.encode(m.body).decode(), ts=m.ts, version=1, state="", edited_at=0,
                reactions="", list_version=i + 1, reply_seq=0, target=0, row_version=1,
            )
            for i, m in enumerate(messages)
        ]  # fmt: skip
        await client.insert("INSERT INTO messages FORMAT JSONEachRow", b"\n".join(msgspec.json.encode(r) for r in rows))

        async def size() -> tuple[int, int]:
            try:
                await client.query("OPTIMIZE TABLE messages FINAL")
            except aiohttp.ServerDisconnectedError:  # seen once after a 3,000-part pass on 18.16: once more
                await asyncio.sleep(5)
                await client.query("OPTIMIZE TABLE messages FINAL")
            sql = (
                "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts"
                f" WHERE database = '{name}' AND table = 'messages' AND active FORMAT TSV"
            )
            got = (await client.query(sql)).decode().split()
            return int(got[0] or 0), int(got[1] or 0)

        hot_bytes, hot_rows = await size()
        with tempfile.TemporaryDirectory() as tmp:
            store = LocalObjectStore(LocalConfig(root=tmp))
            t0 = time.monotonic()
            async with pg_catalog.exclusive(postgres.rsplit("/", 1)[0] + f"/{name}") as conn:
                report = await clickhouse_source.run(
                    ClickHouseSource(client),
                    conn,
                    store,
                    older_than_s=140 * 86400,  # the messages span 200 to 110 days ago
                    grace_s=0,
                )
            took = time.monotonic() - t0
            await store.close()
        left_bytes, left_rows = await size()
        print(f"{n} messages in {convs} conversations; archived {report.rows} in {report.parts} parts in {took:.1f} s")
        print(f"ClickHouse messages: {hot_bytes} bytes, {hot_rows} rows before; {left_bytes} bytes, {left_rows} after")
        print(f"hot tier (ClickHouse messages, merged): {(hot_bytes - left_bytes) / report.rows:.1f} bytes/message")
        print(f"cold tier (Parquet, zstd): {report.bytes / report.rows:.1f} bytes/message")
    finally:
        await client.close()
        await admin.query(f"DROP DATABASE IF EXISTS {name}")
        await admin.close()
        await pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await pg.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            int(args[0]) if args else 100_000,
            int(args[1]) if len(args) > 1 else 100,
            args[2] if len(args) > 2 else "clickhouse://127.0.0.1:18123/default",
            args[3] if len(args) > 3 else "postgresql://postgres@127.0.0.1:5432/postgres",
        )
    )
