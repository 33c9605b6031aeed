"""Search over archived messages: what both indexes do with a candidate that lives in the cold tier.

Archiving deletes a message's row from the hot store, not what the index keeps of it: the SQLite index keeps
its FTS entry and records where the message went (``search_archived``: msg_id -> conv, seq), the ClickHouse
archive pass writes the message's searchable text to ``search_archive`` before the rows are deleted. A search
finds candidates there with the same scopes and the same ``msg_id`` cursor as in the hot store, then reads
each through the archive reader (``ArchivedMessages.get``: the hot copy an operation made wins over the
archived row) and keeps it only if its current state still matches: a message recalled or deleted after it
was archived is never found, an edited one only by its new text (the hot index finds that). ClickHouse first
drops the candidates that have a row in ``messages`` (one query: the hot search covers them) and reads the
rest from the archive alone (``ArchivedMessages.archived``), not one ``messages`` query per conversation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from flare_im.backends.search.base import (
    SearchHit,
    SearchQuery,
    SearchScope,
    matches,
    searchable_text,
)
from flare_im.protocol.frames import Message

Read = Callable[[str, Sequence[int]], Awaitable[list[Message]]]  # ArchivedMessages.get or .archived


async def hydrate(read: Read, candidates: Sequence[tuple[str, int]], query: SearchQuery) -> list[SearchHit]:
    """The hits among ``candidates`` ((conv, seq) found by their archived text), read in their current state
    (``read``: the archive's ``get``, or ``archived`` for candidates known to have no hot copy) and checked
    against every condition of ``query``, newest first."""
    seqs: dict[str, list[int]] = {}
    for conv, seq in candidates:
        seqs.setdefault(conv, []).append(seq)
    found = await asyncio.gather(*(read(conv, sorted(s)) for conv, s in seqs.items()))
    scopes = {s.conv: s for s in query.scopes}
    hits = []
    for messages in found:
        for message in messages:
            text = _text_if_found(message, scopes.get(message.conv), query)
            if text:
                hits.append(SearchHit(message=message, text=text))
    hits.sort(key=lambda h: int(h.message.msg_id), reverse=True)
    return hits


def _text_if_found(m: Message, scope: SearchScope | None, query: SearchQuery) -> str:
    """``m``'s searchable text if ``query`` finds it ('' if not): the scope is checked again here, so a
    candidate outside the reader's scopes is never returned whatever the index's own filter did."""
    if scope is None or m.seq <= scope.floor or m.seq in scope.hidden:
        return ""
    if query.before is not None and int(m.msg_id) >= query.before:
        return ""
    if (query.sender is not None and m.sender != query.sender) or (query.kind is not None and m.kind != query.kind):
        return ""
    if (query.since is not None and m.ts < query.since) or (query.until is not None and m.ts >= query.until):
        return ""
    text = searchable_text(m.kind, m.state, m.body)
    return text if text and matches(text, query.terms) else ""
