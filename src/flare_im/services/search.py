"""Message search (U9): what a user may read, by the text in it, newest first, with highlighted snippets.

The permission rules live here, not in the indexes: a user searches the conversations it is a member of
now (not those it left), in each only what its history shows (seq above the join seq and the cleared
history), minus the messages it deleted for itself. An index (backends/search) applies those scopes and
keeps itself in step with edits, recalls and deletes.

Tiers: ``indexes`` are searched together and their pages merged newest first, a message found in two kept
once (the first index wins). Today there is one: it covers the cold archive too (archived messages are read
through the archive reader in their current state, backends/search/archived.py), so callers see one result
shape, one order and one cursor whichever tier a message is in.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

from flare_im.backends.relational.base import MembershipStore
from flare_im.backends.search.base import SearchHit, SearchIndex, SearchQuery, SearchScope, fold
from flare_im.protocol.errors import invalid
from flare_im.protocol.frames import Message
from flare_im.services.conversations import ConversationService

MAX_QUERY_CHARS = 200
MAX_LIMIT = 100
SNIPPET_CHARS = 120  # characters of text around the first match
SNIPPET_LEAD = 30  # of which at most this many before it
ELLIPSIS = "…"
# What separates terms, spelled out: ``str.split()``, JSON Schema (ECMA-262) and the API's validator disagree on
# what ``\s`` is (U+001C-001F, U+0085, U+FEFF), and the document must say exactly which queries hold a term.
SEPARATORS = "\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
QUERY_PATTERN = f"[^{SEPARATORS}]"  # a query holds at least one character that is not a separator
_SPLIT = re.compile(f"[{SEPARATORS}]+")
# A msg_id below 9 * 10**18 (ids stay below it for centuries): what a cursor is; the document says it as a pattern.
CURSOR_PATTERN = "^(?:[1-9][0-9]{0,17}|[1-8][0-9]{18})$"
CURSOR_RE = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True, slots=True)
class Found:
    message: Message
    snippet: str  # an excerpt of the searchable text, newlines as spaces, "…" where it was cut
    highlights: list[tuple[int, int]]  # [start, end) of each match in ``snippet``, in Unicode code points


@dataclass(frozen=True, slots=True)
class SearchPage:
    items: list[Found]
    next: str | None  # the cursor of the next page; None on the last


class SearchService:
    def __init__(
        self, *, conversations: ConversationService, memberships: MembershipStore, indexes: Sequence[SearchIndex]
    ) -> None:
        self._conversations = conversations
        self._memberships = memberships
        self._indexes = list(indexes)

    async def search(
        self,
        uid: str,
        q: str,
        *,
        conv: str | None = None,
        sender: str | None = None,
        kind: str | None = None,
        since: int | None = None,
        until: int | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> SearchPage:
        """One page of ``uid``'s messages matching ``q`` (every whitespace-separated term, case-folded),
        newest first. ``conv`` limits it to one conversation (403/404 as for its history); ``cursor`` is the
        ``next`` of the previous page. 422 for a query without terms, too long, or a bad cursor."""
        terms = _terms(q)
        if not 1 <= limit <= MAX_LIMIT:
            raise invalid(f"limit must be 1..{MAX_LIMIT}")
        before = _cursor(cursor)
        scopes = await self._scopes(uid, conv)
        if since is not None and until is not None and since >= until:
            scopes = []  # an empty time range: nothing (after the permission check of conv)
        query = SearchQuery(
            terms=terms,
            scopes=scopes,
            sender=sender,
            kind=kind,
            since=since,
            until=until,
            before=before,
            limit=limit + 1,  # one more tells whether there is a next page
        )
        pages = await asyncio.gather(*(index.search(query) for index in self._indexes))
        hits = _merge(pages)
        more = len(hits) > limit
        hits = hits[:limit]
        items = [Found(h.message, *snippet(h.text, terms)) for h in hits]
        return SearchPage(items=items, next=hits[-1].message.msg_id if more else None)

    async def _scopes(self, uid: str, conv: str | None) -> list[SearchScope]:
        if conv is not None:
            member = await self._conversations.member_for_read(uid, conv)
            members = [member]
        else:
            members = [m for m in await self._memberships.list_user_convs(uid) if not m.left]
        if not members:
            return []
        hidden = await self._memberships.hidden_in(uid, [m.conv for m in members])
        return [SearchScope(m.conv, max(m.join_seq, m.cleared_seq), frozenset(hidden.get(m.conv, {}))) for m in members]


def _terms(q: str) -> tuple[str, ...]:
    if len(q) > MAX_QUERY_CHARS:
        raise invalid(f"q must be at most {MAX_QUERY_CHARS} characters")
    terms = tuple(dict.fromkeys(t for t in _SPLIT.split(q) if t))
    if not terms:
        raise invalid("q must hold at least one term (spaces separate terms)")
    return terms


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if CURSOR_RE.fullmatch(cursor) is None:
        raise invalid("cursor must be the next of a previous page")
    return int(cursor)


def _merge(pages: Sequence[list[SearchHit]]) -> list[SearchHit]:
    if len(pages) == 1:
        return pages[0]
    seen: set[tuple[str, int]] = set()
    out: list[SearchHit] = []
    for hit in sorted((h for page in pages for h in page), key=lambda h: int(h.message.msg_id), reverse=True):
        key = (hit.message.conv, hit.message.seq)
        if key not in seen:
            seen.add(key)
            out.append(hit)
    return out


def snippet(text: str, terms: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """An excerpt of ``text`` around its first match and where the terms are in it."""
    folded = fold(text)
    spans: list[tuple[int, int]] = []
    for term in terms:
        t = fold(term)
        at = folded.find(t)
        while at >= 0:
            spans.append((at, at + len(t)))
            at = folded.find(t, at + 1)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    first = merged[0][0] if merged else 0
    start = max(0, first - SNIPPET_LEAD)
    end = min(len(text), start + SNIPPET_CHARS)
    start = max(0, min(start, end - SNIPPET_CHARS))
    lead = ELLIPSIS if start > 0 else ""
    excerpt = lead + text[start:end].replace("\n", " ") + (ELLIPSIS if end < len(text) else "")
    shift = len(lead) - start
    highlights = [(max(s, start) + shift, min(e, end) + shift) for s, e in merged if s < end and e > start]
    return excerpt, highlights
