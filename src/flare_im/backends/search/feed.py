"""What the SQLite search index is told of the message log's writes: a MessageLog that passes every call on
and, for each append and apply, hands the event's ``msg_id`` to the index (``written``) at once.

The index reads the row itself once it is committed (an apply's event commits with its change to the
target), so it never indexes what did not commit and always indexes the current state. Only wraps the log
when search is on; with search off the send path does not see this class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from flare_im.backends.message_log.base import Change, ConvHead, MessageLog, Revision
from flare_im.protocol.frames import Message


class FeedingLog:
    def __init__(self, log: MessageLog, written: Callable[[int], None]) -> None:
        self._log = log
        self._written = written

    def append(self, message: Message, version: int) -> Awaitable[None]:
        done = self._log.append(message, version)
        self._written(int(message.msg_id))
        return done

    def apply(self, event: Message, change: Change, version: int) -> Awaitable[None]:
        done = self._log.apply(event, change, version)
        self._written(int(event.msg_id))
        return done

    async def get(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        return await self._log.get(conv, seqs)

    async def revisions(self, conv: str, seq: int) -> list[Revision]:
        return await self._log.revisions(conv, seq)

    async def max_seq(self, conv: str) -> int:
        return await self._log.max_seq(conv)

    async def heads(self, convs: Sequence[str]) -> dict[str, ConvHead]:
        return await self._log.heads(convs)

    async def range(self, conv: str, *, after: int, before: int, limit: int, newest: bool) -> list[Message]:
        return await self._log.range(conv, after=after, before=before, limit=limit, newest=newest)

    async def find_by_client_id(self, sender: str, cmid: str, *, since_ms: int) -> Message | None:
        return await self._log.find_by_client_id(sender, cmid, since_ms=since_ms)

    async def recent_client_ids(self, since_ms: int, limit: int) -> list[tuple[str, str]]:
        return await self._log.recent_client_ids(since_ms, limit)

    async def max_version(self) -> int:
        return await self._log.max_version()
