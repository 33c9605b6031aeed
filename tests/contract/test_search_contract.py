"""Contract of the SearchIndex port (src/flare_im/backends/search/base.py), for every backend.

Each backend is a message log and the index bound to it: the tests write through the log (append, apply)
and search through the index, since an index follows its store by itself.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from tests.services import require

from flare_im.backends.clickhouse_client import connect as clickhouse_connect
from flare_im.backends.message_log.base import Change, MessageLog
from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.search.base import SearchIndex, SearchQuery, SearchScope
from flare_im.backends.search.clickhouse import ClickHouseSearchIndex
from flare_im.backends.search.feed import FeedingLog
from flare_im.backends.search.sqlite import SqliteSearchIndex
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.protocol.frames import Message

_ids = itertools.count(7_000_000)
_versions = itertools.count(1000)
T0 = 1_700_000_000_000


class Store:
    def __init__(self, log: MessageLog, index: SearchIndex) -> None:
        self.log = log
        self.index = index

    async def send(self, conv: str, seq: int, text: str = "", *, sender: str = "alice", **kw: Any) -> Message:
        body = kw.pop("body", None) or {"text": text}
        m = Message(
            conv=conv,
            seq=seq,
            msg_id=str(next(_ids)),
            sender=sender,
            cmid=f"c{next(_ids)}",
            kind=kw.pop("kind", "text"),
            body=body,
            ts=kw.pop("ts", T0 + seq),
        )
        await self.log.append(m, next(_versions))
        return m

    async def op(self, conv: str, seq: int, kind: str, change: Change, body: dict[str, Any]) -> None:
        event = Message(
            conv=conv,
            seq=seq,
            msg_id=str(next(_ids)),
            sender="alice",
            cmid=f"op{next(_ids)}",
            kind=kind,
            body=body,
            ts=T0 + seq,
        )
        await self.log.apply(event, change, next(_versions))

    async def find(self, *terms: str, scopes: list[SearchScope] | None = None, **kw: Any) -> list[tuple[str, int]]:
        query = SearchQuery(terms=terms, scopes=scopes if scopes is not None else [SearchScope("g:a")], **kw)
        await self.index.flush()
        return [(h.message.conv, h.message.seq) for h in await self.index.search(query)]


async def _statement(server: str, sql: str) -> None:
    client = clickhouse_connect(server)
    try:
        await client.query(sql)
    finally:
        await client.close()


@pytest.fixture(params=["sqlite", "clickhouse", "chdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "t.db")))
        search_db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "search.db")))
        log = SqliteMessageLog(db)
        index = SqliteSearchIndex(search_db, db)
        db.start()
        search_db.start()
        index.start()
        try:
            yield Store(FeedingLog(log, index.written), index)
        finally:
            await index.close()
            await search_db.close()
            await db.close()
        return
    server = None
    if request.param == "clickhouse":
        server = require("clickhouse")
        parts = urlsplit(server)
        url = urlunsplit((parts.scheme, parts.netloc, f"/flare_search_{uuid.uuid4().hex}", "", ""))
        await _statement(server, f"CREATE DATABASE {urlsplit(url).path.strip('/')}")
    else:
        url = f"chdb:///{tmp_path / 'chdb'}"
    ch_log = await ClickHouseMessageLog.open(ClickHouseConfig(url=url))
    ch_index = await ClickHouseSearchIndex.open(url)
    try:
        yield Store(ch_log, ch_index)
    finally:
        await ch_index.close()
        await ch_log.close()
        if server is not None:
            await _statement(server, f"DROP DATABASE IF EXISTS {urlsplit(url).path.strip('/')}")


# ---------------------------------------------------------------- what matches


async def test_english_is_case_folded_and_matches_inside_words(store: Store) -> None:
    await store.send("g:a", 1, "Hello World from Flare")
    await store.send("g:a", 2, "nothing here")
    assert await store.find("hello") == [("g:a", 1)]
    assert await store.find("WORLD") == [("g:a", 1)]
    assert await store.find("ellO") == [("g:a", 1)]  # a substring, not a word
    assert await store.find("goodbye") == []


async def test_chinese_and_japanese_without_spaces_down_to_one_character(store: Store) -> None:
    await store.send("g:a", 1, "我们明天在北京见面吧")
    await store.send("g:a", 2, "東京で会いましょう")
    await store.send("g:a", 3, "南京路")
    assert await store.find("北京见面") == [("g:a", 1)]  # four characters: trigrams
    assert await store.find("北京") == [("g:a", 1)]  # a two-character word
    assert await store.find("京") == [("g:a", 3), ("g:a", 2), ("g:a", 1)]
    assert await store.find("会いま") == [("g:a", 2)]
    assert await store.find("東京") == [("g:a", 2)]
    assert await store.find("上海") == []


async def test_a_doubled_character_is_found_only_where_it_is_doubled(store: Store) -> None:
    await store.send("g:a", 1, "哈 哈 and a b")
    await store.send("g:a", 2, "哈哈哈 aardvark")
    assert await store.find("哈哈") == [("g:a", 2)]
    assert await store.find("aa") == [("g:a", 2)]
    assert await store.find("哈") == [("g:a", 2), ("g:a", 1)]


async def test_other_scripts_fold_case_in_long_and_short_terms(store: Store) -> None:
    await store.send("g:a", 1, "ПРИВЕТ, мир")
    await store.send("g:a", 2, "Ок, до встречи")
    assert await store.find("привет") == [("g:a", 1)]
    assert await store.find("МИР") == [("g:a", 1)]
    assert await store.find("ок") == [("g:a", 2)]


async def test_every_term_must_match(store: Store) -> None:
    await store.send("g:a", 1, "release notes for version two")
    await store.send("g:a", 2, "release party tonight")
    await store.send("g:a", 3, "北京 烤鸭 好吃")
    assert await store.find("release", "notes") == [("g:a", 1)]
    assert await store.find("notes", "tonight") == []
    assert await store.find("release", "tw") == [("g:a", 1)]  # a short term filters a long one's matches
    assert await store.find("烤鸭", "北京") == [("g:a", 3)]  # only short terms


async def test_query_characters_are_literal(store: Store) -> None:
    await store.send("g:a", 1, 'a 100% "quoted" back\\slash under_score')
    await store.send("g:a", 2, "a 1000 unquoted backslash underscore")
    assert await store.find("100%") == [("g:a", 1)]
    assert await store.find('"quoted"') == [("g:a", 1)]
    assert await store.find("k\\s") == [("g:a", 1)]
    assert await store.find("r_s") == [("g:a", 1)]
    assert await store.find("%") == [("g:a", 1)]
    assert await store.find("_") == [("g:a", 1)]


async def test_a_nul_in_the_text_or_the_query_is_a_character_like_any_other(store: Store) -> None:
    await store.send("g:a", 1, "before\x00after 北京\x00上海")
    await store.send("g:a", 2, "before after")
    assert await store.find("after") == [("g:a", 2), ("g:a", 1)]
    assert await store.find("上海") == [("g:a", 1)]
    assert await store.find("e\x00a") == [("g:a", 1)]
    assert await store.find("京\x00上") == [("g:a", 1)]


async def test_only_the_searchable_text_of_content_messages(store: Store) -> None:
    await store.send(
        "g:a", 1, body={"url": "https://x/report.pdf", "name": "Quarterly report.pdf", "size": 1}, kind="file"
    )
    await store.send(
        "g:a", 2, body={"lat": 1.0, "lng": 2.0, "name": "Cafe", "address": "Rue de Rivoli"}, kind="location"
    )
    await store.send("g:a", 3, body={"data": {"text": "hidden app payload"}}, kind="custom")
    await store.send("g:a", 4, body={"text": "plain", "reply_to": {"seq": 1, "text": "quoted secret"}})
    await store.send("g:a", 5, body={"text": "joined the group"}, kind="system")
    assert await store.find("quarterly") == [("g:a", 1)]
    assert await store.find("rivoli") == [("g:a", 2)]
    assert await store.find("payload") == []  # nested, not a searchable field
    assert await store.find("secret") == []  # a quote of another message
    assert await store.find("joined") == []  # system notices
    assert await store.find("text") == []  # JSON keys are not text
    assert await store.find("url") == []


# ---------------------------------------------------------------- edits, recalls, deletes


async def test_an_edit_is_found_by_its_new_text_only(store: Store) -> None:
    await store.send("g:a", 1, "meet at the old harbour")
    await store.op(
        "g:a",
        2,
        "edit",
        Change(target=1, version=2, body={"text": "meet at the new station"}, edited_at=T0 + 5),
        {"target": 1, "version": 2, "body": {"text": "meet at the new station"}},
    )
    assert await store.find("station") == [("g:a", 1)]  # the message, not its edit event
    assert await store.find("harbour") == []
    await store.index.flush()
    [hit] = await store.index.search(SearchQuery(terms=("station",), scopes=[SearchScope("g:a")]))
    assert hit.message.version == 2
    assert hit.message.body == {"text": "meet at the new station"}
    assert hit.text == "meet at the new station"


async def test_recalled_and_deleted_messages_are_not_found(store: Store) -> None:
    await store.send("g:a", 1, "secret plan alpha")
    await store.send("g:a", 2, "secret plan beta")
    await store.send("g:a", 3, "secret plan gamma")
    await store.op("g:a", 4, "recall", Change(target=1, version=2, state="recalled"), {"target": 1, "version": 2})
    await store.op("g:a", 5, "delete", Change(target=2, version=2, state="deleted"), {"target": 2, "version": 2})
    assert await store.find("secret") == [("g:a", 3)]
    assert await store.find("alpha") == []


async def test_reactions_leave_the_message_found(store: Store) -> None:
    await store.send("g:a", 1, "lunch anyone")
    await store.op("g:a", 2, "react", Change(target=1, version=1, reaction=("👍", "bob", True)), {"target": 1})
    await store.index.flush()
    [hit] = await store.index.search(SearchQuery(terms=("lunch",), scopes=[SearchScope("g:a")]))
    assert hit.message.reactions == {"👍": ["bob"]}


# ---------------------------------------------------------------- scopes and filters


async def test_only_the_given_scopes_above_their_floor_and_not_hidden(store: Store) -> None:
    for seq in range(1, 6):
        await store.send("g:a", seq, f"status update {seq}")
    await store.send("g:b", 1, "status update elsewhere")
    await store.send("d:alice:bob", 1, "status update direct")
    assert await store.find("status") == [("g:a", s) for s in range(5, 0, -1)]
    assert await store.find("status", scopes=[SearchScope("g:a", floor=3)]) == [("g:a", 5), ("g:a", 4)]
    assert await store.find("status", scopes=[SearchScope("g:a", hidden=frozenset({2, 4}))]) == [
        ("g:a", 5),
        ("g:a", 3),
        ("g:a", 1),
    ]
    both = await store.find("status", scopes=[SearchScope("g:b"), SearchScope("d:alice:bob")])
    assert sorted(both) == [("d:alice:bob", 1), ("g:b", 1)]
    assert await store.find("status", scopes=[]) == []
    assert await store.find("st", scopes=[SearchScope("g:a", floor=4, hidden=frozenset({5}))]) == []


async def test_newest_first_with_limit_and_cursor(store: Store) -> None:
    sent = [await store.send("g:a", seq, f"page item {seq} 页面") for seq in range(1, 8)]
    for terms in (("item",), ("页面",)):
        await store.index.flush()
        first = await store.index.search(SearchQuery(terms=terms, scopes=[SearchScope("g:a")], limit=3))
        assert [h.message.seq for h in first] == [7, 6, 5]
        cursor = int(first[-1].message.msg_id)
        second = await store.index.search(SearchQuery(terms=terms, scopes=[SearchScope("g:a")], limit=3, before=cursor))
        assert [h.message.seq for h in second] == [4, 3, 2]
    assert [int(m.msg_id) for m in sent] == sorted(int(m.msg_id) for m in sent)


async def test_sender_kind_and_time_filters(store: Store) -> None:
    await store.send("g:a", 1, "budget draft", sender="alice", ts=T0 + 1000)
    await store.send("g:a", 2, "budget final", sender="bob", ts=T0 + 2000)
    await store.send("g:a", 3, body={"url": "https://x/b", "name": "budget.xlsx", "size": 1}, kind="file", ts=T0 + 3000)
    assert await store.find("budget", sender="bob") == [("g:a", 2)]
    assert await store.find("budget", kind="file") == [("g:a", 3)]
    assert await store.find("budget", since=T0 + 2000) == [("g:a", 3), ("g:a", 2)]
    assert await store.find("budget", until=T0 + 2000) == [("g:a", 1)]
    assert await store.find("bu", since=T0 + 1500, until=T0 + 2500) == [("g:a", 2)]


async def test_a_message_is_found_in_its_current_state_with_every_field(store: Store) -> None:
    sent = await store.send("g:a", 1, "round trip ✓ héllo")
    await store.index.flush()
    [hit] = await store.index.search(SearchQuery(terms=("héllo",), scopes=[SearchScope("g:a")]))
    assert hit.message == sent
    assert hit.text == "round trip ✓ héllo"
