"""How many ``mark_sent`` calls per second the PostgreSQL relational adapter sustains.

Run: .venv/bin/python bench/postgres_mark_sent.py [--callers 200] [--seconds 10] [--in-flight 2]
     [--url postgresql://postgres@127.0.0.1:5432/flare_test]
Each caller is one sender in its own conversation that awaits each call before the next (as the router
awaits a send's read position), so the adapter sees ``callers`` calls in flight at any time. The run uses
a fresh schema in the database and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import asyncpg
import uvloop

from flare_im.backends.migrations import PostgresMigrator
from flare_im.backends.relational.base import Member
from flare_im.backends.relational.postgres import SCHEMA, PostgresConfig, PostgresRelational


async def main(url: str, callers: int, seconds: float, in_flight: int) -> None:
    schema = f"bench_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    schema_url = f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    try:
        conn = await asyncpg.connect(schema_url)
        await PostgresMigrator(conn, SCHEMA).apply()
        await conn.close()
        store = await PostgresRelational.open(PostgresConfig(url=schema_url, mark_sent_in_flight=in_flight))
        await store.add_members([Member(conv=f"g:{i}", uid=f"u{i}") for i in range(callers)])
        calls = 0
        deadline = time.perf_counter() + seconds

        async def caller(i: int) -> None:
            nonlocal calls
            seq = 0
            while time.perf_counter() < deadline:
                seq += 1
                await store.mark_sent(f"g:{i}", f"u{i}", seq, seq)
                calls += 1

        commits_before = store.commits
        start = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        elapsed = time.perf_counter() - start
        batches = store.commits - commits_before
        await store.close()
        print(
            f"{callers} callers, {elapsed:.1f}s, {in_flight} statements in flight: {calls / elapsed:,.0f} mark_sent/s;"
            f" {batches} batches of {calls / max(batches, 1):.0f} on average"
        )
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_url = os.environ.get("FLARE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/flare_test")
    parser.add_argument("--url", default=default_url)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=2)
    args = parser.parse_args()
    uvloop.run(main(args.url, args.callers, args.seconds, args.in_flight))
