"""What the ClickHouse message log promises beyond the MessageLog port, on the 18.16 server and on chdb:
replays write nothing twice and complete a write cut short, merges keep every read the same, the schema."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from tests.contract.test_message_log_contract import (
    edit_op,
    gone_op,
    mk,
    quote,
    raised,
    reaction_op,
    snapshot,
)

from flare_im.backends.clickhouse_client import ClickHouseClient, ClickHouseError
from flare_im.backends.clickhouse_client import connect as clickhouse_connect
from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog
from flare_im.backends.message_log.clickhouse_schema import TABLES

T_2023_11 = 1_700_000_000_000
T_2024_02 = 1_707_000_000_000


async def scalar(backend: Any, sql: str) -> str:
    client = clickhouse_connect(backend.url)
    try:
        return (await client.query(f"{sql} FORMAT TabSeparated")).decode().strip()
    finally:
        await client.close()


async def rows_of(backend: Any, table: str) -> int:
    return int(await scalar(backend, f"SELECT count() FROM {table}"))


async def written_twice(backend: Any) -> int:
    """Rows of ``messages`` written more than once (same row version). Merges only ever remove rows, so any
    count above 0 is a write too many."""
    return int(await scalar(backend, "SELECT count() - uniqExact(conv, seq, row_version) FROM messages"))


async def test_an_exact_replay_is_accepted_and_writes_nothing_twice(clickhouse_backend: Any) -> None:
    log: ClickHouseMessageLog = await clickhouse_backend.open()
    m1 = mk("g:one", 1)
    msgs = [m1, mk("g:one", 2, body={"text": "re", "reply_to": quote(m1, "m1")}), mk("g:two", 1), mk("g:one", 3)]
    for i, m in enumerate(msgs):
        await log.append(m, 10 + i)
    before = await snapshot(log, "g:one"), await snapshot(log, "g:two")

    # The store worker replays a whole batch after a crash; here some rows even twice within one batch.
    replay = [*msgs, msgs[0], msgs[3]]
    results = await asyncio.gather(*(log.append(m, 10 + msgs.index(m)) for m in replay), return_exceptions=True)

    assert results == [None] * len(replay)
    assert (await snapshot(log, "g:one"), await snapshot(log, "g:two")) == before
    assert await written_twice(clickhouse_backend) == 0
    assert sorted(await log.recent_client_ids(0, 100)) == sorted((m.sender, m.cmid) for m in msgs)
    # After a restart too (a new adapter knows nothing of the first one).
    again: ClickHouseMessageLog = await clickhouse_backend.open()
    await asyncio.gather(*(again.append(m, 10 + i) for i, m in enumerate(msgs)))
    assert await written_twice(clickhouse_backend) == 0
    assert await again.find_by_client_id(m1.sender, m1.cmid, since_ms=0) == m1


async def test_a_replayed_operation_is_accepted_and_not_applied_again(clickhouse_backend: Any) -> None:
    log: ClickHouseMessageLog = await clickhouse_backend.open()
    m1 = mk("g:one", 1, body={"text": "v1"})
    await log.append(m1, 10)
    edit = edit_op(m1, 2, {"text": "v2"}, version=2, edited_at=T_2023_11 + 5)
    react = reaction_op(m1, 3, "👍", "bob", True, version=2)
    await log.apply(*edit, 11)
    await log.apply(*react, 12)
    before = await snapshot(log, "g:one")
    rows = await rows_of(clickhouse_backend, "messages")

    # Applied again, the edit would conflict (the target is at version 2) and the reaction would move to the end.
    await log.apply(*edit, 11)
    await log.apply(*react, 12)

    assert await snapshot(log, "g:one") == before
    assert await rows_of(clickhouse_backend, "messages") <= rows  # fewer only if a merge ran meanwhile
    assert await written_twice(clickhouse_backend) == 0


class _FailingInserts:
    """A client whose next ``left`` INSERTs into ``table`` fail: a store worker crashing mid-write."""

    def __init__(self, client: ClickHouseClient, table: str) -> None:
        self._client = client
        self._table = table
        self.left = 0  # failures still to inject

    async def query(self, sql: str) -> bytes:
        return await self._client.query(sql)

    async def insert(self, statement: str, data: bytes) -> None:
        if statement.startswith(f"INSERT INTO {self._table} ") and self.left > 0:
            self.left -= 1
            raise ClickHouseError("connection lost (injected)")
        await self._client.insert(statement, data)

    async def close(self) -> None:
        await self._client.close()


@pytest.mark.parametrize("table", ["client_ids", "conv_heads", "message_refs"])
async def test_a_replay_completes_an_append_cut_short(clickhouse_backend: Any, table: str) -> None:
    await clickhouse_backend.close(await clickhouse_backend.open())  # creates the tables
    client = _FailingInserts(clickhouse_connect(clickhouse_backend.url), table)
    log = ClickHouseMessageLog(client, ClickHouseConfig(url=clickhouse_backend.url))
    try:
        m1 = mk("g:one", 1)
        reply = mk("g:one", 2, body={"text": "re", "reply_to": quote(m1, "m1")})
        await log.append(m1, 10)
        client.left = 1

        await raised(log.append(reply, 11))  # the message row was written, a derived row was not

        await log.append(reply, 11)  # the replay writes what was missing
        assert await log.find_by_client_id(reply.sender, reply.cmid, since_ms=0) == reply
        assert (await log.heads(["g:one"]))["g:one"].last == reply
        await log.apply(*gone_op(m1, 3, "recalled", version=2), 12)
        assert (await log.get("g:one", [2]))[0].body["reply_to"]["state"] == "recalled"
        assert await written_twice(clickhouse_backend) == 0  # the replayed reply was not written again
    finally:
        await log.close()


async def test_merges_change_no_read(clickhouse_backend: Any) -> None:
    # Row versions and head rows collapse when ClickHouse merges parts; every read must stay the same. The
    # target is from an earlier month than its operations, so they land in another partition.
    log: ClickHouseMessageLog = await clickhouse_backend.open()
    m1 = mk("g:one", 1, ts=T_2023_11, body={"text": "v1"})
    reply = mk("g:one", 2, ts=T_2023_11 + 1, sender="bob", body={"text": "re", "reply_to": quote(m1, "v1")})
    other = mk("g:one", 3, ts=T_2023_11 + 2)
    await log.append(m1, 100)
    await log.append(reply, 101)
    await log.append(other, 90)  # a smaller version at a larger seq: the head keeps both maxima
    await scalar(clickhouse_backend, "OPTIMIZE TABLE conv_heads FINAL")
    assert (await log.heads(["g:one"]))["g:one"].version == 101
    ops = [
        edit_op(m1, 4, {"text": "v2"}, version=2, edited_at=T_2024_02),
        edit_op(reply, 5, {"text": "re 2", "reply_to": quote(m1, "v1")}, version=2, edited_at=T_2024_02 + 1),
        reaction_op(other, 6, "👍", "bob", True, version=1),
        edit_op(other, 7, {"text": "edited"}, version=2, edited_at=T_2024_02 + 2),
        gone_op(m1, 8, "recalled", version=3),
    ]
    for i, (event, change) in enumerate(ops):
        await log.apply(msgspec.structs.replace(event, ts=T_2024_02 + 10 + i), change, 102 + i)
    before = await snapshot(log, "g:one"), await log.recent_client_ids(0, 100)

    for table in TABLES:
        await scalar(clickhouse_backend, f"OPTIMIZE TABLE {table} FINAL")

    assert (await snapshot(log, "g:one"), await log.recent_client_ids(0, 100)) == before
    assert await rows_of(clickhouse_backend, "messages") == 8  # one row per seq is left
    assert await rows_of(clickhouse_backend, "conv_heads") == 1
    partitions = await scalar(
        clickhouse_backend,
        "SELECT groupUniqArray(partition) FROM system.parts"
        " WHERE database = currentDatabase() AND table = 'messages' AND active",
    )
    assert sorted(partitions.strip("[]").replace("'", "").split(",")) == ["202311", "202402"]
    assert "v1" not in str(before)


async def test_columns_get_codecs_where_the_engine_has_them(clickhouse_backend: Any) -> None:
    await clickhouse_backend.open()
    version = await scalar(clickhouse_backend, "SELECT version()")
    created = await scalar(clickhouse_backend, "SHOW CREATE TABLE messages")
    if version.startswith("18."):
        assert "CODEC" not in created  # 18.16 rejects the clause: its default compression applies
    else:
        assert "`body` String CODEC(ZSTD(3))" in created
        assert "`seq` UInt64 CODEC(Delta(8), ZSTD(1))" in created
    assert "ReplacingMergeTree(row_version)" in created
    assert "PARTITION BY toYYYYMM(toDateTime(intDiv(ts, 1000), \\'UTC\\'))" in created
    assert "ORDER BY (conv, seq)" in created
