"""The admin port (issue U8): scoped admin keys, the audit log, bans and deletions, daily activity, broadcasts
and per-node statistics. Its tables are the ``admin`` migration component (SQLite and PostgreSQL), in the same
database as the relational component; ``user_ids`` and ``erase_user`` read and write that component's ``users``
table (the only place this port touches another component's table).

Each group of methods is a small protocol; one adapter implements all of them (``AdminStore``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

READ, MODERATION, FULL = "read", "moderation", "full"
SCOPES = (READ, MODERATION, FULL)  # each includes the ones before it
BANNED, DELETED = "banned", "deleted"


@dataclass(frozen=True, slots=True)
class AdminKey:
    key_id: str
    key_hash: str  # sha256 hex of the whole key; the key itself is shown once, at creation
    scope: str  # read | moderation | full
    note: str
    created_at: int  # epoch ms
    created_by: str  # the key id that created it
    revoked_at: int = 0  # epoch ms; 0 while valid


@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: int  # 0 until stored; then increasing in the order entries were stored
    ts: int  # epoch ms
    key_id: str
    action: str  # "POST /v1/admin/users/{user_id}/ban"
    target: str  # the path parameters, "user_id=alice"
    status: int  # the HTTP status of the reply (403: refused for the key's scope)
    detail: str  # the request body as JSON (bounded), or why it was refused
    ip: str


@dataclass(frozen=True, slots=True)
class Ban:
    uid: str
    kind: str  # banned | deleted (a deleted account is refused for good)
    reason: str
    created_at: int  # epoch ms
    key_id: str


@dataclass(frozen=True, slots=True)
class Broadcast:
    broadcast_id: str
    created_at: int
    key_id: str
    body: str  # the notice's body as JSON
    target: str  # "all" or "list"
    recipients: int  # users planned so far (all: grows while the planner pages through the users)
    delivered: int  # notices appended (a retried chunk counts again only if it appended again)
    state: str  # planning | sending | done


@dataclass(frozen=True, slots=True)
class NodeStats:
    node: str
    at: int  # epoch ms of the sample
    connections: int  # devices connected to the node
    users: int  # distinct users connected to the node
    events: int  # events (messages and operations) the node appended since it started
    events_per_s: float  # over the last sampling interval


class AdminKeyStore(Protocol):
    async def create_key(self, key: AdminKey) -> None:
        """Store a new key; ``KeyError`` if ``key_id`` exists."""
        ...

    async def get_key(self, key_id: str) -> AdminKey | None: ...

    async def keys(self) -> list[AdminKey]:
        """Every key, revoked ones included, oldest first."""
        ...

    async def revoke_key(self, key_id: str, at: int) -> bool:
        """Mark a valid key revoked at ``at``; False when it does not exist or is already revoked."""
        ...


class AuditStore(Protocol):
    async def append_audit(self, entry: AuditEntry) -> int:
        """Store ``entry`` (its entry_id is ignored); returns the id given, greater than every earlier one."""
        ...

    async def audit(
        self, *, since: int, until: int, key_id: str | None, before_id: int, limit: int
    ) -> list[AuditEntry]:
        """Entries with ``since <= ts < until`` (of ``key_id`` when given) and ``entry_id < before_id``, newest
        first, at most ``limit``."""
        ...


class BanStore(Protocol):
    async def put_ban(self, ban: Ban) -> int:
        """Ban (or mark deleted) ``ban.uid``, replacing an earlier ban of it; returns the new revision. A deleted
        account stays deleted: ``put_ban`` of kind banned on it changes nothing."""
        ...

    async def delete_ban(self, uid: str) -> int | None:
        """Lift a ban (never a deletion); returns the new revision, None when ``uid`` was not banned."""
        ...

    async def bans(self) -> list[Ban]:
        """Every ban and deletion."""
        ...

    async def bans_revision(self) -> int:
        """A number that grows with every change of the bans (nodes poll it and reload on change)."""
        ...


class AccountStore(Protocol):
    async def user_ids(self, after: str, limit: int) -> list[str]:
        """Up to ``limit`` user ids greater than ``after``, in order (all users, paged)."""
        ...

    async def erase_user(self, uid: str) -> bool:
        """Erase a user's profile and credentials (name, avatar, username, password) in the users table; the
        id stays taken. False when there is no such user."""
        ...


class ActivityStore(Protocol):
    async def record_active(self, day: str, uids: Sequence[str]) -> None:
        """Record that ``uids`` were active on ``day`` ("YYYY-MM-DD", UTC); idempotent."""
        ...

    async def daily_active(self, first: str, last: str) -> tuple[dict[str, int], int]:
        """Per day in ``first..last`` (inclusive) with activity, the distinct active users; and the distinct
        users active on any of those days."""
        ...


class BroadcastStore(Protocol):
    async def put_broadcast(self, broadcast: Broadcast) -> None: ...

    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None: ...

    async def broadcasts(self, limit: int) -> list[Broadcast]:
        """The newest ``limit`` broadcasts, newest first."""
        ...

    async def broadcast_progress(
        self, broadcast_id: str, *, recipients: int = 0, delivered: int = 0, state: str | None = None
    ) -> None:
        """Add to the counters (atomically: several nodes deliver chunks of one broadcast) and set the state."""
        ...


class NodeStatsStore(Protocol):
    async def put_node_stats(self, stats: NodeStats) -> None:
        """Replace the node's sample."""
        ...

    async def node_stats(self) -> list[NodeStats]: ...


class AdminStore(
    AdminKeyStore, AuditStore, BanStore, AccountStore, ActivityStore, BroadcastStore, NodeStatsStore, Protocol
):
    async def close(self) -> None: ...
