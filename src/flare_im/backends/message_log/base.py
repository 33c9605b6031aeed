"""The message log port: every conversation's ordered events, by per-conversation seq."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from flare_im.protocol.frames import Message


@dataclass(frozen=True, slots=True)
class ConvHead:
    conv: str
    max_seq: int
    version: int  # conversation-list version of the last append
    last: Message | None


class MessageLog(Protocol):
    def append(self, message: Message, version: int) -> Awaitable[None]:
        """Queue ``message`` at once (appends are applied in call order) and return an awaitable that
        completes when it is durably stored and is the head of its conversation (max seq, last message,
        ``version``). The caller assigns seqs; appending a seq that already exists in the conversation
        fails (the awaitable raises) and stores nothing."""
        ...

    async def max_seq(self, conv: str) -> int:
        """The largest stored seq of ``conv``, 0 if none. Seeds the sequencer."""
        ...

    async def heads(self, convs: Sequence[str]) -> dict[str, ConvHead]:
        """Heads of the given conversations; conversations with no message are absent."""
        ...

    async def range(self, conv: str, *, after: int, before: int, limit: int, newest: bool) -> list[Message]:
        """Messages with ``after < seq < before`` in ascending seq: the ``limit`` newest of them if
        ``newest``, else the ``limit`` oldest."""
        ...

    async def find_by_client_id(self, sender: str, cmid: str) -> Message | None:
        """The message ``sender`` stored with client message id ``cmid`` (the idempotency key), if any."""
        ...

    async def recent_client_ids(self, since_ms: int, limit: int) -> list[tuple[str, str]]:
        """``(sender, cmid)`` of the messages whose id was generated at or after ``since_ms`` (ids are
        time-ordered snowflakes), newest first, at most ``limit`` (warms the idempotency filters after a
        restart)."""
        ...

    async def max_version(self) -> int:
        """The largest version stored (seeds the version clock)."""
        ...
