"""Which search index a node opens (``search_url``, DESIGN.md §5), and the search service over it.

The index is chosen by its own URL, not by whether the node runs distributed:

- empty (the default): follows the message store: with SQLite, an FTS5 index in ``data_dir/search.db``; with
  a ``clickhouse://``/``chdb://`` store, that ClickHouse database;
- ``sqlite:///path``: the FTS5 index in that file (not the message store's own file: the index has its own
  writer). It follows a SQLite message store (backends/search/sqlite.py);
- ``clickhouse://host:port/db`` or ``chdb:///dir``: a ClickHouse database holding the store's ``messages``
  table (the store itself, or a replica of it);
- ``off``: no search (``GET /v1/search`` answers 503) and nothing on the send path. Switching it on again
  indexes what was written meanwhile, at start, in the background.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.relational.base import MembershipStore
from flare_im.backends.search.base import ArchivedMessages, SearchIndex
from flare_im.backends.sqlite_db import OpenSqlite, parse_sqlite_url
from flare_im.config import Settings
from flare_im.observability.metrics import Source
from flare_im.observability.sources import search_source
from flare_im.services.conversations import ConversationService
from flare_im.services.search import SearchService

OFF = "off"
_CLICKHOUSE = ("clickhouse://", "chdb://")
Closer = Callable[[], Awaitable[None]]


def search_backend_url(settings: Settings) -> str:
    """The URL of the index ``settings`` ask for ('off' for none); ValueError if it cannot work."""
    url = settings.search_url.strip()
    store = settings.effective_message_store_url
    if url.lower() == OFF:
        return OFF
    if not url:
        if store.startswith("sqlite://"):
            return f"sqlite:///{Path(settings.data_dir) / 'search.db'}"
        return store
    if url.startswith("sqlite://"):
        if not store.startswith("sqlite://"):
            raise ValueError(f"search_url {url!r}: an SQLite index follows a SQLite message store, not {store!r}")
        if parse_sqlite_url(url) in (":memory:", parse_sqlite_url(store)):
            raise ValueError(f"search_url {url!r}: the index needs a file of its own (not the message store's)")
        return url
    if url.startswith(_CLICKHOUSE):
        if not store.startswith(_CLICKHOUSE):
            raise ValueError(f"search_url {url!r}: a ClickHouse index reads a ClickHouse message store, not {store!r}")
        return url
    raise ValueError(f"unsupported search_url {url!r} (empty, off, sqlite://, clickhouse://, chdb://)")


@dataclass(slots=True)
class SearchNode:
    index: SearchIndex
    written: Callable[[int], None] | None = None  # the SQLite follower's feed

    def feeding(self, log: MessageLog) -> MessageLog:
        """``log`` telling the index of its writes, where the index needs that."""
        if self.written is None:
            return log
        from flare_im.backends.search.feed import FeedingLog

        return FeedingLog(log, self.written)

    def start(self) -> Closer:
        """Start what runs in the background (after the databases started); returns what stops and closes
        it (before the databases close)."""
        from flare_im.backends.search.sqlite import SqliteSearchIndex

        if isinstance(self.index, SqliteSearchIndex):
            self.index.start()
        return self.index.close

    def metrics(self) -> Source | None:
        """The embedded follower's lag (the other indexes are fed by the store worker, which has its own)."""
        from flare_im.backends.search.sqlite import SqliteSearchIndex

        return search_source(self.index) if isinstance(self.index, SqliteSearchIndex) else None

    def service(self, conversations: ConversationService, memberships: MembershipStore) -> SearchService:
        return SearchService(conversations=conversations, memberships=memberships, indexes=[self.index])


def archived_view(store: MessageLog) -> ArchivedMessages | None:
    """``store`` if it reads the cold tier too (archive/reader.py), else None. The reader module is imported
    only where something was archived (it needs pyarrow), so a store that is not one costs no import here."""
    reader = sys.modules.get("flare_im.archive.reader")
    if reader is None or not isinstance(store, reader.ArchivedMessageLog):
        return None
    return cast(ArchivedMessages, store)


async def open_search(
    settings: Settings, sqlite: OpenSqlite, archive: ArchivedMessages | None = None
) -> SearchNode | None:
    """The index ``search_url`` names (None when off), searching the archived messages through ``archive``
    too when there is one. Call it after the message log was opened and before the SQLite databases start
    (the SQLite index creates its tables on the writer connection)."""
    url = search_backend_url(settings)
    if url == OFF:
        return None
    if url.startswith("sqlite://"):
        from flare_im.backends.search.sqlite import INDEX_PAGE_SIZE, SqliteSearchIndex

        index = SqliteSearchIndex(sqlite(url, page_size=INDEX_PAGE_SIZE), sqlite(settings.effective_message_store_url))
        if archive is not None:
            index.attach_archive(archive)
        return SearchNode(index, index.written)
    from flare_im.backends.search.clickhouse import ClickHouseSearchIndex

    return SearchNode(await ClickHouseSearchIndex.open(url, archive=archive))


def search_service(
    search: SearchNode | None, conversations: ConversationService, memberships: MembershipStore
) -> SearchService | None:
    return search.service(conversations, memberships) if search is not None else None
