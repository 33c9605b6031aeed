"""The search port (U9): a user's messages by the text in them, newest first.

An index is bound to one message store: the SQLite adapter follows the store's writes into an FTS5 index
of its own (backends/search/sqlite.py); the ClickHouse adapter reads the latest version of each row of the
store's own ``messages`` table. Either way an edit is found by its new text and not its old one, and a
recalled or deleted message is found by neither, as soon as the history shows it (ClickHouse: once the
store worker has written it); new text is found once indexed (``flush``).

What is searchable: the *searchable text* of a content message (``searchable_text``): its body's top-level
string fields ``text``, ``title``, ``name`` and ``address``. Operation events, system notices, recalled and
deleted messages have none. A query is one or more terms (split on whitespace); a message matches when its
searchable text contains every term, compared case-folded, as a substring (no word boundaries, so Chinese
and Japanese need no spaces).

The permission rules (membership, join seq, cleared history, messages deleted for the reader) are the
caller's: it passes the reader's scopes, and an index returns nothing outside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from flare_im.protocol.frames import Message

# Body fields whose text is searched, in the order they are joined.
TEXT_FIELDS = ("text", "title", "name", "address")
# Kinds without searchable text whatever their body holds: operation events carry an edit's new text (the
# target is what is found) and system notices are the server's.
UNSEARCHED_KINDS = ("recall", "delete", "edit", "react", "unreact", "system")


@dataclass(frozen=True, slots=True)
class SearchScope:
    """A conversation the reader may search, and what of it: seqs above ``floor``, minus ``hidden``."""

    conv: str
    floor: int = 0  # max(join seq, cleared seq): the reader sees seq > floor
    hidden: frozenset[int] = frozenset()  # seqs the reader deleted for itself


@dataclass(frozen=True, slots=True)
class SearchQuery:
    terms: tuple[str, ...]  # non-empty terms without whitespace, as the user typed them
    scopes: Sequence[SearchScope]
    sender: str | None = None
    kind: str | None = None
    since: int | None = None  # ts >= since (epoch ms)
    until: int | None = None  # ts < until
    before: int | None = None  # msg_id < before (the cursor of the previous page)
    limit: int = 20


@dataclass(frozen=True, slots=True)
class SearchHit:
    message: Message  # in its current state
    text: str  # its searchable text (what the terms were found in)


class SearchIndex(Protocol):
    async def search(self, query: SearchQuery) -> list[SearchHit]:
        """The messages that match ``query`` (every term in the searchable text of their current version,
        case-folded; in one of the scopes, above its floor and not hidden; sender, kind, ts and msg_id
        within the bounds given), newest first (descending ``msg_id``), at most ``limit``. A message written
        to the store before the call is found if it matches (SQLite: at once; ClickHouse: once written)."""
        ...

    async def flush(self) -> None:
        """Return once every write the store acknowledged before the call is searchable (an index that
        follows the store asynchronously catches up; one that reads the store itself returns at once)."""
        ...

    async def close(self) -> None: ...


class ArchivedMessages(Protocol):
    """The cold tier as an index reads it (archive/reader.py's ArchivedMessageLog): messages in their current
    state whichever tier holds them, and the archived parts' rows (an index made after an archive run reads
    them once)."""

    async def get(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        """The messages ``seqs`` of ``conv`` that exist, current state: a hot copy wins over the archived row."""
        ...

    async def archived(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        """The messages ``seqs`` of ``conv`` as archived (no hot copy looked up: the caller knows there is none)."""
        ...

    async def part_keys(self) -> list[str]: ...

    async def part_rows(self, key: str) -> list[tuple[Any, ...]]:
        """Every row of the part (archive/format.py's COLUMNS order), as archived."""
        ...


def fold(text: str) -> str:
    """``text`` lower-cased one character at a time, so positions in it are positions in ``text``."""
    out = text.lower()
    if len(out) == len(text):
        return out
    return "".join(c if len(low := c.lower()) != 1 else low for c in text)


def searchable_text(kind: str, state: str, body: dict[str, Any]) -> str:
    """The text a message is found by ('' if none). The SQLite adapter computes the same in SQL."""
    if state or kind in UNSEARCHED_KINDS:
        return ""
    parts = [v for f in TEXT_FIELDS if isinstance(v := body.get(f), str)]
    return "".join("\n" + p for p in parts).lstrip("\n")


def matches(text: str, terms: Sequence[str]) -> bool:
    folded = fold(text)
    return all(fold(t) in folded for t in terms)
