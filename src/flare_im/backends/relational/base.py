"""The relational port: users, tokens, invites, groups, memberships, per-user conversation state, devices' push
targets and content-filter rules.

Small protocols; the embedded (SQLite) and distributed (PostgreSQL) adapters implement all of them.
Every write returns only after it is durable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from flare_im.backends.relational.notifications import NotificationStore


class AlreadyExists(Exception):
    """A unique key (user id, username, group id) is taken."""


@dataclass(frozen=True, slots=True)
class User:
    uid: str
    username: str | None
    display_name: str
    avatar: str
    created_at: int  # epoch ms


@dataclass(frozen=True, slots=True)
class Group:
    gid: str
    name: str
    avatar: str
    owner: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Member:
    """A user's membership of a conversation and its per-user state there."""

    conv: str
    uid: str
    role: str = "member"  # owner | admin | member (direct conversations: member)
    join_seq: int = 0  # the member reads messages with seq > join_seq
    read_seq: int = 0
    delivered_seq: int = 0
    version: int = 0  # conversation-list version of the last change to this row
    left: bool = False
    # The user's own settings for this conversation.
    pinned: bool = False
    muted: bool = False  # no push notifications; messages still count as unread
    hidden: bool = False
    draft: str = ""
    cleared_seq: int = 0  # "clear history for me": this user reads seq > max(join_seq, cleared_seq)


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """A change to a user's conversation settings; None leaves a field as it is."""

    pinned: bool | None = None
    muted: bool | None = None
    hidden: bool | None = None
    draft: str | None = None
    cleared_seq: int | None = None  # only ever moves forward; the read seq follows it


class InviteUnusable(Exception):
    """The invite token is unknown, used up or expired."""


@dataclass(frozen=True, slots=True)
class Invite:
    """An invitation to register (``registration = invite``): ``max_uses`` registrations until ``expires_at``."""

    invite_id: str  # public handle (listing, deleting)
    token_hash: str  # sha256 of the token the invitee presents (the token itself is never stored)
    max_uses: int
    uses: int
    expires_at: int  # epoch seconds
    created_at: int  # epoch ms
    note: str = ""


@dataclass(frozen=True, slots=True)
class IdentityFlag:
    """A stored id or name that breaks the identity rules (flare_im.identity), found by a schema migration."""

    kind: str  # user | group
    subject: str  # the user or group id
    reason: str  # id_collision | id_not_normal | control_chars
    detail: str  # the colliding ids, or the field holding control characters
    flagged_at: int  # epoch ms


class UserStore(Protocol):
    async def create_user(
        self, user: User, password_hash: str | None, *, invite: str | None = None, now: int = 0
    ) -> None:
        """Insert a user; raise AlreadyExists if the uid or the username is taken, also by an id that differs
        only in ASCII case (one stored before ids were normalised). With ``invite`` (a token hash), one use of
        that invite is taken in the same transaction: InviteUnusable if it is unknown, used up, or expired at
        ``now`` (epoch seconds). Either way a refused insert writes nothing (no user, no use taken)."""
        ...

    async def get_user(self, uid: str) -> User | None: ...

    async def get_users(self, uids: Sequence[str]) -> list[User]:
        """The users that exist among ``uids`` (any order)."""
        ...

    async def get_credentials(self, username: str) -> tuple[str, str] | None:
        """``(uid, password_hash)`` of a user that registered with a password."""
        ...

    async def update_profile(self, uid: str, *, display_name: str | None, avatar: str | None) -> None: ...

    async def identity_flags(self) -> list[IdentityFlag]:
        """What the migrations flagged (ids colliding or not in normal form, names with control characters), by
        kind, subject and reason. Rows stay until an operator deletes them (docs/operations.md)."""
        ...


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a refresh token was issued for, as ``take_refresh_token`` found it."""

    uid: str
    expires_at: int  # epoch seconds
    family: str  # the login it descends from (also the ``sid`` of the access tokens issued with it)
    reused: bool  # it had been used before: the whole family was revoked instead of granting anything


@dataclass(frozen=True, slots=True)
class TokenState:
    """What access-token verification needs to know about a user and the token's session."""

    tokens_after: int  # epoch ms: access tokens issued before this are revoked (0: none)
    session_revoked: bool  # the token's session (refresh family) was revoked (logout, reuse)


class TokenStore(Protocol):
    async def put_refresh_token(self, token_hash: str, uid: str, expires_at: int, family: str) -> None:
        """Store a refresh token of ``family``; also forgets ``uid``'s tokens that expired (they are kept until
        then to recognise a reuse)."""
        ...

    async def take_refresh_token(self, token_hash: str) -> RefreshGrant | None:
        """Atomically mark the token used and return its grant: a refresh token is single-use. A token that
        was used already is a reuse (a stolen copy, or the thief's): in the same transaction every token of its
        family is deleted and the family's session recorded as revoked, and the grant says ``reused``. None if
        the token is unknown (never issued, expired and forgotten, or its family was revoked)."""
        ...

    async def revoke_session(self, sid: str, uid: str, until: int) -> None:
        """Revoke a session (logout): delete the refresh tokens of family ``sid`` and record ``sid`` as revoked
        (``token_state`` says so) until ``until`` (epoch seconds; no token of it is valid after). Idempotent."""
        ...

    async def revoke_user_tokens(self, uid: str, after_ms: int) -> None:
        """Revoke every token of ``uid``: delete its refresh tokens and set its ``tokens_after`` to ``after_ms``
        (it never moves back)."""
        ...

    async def token_state(self, uid: str, sid: str) -> TokenState | None:
        """One round trip: ``uid``'s ``tokens_after`` and whether session ``sid`` is revoked ("" for none);
        None if the user does not exist."""
        ...


class InviteStore(Protocol):
    async def create_invite(self, invite: Invite) -> None:
        """Insert an invite (its id and token hash are random: a collision raises AlreadyExists)."""
        ...

    async def get_invite(self, token_hash: str) -> Invite | None: ...

    async def invites(self) -> list[Invite]:
        """Every invite, newest first."""
        ...

    async def delete_invite(self, invite_id: str) -> bool:
        """Forget an invite; True if there was one."""
        ...


class GroupStore(Protocol):
    async def create_group(self, group: Group, members: Sequence[Member]) -> None:
        """Insert the group and its first members in one transaction; AlreadyExists if the gid is taken."""
        ...

    async def get_group(self, gid: str) -> Group | None: ...

    async def get_groups(self, gids: Sequence[str]) -> list[Group]:
        """The groups of ``gids`` that exist, in no particular order (one round trip)."""
        ...

    async def update_group(self, gid: str, *, name: str | None, avatar: str | None) -> None: ...


class MembershipStore(Protocol):
    async def add_members(self, members: Sequence[Member]) -> None:
        """Insert or re-activate memberships. A re-join replaces role, join seq and version; the read seq
        becomes the larger of the stored and the given one (it never moves back)."""
        ...

    async def set_left(self, conv: str, uid: str, version: int) -> None: ...

    async def set_role(self, conv: str, uid: str, role: str, version: int) -> None: ...

    async def get_member(self, conv: str, uid: str) -> Member | None:
        """The membership row, including one that has left (``left`` is True)."""
        ...

    async def list_members(self, conv: str) -> list[Member]:
        """Current (not left) members, in join order."""
        ...

    async def count_members(self, convs: Sequence[str]) -> dict[str, int]:
        """Current members of each of ``convs`` (one round trip; conversations with none are absent)."""
        ...

    async def list_user_convs(self, uid: str) -> list[Member]:
        """Every conversation row of ``uid``, left ones included."""
        ...

    async def list_users_convs(self, uids: Sequence[str]) -> dict[str, list[Member]]:
        """``list_user_convs`` of each of ``uids`` in one round trip (every uid is a key, [] if it has none)."""
        ...

    async def advance_read(self, conv: str, uid: str, seq: int, version: int) -> bool:
        """Set the read seq to ``seq`` if that is larger (never moves back). True if it moved."""
        ...

    def mark_sent(self, conv: str, uid: str, seq: int, version: int, mentions: Sequence[str] = ()) -> Awaitable[None]:
        """``uid`` sent message ``seq``: its read seq moves up to it (never back), and the users it
        ``mentions`` ("*" for everyone) are recorded for their unread-mention counts. Queued at once,
        batched with other writes; the awaitable completes when that is durable."""
        ...

    async def unread_mentions(self, uid: str) -> dict[str, int]:
        """Per conversation of ``uid``: messages by others above its read position that mention it (or
        everyone). Conversations without any are absent."""
        ...

    async def update_settings(self, conv: str, uid: str, change: SettingsChange, version: int) -> Member | None:
        """Apply ``change`` to the user's row (cleared seq and read seq never move back) and set its
        version; returns the updated row, None if there is none."""
        ...

    async def hide_messages(self, conv: str, uid: str, seqs: Sequence[int], version: int) -> None:
        """'Delete for me': hide these seqs of ``conv`` from ``uid`` on all of its devices. Idempotent (a seq
        already hidden keeps its first version). The member row's version becomes ``version`` (the
        conversation list changes), in the same transaction."""
        ...

    async def hidden_messages(self, conv: str, uid: str, *, since: int = 0) -> list[int]:
        """Seqs of ``conv`` that ``uid`` hid at a version > ``since``, ascending."""
        ...

    async def hidden_in(self, uid: str, convs: Sequence[str]) -> dict[str, dict[int, int]]:
        """Every message ``uid`` hid in ``convs``: conv -> {seq: version it was hidden at} (one round trip;
        conversations with none are absent)."""
        ...

    async def advance_delivered(self, conv: str, uid: str, seq: int) -> bool:
        """Set the delivered seq to ``seq`` if that is larger. True if it moved."""
        ...

    async def max_version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PushTarget:
    """Where the notification service reaches one device of a user (N2)."""

    uid: str
    device: str  # the ``device`` of the connection's ``auth``
    provider: str  # apns | fcm | webpush
    token: str  # APNs device token, FCM registration token, or the Web Push endpoint URL
    app_id: str = ""  # APNs topic (bundle id) or FCM project; "" = the server's default
    keys: str = ""  # Web Push only: the subscription's keys as JSON {"p256dh", "auth"}
    locale: str = ""  # for notification templates
    updated_at: int = 0  # epoch ms


class DeviceStore(Protocol):
    async def put_push_target(self, target: PushTarget) -> None:
        """Register or replace the push target of (uid, device). A provider's token names one installation:
        the same (provider, token) registered under another user or device before is removed, so a phone
        that changed hands never gets the previous user's notifications."""
        ...

    async def delete_push_target(self, uid: str, device: str) -> bool:
        """Forget the push target of (uid, device). True if there was one."""
        ...

    async def push_targets(self, uids: Sequence[str]) -> list[PushTarget]:
        """The push targets of every device of ``uids``, by user then device."""
        ...


@dataclass(frozen=True, slots=True)
class FilterRule:
    """A content-filter rule (F3, F5): what to look for in message text, and what to do with a match."""

    rule_id: str
    pattern: str
    match: str  # word: the text contains it, ignoring case | regex: a Python regular expression
    action: str  # block: refuse the message | mask: replace each match with asterisks
    enabled: bool = True
    note: str = ""
    created_at: int = 0  # epoch ms
    updated_at: int = 0


class RuleStore(Protocol):
    async def put_filter_rule(self, rule: FilterRule) -> None:
        """Create or replace the rule ``rule.rule_id``."""
        ...

    async def delete_filter_rule(self, rule_id: str) -> bool: ...

    async def filter_rules(self) -> list[FilterRule]:
        """Every rule, by id."""
        ...

    async def filter_rules_revision(self) -> int:
        """A number that grows with every change to the rules: nodes poll it to know when to reload."""
        ...


class RelationalStore(
    UserStore, TokenStore, InviteStore, GroupStore, MembershipStore, DeviceStore, RuleStore, NotificationStore, Protocol
):
    """One adapter implementing all of them (what the composition root builds)."""
