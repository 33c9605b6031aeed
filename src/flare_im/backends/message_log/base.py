"""The message log port: every conversation's ordered events, by per-conversation seq."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from flare_im.backends.message_log.changes import react
from flare_im.protocol.frames import Message


@dataclass(frozen=True, slots=True)
class ConvHead:
    conv: str
    max_seq: int
    version: int  # conversation-list version of the last append
    last: Message | None


GONE_STATES = ("recalled", "deleted")  # a message in one of these states has no content any more


@dataclass(frozen=True, slots=True)
class Change:
    """What an operation event does to its target message (DESIGN.md §2: the store applies it)."""

    target: int  # seq of the target message in the event's conversation
    version: int  # the target's version afterwards: +1 for edit/recall/delete, unchanged for reactions
    state: str = ""  # "recalled" | "deleted": the content is gone (see MessageLog.apply)
    body: dict[str, Any] | None = None  # edit: the new body (the previous one becomes a revision)
    edited_at: int = 0
    reaction: tuple[str, str, bool] | None = None  # (emoji, user, added?)


@dataclass(frozen=True, slots=True)
class Revision:
    """An earlier version of an edited message (edit history)."""

    version: int
    body: dict[str, Any]
    ts: int  # when this version was written (the message's ts for version 1, else its edit time)


class SeqTaken(Exception):
    """Another event is stored at this seq of the conversation (appends never overwrite)."""


class VersionConflict(Exception):
    """A content change was based on a version that is no longer the target's current one."""

    def __init__(self, current: Message) -> None:
        super().__init__(f"message {current.conv}#{current.seq} is at version {current.version}")
        self.current = current


def changed(target: Message, change: Change) -> Message:
    """``target`` after ``change`` (what every adapter stores: the observable effect of ``apply``)."""
    if change.state:
        return msgspec.structs.replace(
            target, body={}, state=change.state, version=change.version, reactions={}, edited_at=0
        )
    if change.body is not None:
        return msgspec.structs.replace(target, body=change.body, version=change.version, edited_at=change.edited_at)
    if change.reaction is not None:
        return msgspec.structs.replace(target, reactions=react(target.reactions, *change.reaction))
    return target


class MessageLog(Protocol):
    """Bodies read back (messages, heads, revisions) obey the body rule of ``flare_im.protocol.values``: one
    stored before it, or by another writer, is read back with its values made to obey it
    (``decode_stored_body``), never as an error, so no stored row can stop a pull, a sync or a push."""

    def append(self, message: Message, version: int) -> Awaitable[None]:
        """Queue ``message`` at once (appends are applied in call order) and return an awaitable that
        completes when it is durably stored and is the head of its conversation (max seq, last message,
        ``version``). The caller assigns seqs; appending another event at a seq that already exists in
        the conversation fails (the awaitable raises) and stores nothing. A store that a worker replays
        batches into may accept an exact replay of a stored event as already done (ClickHouse does; SQLite
        refuses it like any other)."""
        ...

    def apply(self, event: Message, change: Change, version: int) -> Awaitable[None]:
        """Append the operation ``event`` (like ``append``) and apply ``change`` to its target, atomically.

        Content changes (``state`` or ``body``) require ``change.version`` == the target's version + 1,
        otherwise the awaitable raises VersionConflict (with the target as stored) and nothing is written;
        a missing target raises LookupError. A recall/delete leaves a marker: the target's body becomes {},
        its edited_at 0, its reactions and revisions are dropped, the bodies of earlier edit events of it are reduced to
        their references, and quote snapshots of it in replies lose their text and take the state."""
        ...

    async def get(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        """The stored events among ``seqs`` of ``conv`` in their current state, ascending by seq."""
        ...

    async def revisions(self, conv: str, seq: int) -> list[Revision]:
        """Earlier versions of message ``seq`` (edit history), oldest first; [] after a recall."""
        ...

    async def max_seq(self, conv: str) -> int:
        """The largest stored seq of ``conv``, 0 if none. Seeds the sequencer."""
        ...

    async def heads(self, convs: Sequence[str]) -> dict[str, ConvHead]:
        """Heads of the given conversations; conversations with no message are absent."""
        ...

    async def range(self, conv: str, *, after: int, before: int, limit: int, newest: bool) -> list[Message]:
        """Messages with ``after < seq < before`` in ascending seq, in their current state: the ``limit``
        newest of them if ``newest``, else the ``limit`` oldest."""
        ...

    async def find_by_client_id(self, sender: str, cmid: str, *, since_ms: int) -> Message | None:
        """The message ``sender`` stored with client message id ``cmid`` (the idempotency key), if its id was
        generated at or after ``since_ms``. Callers look within the idempotency window (protocol §7: after it, a
        retry may be stored anew), which lets an adapter index the key by time (SQLite does)."""
        ...

    async def recent_client_ids(self, since_ms: int, limit: int) -> list[tuple[str, str]]:
        """``(sender, cmid)`` of the messages whose id was generated at or after ``since_ms`` (ids are
        time-ordered snowflakes), newest first, at most ``limit`` (warms the idempotency filters after a
        restart)."""
        ...

    async def max_version(self) -> int:
        """The largest version stored (seeds the version clock)."""
        ...
