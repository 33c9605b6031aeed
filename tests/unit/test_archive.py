"""The cold tier (archive/): archived rows read back as the same pages, operations on them still apply, an
interrupted run finishes on the next one, and a damaged file is found by verify and never served."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from tests.contract.test_object_store_contract import s3_url, wipe_bucket

from flare_im.archive import archiver
from flare_im.archive import format as fmt
from flare_im.archive.format import Manifest
from flare_im.archive.reader import ArchiveCache, ArchivedMessageLog, load_catalog
from flare_im.backends.message_log.base import Change, VersionConflict
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.objects.base import ObjectStore, open_object_store
from flare_im.backends.objects.local import LocalConfig, LocalObjectStore
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.ids import snowflake_floor
from flare_im.protocol.frames import Message

JAN = int(datetime(2025, 1, 10, tzinfo=UTC).timestamp() * 1000)
NOW = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
HOUR = 3600_000
CONVS = ("g:team", "d:alice:bob")


def _msg(conv: str, seq: int, ts: int, kind: str = "text", body: dict[str, object] | None = None) -> Message:
    return Message(
        conv=conv,
        seq=seq,
        msg_id=str(snowflake_floor(ts) + seq + 4096 * (CONVS.index(conv) if conv in CONVS else 2)),
        sender="alice" if seq % 2 else "bob",
        cmid=f"{conv}-{seq}",
        kind=kind,
        body=body if body is not None else {"text": f"message {seq} of {conv}"},
        ts=ts,
    )


@contextlib.asynccontextmanager
async def _log(
    tmp_path: Path, *, archived: bool, store: ObjectStore | None = None
) -> AsyncIterator[SqliteMessageLog | ArchivedMessageLog]:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    hot = SqliteMessageLog(db)
    store = store or LocalObjectStore(LocalConfig(root=str(tmp_path / "media")))
    log = (
        ArchivedMessageLog.on_sqlite(hot, db, load_catalog(db), ArchiveCache(store, max_groups=4)) if archived else hot
    )
    db.start()
    try:
        yield log
    finally:
        await db.close()


async def _fill(log: SqliteMessageLog | ArchivedMessageLog) -> dict[str, int]:
    """~3 months of old messages (every 5 h from Jan 10) then 20 recent ones, with operations on old ones."""
    tops: dict[str, int] = {}
    version = 0
    for conv in CONVS:
        seq = 0
        for i in range(500):
            seq += 1
            version += 1
            await log.append(_msg(conv, seq, JAN + i * 5 * HOUR), version)
        ops = [
            ("edit", 5, Change(target=5, version=2, body={"text": "edited"}, edited_at=JAN + 2000 * HOUR)),
            ("react", 6, Change(target=6, version=1, reaction=("👍", "bob", True))),
            ("recall", 8, Change(target=8, version=2, state="recalled")),
        ]
        for kind, target, change in ops:
            seq += 1
            version += 1
            event = _msg(conv, seq, JAN + 2000 * HOUR + seq, kind, {"target": target})
            await log.apply(event, change, version)
        for i in range(20):
            seq += 1
            version += 1
            await log.append(_msg(conv, seq, NOW - 60_000 + i), version)
        tops[conv] = seq
    return tops


async def _pages(log: SqliteMessageLog | ArchivedMessageLog, tops: dict[str, int]) -> list[bytes]:
    enc = msgspec.json.encode
    out = []
    for conv, top in tops.items():
        for limit in (1, 7, 50, 200, 1000):
            after = 0
            while after < top:  # forward, oldest first
                page = await log.range(conv, after=after, before=2**63 - 1, limit=limit, newest=False)
                out.append(enc(page))
                after = page[-1].seq
            before = top + 1
            while before > 1:  # backward, newest first
                page = await log.range(conv, after=0, before=before, limit=limit, newest=True)
                out.append(enc(page))
                before = page[0].seq
        for after, before in ((0, 3), (90, 400), (170, 181), (495, 520), (3, 9)):
            for newest in (False, True):
                out.append(enc(await log.range(conv, after=after, before=before, limit=30, newest=newest)))
        out.append(enc(await log.get(conv, [1, 5, 6, 8, 177, 178, top, top + 5])))
        out.append(enc(await log.revisions(conv, 5)))
    heads = await log.heads(list(CONVS))
    out.append(enc(sorted((c, h.max_seq, h.version, h.last) for c, h in heads.items())))
    return out


def _count(tmp_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / "flare.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])


async def _archive(tmp_path: Path, store: ObjectStore | None = None) -> archiver.RunReport:
    conn = archiver.open_catalog(str(tmp_path / "flare.db"))
    store = store or LocalObjectStore(LocalConfig(root=str(tmp_path / "media")))
    try:
        return await archiver.run(conn, store, older_than_s=86400, now=lambda: NOW / 1000)
    finally:
        conn.close()


@pytest.mark.parametrize("row_group", [4096, 16])  # one row group per part, and many (partly decoded pages)
async def test_every_page_is_the_same_bytes_after_archiving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row_group: int
) -> None:
    monkeypatch.setattr(fmt, "ROW_GROUP", row_group)
    async with _log(tmp_path, archived=False) as log:
        tops = await _fill(log)
        before = await _pages(log, tops)
    rows_before = _count(tmp_path)

    report = await _archive(tmp_path)

    # Jan, Feb, Mar (+ Apr: the operation events) of both conversations left SQLite; the recent 20 stayed.
    assert report.rows == 2 * 503
    assert report.parts == 2 * 4
    assert _count(tmp_path) == rows_before - report.rows == 40
    async with _log(tmp_path, archived=True) as log:
        assert await _pages(log, tops) == before
    assert await _archive(tmp_path) == archiver.RunReport()  # nothing more to do


async def test_operations_on_archived_messages_apply(tmp_path: Path) -> None:
    async with _log(tmp_path, archived=False) as log:
        tops = await _fill(log)
    await _archive(tmp_path)
    conv = CONVS[0]
    async with _log(tmp_path, archived=True) as log:
        assert isinstance(log, ArchivedMessageLog)
        top = tops[conv]
        with pytest.raises(VersionConflict):  # checked against the archived state (version 2 after its edit)
            await log.apply(
                _msg(conv, top + 1, NOW, "recall", {"target": 5}), Change(target=5, version=2, state="recalled"), 10**6
            )
        await log.apply(
            _msg(conv, top + 1, NOW, "recall", {"target": 5}), Change(target=5, version=3, state="recalled"), 10**6
        )
        await log.apply(
            _msg(conv, top + 2, NOW, "react", {"target": 100}),
            Change(target=100, version=1, reaction=("🔥", "carol", True)),
            10**6 + 1,
        )
        await log.apply(
            _msg(conv, top + 3, NOW, "react", {"target": 100}),
            Change(target=100, version=1, reaction=("👀", "bob", True)),
            10**6 + 2,
        )
        page = await log.range(conv, after=0, before=200, limit=150, newest=True)
        by_seq = {m.seq: m for m in page}
        assert [m.seq for m in page] == list(range(50, 200))
        assert by_seq[100].reactions == {"🔥": ["carol"], "👀": ["bob"]}
        assert by_seq[99] == (await log.get(conv, [99]))[0]
        assert by_seq[99].reactions == {}
        [recalled] = await log.get(conv, [5])
        assert (recalled.state, recalled.body, recalled.version) == ("recalled", {}, 3)
        assert (await log.range(conv, after=0, before=10, limit=10, newest=False))[4] == recalled
        assert await log.revisions(conv, 5) == []
        events = await log.range(conv, after=top, before=top + 10, limit=10, newest=False)
        assert [e.kind for e in events] == ["recall", "react", "react"]
    async with _log(tmp_path, archived=True) as log:  # and after a restart
        [recalled] = await log.get(conv, [5])
        assert recalled.state == "recalled"


async def test_an_interrupted_run_finishes_on_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _log(tmp_path, archived=False) as log:
        tops = await _fill(log)
        before = await _pages(log, tops)
    rows = _count(tmp_path)
    commit = archiver._commit

    def crash(conn: sqlite3.Connection, m: Manifest, now_ms: int) -> None:
        raise KeyboardInterrupt  # killed after the upload, before the rows left SQLite

    monkeypatch.setattr(archiver, "_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        await _archive(tmp_path)
    assert _count(tmp_path) == rows
    assert any((tmp_path / "media" / "objects" / "archive").rglob("*.parquet"))
    monkeypatch.setattr(archiver, "_commit", commit)
    report = await _archive(tmp_path)
    assert (report.resumed, report.parts, _count(tmp_path)) == (1, 8, 40)
    async with _log(tmp_path, archived=True) as log:
        assert await _pages(log, tops) == before


async def test_verify_finds_a_damaged_file_and_reads_refuse_it(tmp_path: Path) -> None:
    async with _log(tmp_path, archived=False) as log:
        await _fill(log)
    await _archive(tmp_path)
    conn = archiver.open_catalog(str(tmp_path / "flare.db"))
    store = LocalObjectStore(LocalConfig(root=str(tmp_path / "media")))
    try:
        assert await archiver.verify(conn, store) == []
        part = archiver.catalog(conn)[0]
        path = tmp_path / "media" / "objects" / part.key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        [(failed, reason)] = await archiver.verify(conn, store)
        assert failed == part
        assert "checksum" in reason
    finally:
        conn.close()
    async with _log(tmp_path, archived=True) as log:
        with pytest.raises(RuntimeError, match="checksum"):
            await log.get(part.conv, [part.lo])


async def test_on_s3(tmp_path: Path) -> None:
    """The same through the S3 adapter (s3rver): parts uploaded, read back and served."""
    store = await open_object_store(s3_url(f"a-{uuid.uuid4().hex[:20]}", "flare"), "")
    try:
        async with _log(tmp_path, archived=False) as log:
            tops = await _fill(log)
            before = await _pages(log, tops)
        report = await _archive(tmp_path, store)
        assert report.parts == 8
        assert _count(tmp_path) == 40
        async with _log(tmp_path, archived=True, store=store) as log:
            assert await _pages(log, tops) == before
        conn = archiver.open_catalog(str(tmp_path / "flare.db"))
        try:
            assert await archiver.verify(conn, store) == []
        finally:
            conn.close()
    finally:
        await wipe_bucket(store)
        await store.close()


async def test_a_recall_of_an_archived_message_strips_it_from_archived_replies(tmp_path: Path) -> None:
    conv = "g:quotes"
    feb = JAN + 30 * 24 * HOUR
    quote = {"seq": 1, "msg_id": "0", "sender": "alice", "kind": "text", "text": "the secret"}
    async with _log(tmp_path, archived=False) as log:
        await log.append(_msg(conv, 1, JAN, body={"text": "the secret"}), 1)
        edit = _msg(conv, 2, JAN + 1, "edit", {"target": 1, "version": 2, "body": {"text": "the secret, edited"}})
        await log.apply(edit, Change(target=1, version=2, body={"text": "the secret, edited"}, edited_at=JAN + 1), 2)
        for seq in range(3, 40):  # a month of other messages: their row groups cannot hold a reference
            await log.append(_msg(conv, seq, feb + seq), seq)
        await log.append(_msg(conv, 40, feb + 40, body={"text": "indeed", "reply_to": quote}), 40)
        await log.append(_msg(conv, 41, NOW), 41)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(fmt, "ROW_GROUP", 8)
    try:
        assert (await _archive(tmp_path)).parts == 2
    finally:
        monkeypatch.undo()
    async with _log(tmp_path, archived=True) as log:
        assert (await log.get(conv, [40]))[0].body["reply_to"]["text"] == "the secret"
        recall = _msg(conv, 42, NOW + 1, "recall", {"target": 1})
        await log.apply(recall, Change(target=1, version=3, state="recalled"), 42)
        gone, edit_event, reply = await log.get(conv, [1, 2, 40])
        assert (gone.state, gone.body) == ("recalled", {})
        assert edit_event.body == {"target": 1, "version": 2}
        assert reply.body == {
            "text": "indeed",
            "reply_to": {**{k: quote[k] for k in ("seq", "msg_id", "sender", "kind")}, "state": "recalled"},
        }
        page = await log.range(conv, after=0, before=50, limit=50, newest=False)
        assert "the secret" not in msgspec.json.encode(page).decode()
    with contextlib.closing(sqlite3.connect(tmp_path / "flare.db")) as conn:  # only the three came back
        assert [r[0] for r in conn.execute("SELECT seq FROM messages WHERE conv = ? ORDER BY seq", (conv,))] == [
            1,
            2,
            40,
            41,
            42,
        ]
