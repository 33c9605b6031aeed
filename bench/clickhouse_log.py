"""Appends/s and range-query latency of the ClickHouse message log against a ClickHouse server.

Run: .venv/bin/python bench/clickhouse_log.py [--appenders 200] [--seconds 10] [--preload 2000000]
     [--queries 200] [--url clickhouse://127.0.0.1:18123/default]

1. Appends: ``--appenders`` callers, each in its own conversation, each awaiting every append before the next
   (as the store worker awaits a batch), for ``--seconds``. Reports appends/s, the INSERTs they took and
   the append latency.
2. Range queries: ``--preload`` messages are generated on the server (INSERT ... SELECT, in 20 inserts, in
   2000 conversations, spread over a year so every conversation spans 13 monthly partitions; 10% of them get
   a second row version, as edits do), then ``--queries`` reads of a page of 50 (the newest page, and an
   older one) through the adapter, and the same page with FINAL instead of LIMIT 1 BY for comparison.
The run uses a fresh database and drops it afterwards. Everything is bounded by the options above.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import uvloop

from flare_im.backends.clickhouse_client import ClickHouseClient, connect
from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog
from flare_im.backends.message_log.clickhouse_schema import MESSAGE_COLUMNS
from flare_im.protocol.frames import Message

PAGE = 50
PRELOAD_CONVS = 2000
PRELOAD_INSERTS = 20
MAX_SEQ = 2**63 - 1


def percentiles(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"


async def bench_appends(log: ClickHouseMessageLog, appenders: int, seconds: float) -> None:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    ids = iter(range(1, 2**62))

    async def appender(i: int) -> None:
        seq = 0
        while time.perf_counter() < deadline:
            seq += 1
            msg_id = next(ids)
            message = Message(
                conv=f"a:{i}",
                seq=seq,
                msg_id=str(msg_id),
                sender=f"u{i}",
                cmid=f"c{msg_id}",
                kind="text",
                body={"text": f"hello from appender {i}, message {seq}"},
                ts=int(time.time() * 1000),
            )
            start = time.perf_counter()
            await log.append(message, msg_id)
            latencies.append((time.perf_counter() - start) * 1000)

    batches_before = log.batches
    start = time.perf_counter()
    await asyncio.gather(*(appender(i) for i in range(appenders)))
    elapsed = time.perf_counter() - start
    batches = log.batches - batches_before
    print(
        f"appends: {appenders} appenders, {elapsed:.1f}s: {len(latencies) / elapsed:,.0f} appends/s;"
        f" {batches} INSERTs of {len(latencies) / max(batches, 1):.0f} on average; latency {percentiles(latencies)}"
    )


async def preload(client: ClickHouseClient, rows: int) -> None:
    per_conv = max(rows // PRELOAD_CONVS, 1)
    year_ms = 365 * 86_400_000
    columns = (
        f"concat('p:', toString(intDiv(number, {per_conv}))), number % {per_conv} + 1, number + 1,"
        " concat('u', toString(number % 97)), concat('c', toString(number)), 'text', {body},"
        f" toInt64(1700000000000 + (number % {per_conv}) * intDiv({year_ms}, {per_conv})), toUInt32({{version}}), '',"
        " toInt64(0), '', number + 1, toUInt64(0), toUInt64(0), toUInt64({version})"
    )
    first = columns.format(body="concat('{\"text\":\"message ', toString(number), ' with a few words\"}')", version=1)
    step = -(-rows // PRELOAD_INSERTS)
    for offset in range(0, rows, step):
        await client.query(
            f"INSERT INTO messages ({MESSAGE_COLUMNS})"
            f" SELECT {first} FROM numbers({offset}, {min(step, rows - offset)})"
        )
    edited = columns.format(body='\'{"text":"edited"}\'', version=2)
    await client.query(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT {edited} FROM numbers(0, {rows}) WHERE number % 10 = 3"
    )


async def timed(queries: int, read: Callable[[str], Awaitable[None]]) -> list[float]:
    samples = []
    for i in range(queries):
        conv = f"p:{(i * 37) % PRELOAD_CONVS}"
        start = time.perf_counter()
        await read(conv)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def bench_ranges(log: ClickHouseMessageLog, client: ClickHouseClient, preload_rows: int, queries: int) -> None:
    start = time.perf_counter()
    await preload(client, preload_rows)
    print(f"preload: {preload_rows:,} messages in {PRELOAD_CONVS} conversations in {time.perf_counter() - start:.1f}s")
    per_conv = max(preload_rows // PRELOAD_CONVS, 1)
    older = (per_conv // 2, per_conv // 2 + PAGE + 1)

    async def newest(conv: str) -> None:
        page = await log.range(conv, after=0, before=MAX_SEQ, limit=PAGE, newest=True)
        assert len(page) == min(PAGE, per_conv)

    async def older_page(conv: str) -> None:
        await log.range(conv, after=older[0], before=older[1], limit=PAGE, newest=False)

    async def newest_final(conv: str) -> None:
        await client.query(
            f"SELECT {MESSAGE_COLUMNS} FROM messages FINAL WHERE conv = '{conv}'"
            f" ORDER BY seq DESC LIMIT {PAGE} FORMAT JSONEachRow"
        )

    for name, read in (("newest page", newest), ("older page", older_page), ("newest page, FINAL", newest_final)):
        print(f"range {name:20} ({queries} queries): {percentiles(await timed(queries, read))}")


async def main(url: str, appenders: int, seconds: float, preload_rows: int, queries: int) -> None:
    parts = urlsplit(url)
    database = f"flare_bench_{uuid.uuid4().hex}"
    admin = connect(url)
    await admin.query(f"CREATE DATABASE {database}")
    bench_url = urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))
    client = connect(bench_url)
    try:
        log = await ClickHouseMessageLog.open(ClickHouseConfig(url=bench_url))
        try:
            print(f"server: {(await client.query('SELECT version()')).decode().strip()}")
            await bench_appends(log, appenders, seconds)
            if preload_rows:
                await bench_ranges(log, client, preload_rows, queries)
        finally:
            await log.close()
    finally:
        await client.close()
        await admin.query(f"DROP DATABASE IF EXISTS {database}")
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_url = os.environ.get("FLARE_TEST_CLICKHOUSE_URL", "clickhouse://127.0.0.1:18123/default")
    parser.add_argument("--url", default=default_url)
    parser.add_argument("--appenders", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--preload", type=int, default=2_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    uvloop.run(main(args.url, args.appenders, args.seconds, args.preload, args.queries))
