"""Wire protocol v1 frames: msgspec Structs in two tagged unions (client -> server, server -> client).

The tag field is ``type``. Every client request carries ``id`` (a client-chosen integer) that the server
echoes in its reply. docs/protocol.md documents each frame with an example; keep them in step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

PROTOCOL_VERSION = 1

# Field bounds: a value outside them is rejected with error 422 before any service sees it.
ReqId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
ConvId = Annotated[str, msgspec.Meta(min_length=3, max_length=160)]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Kind = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=500)]


class _Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=False, omit_defaults=True):
    pass


# ---------------------------------------------------------------- client -> server


class Auth(_Frame, tag="auth"):
    id: ReqId
    token: Annotated[str, msgspec.Meta(max_length=4096)]
    device: DeviceId
    platform: Annotated[str, msgspec.Meta(max_length=32)] = ""


class Send(_Frame, tag="send"):
    id: ReqId
    conv: ConvId
    cmid: ClientMsgId  # client message id: the idempotency key together with the sender
    body: dict[str, Any]
    kind: Kind = "text"


class Delivered(_Frame, tag="delivered"):
    id: ReqId
    conv: ConvId
    seq: Seq


class Read(_Frame, tag="read"):
    id: ReqId
    conv: ConvId
    seq: Seq


class Sync(_Frame, tag="sync"):
    """Conversation list changed since ``since`` (a version from an earlier ``convs`` reply; 0 = all).

    ``strategy``: "incremental" (by version), "full" (the whole list; ``since`` is ignored) or "fast" (the
    ``limit`` most recently active conversations first). ``recent`` adds each entry's newest messages."""

    id: ReqId
    since: Seq = 0
    limit: PageLimit = 100
    strategy: Literal["incremental", "full", "fast"] = "incremental"
    recent: Annotated[int, msgspec.Meta(ge=0, le=50)] = 0


class Pull(_Frame, tag="pull"):
    """Messages of one conversation: ``after`` (exclusive, ascending) or ``before`` (exclusive, newest first
    page, returned ascending). With neither, the newest page."""

    id: ReqId
    conv: ConvId
    after: Seq | None = None
    before: Seq | None = None
    limit: PageLimit = 50


class Ping(_Frame, tag="ping"):
    id: ReqId


class Readers(_Frame, tag="readers"):
    """Who has read message ``seq`` of ``conv`` (any member may ask)."""

    id: ReqId
    conv: ConvId
    seq: Seq


class UpdateSettings(_Frame, tag="settings"):
    """Change this user's settings of ``conv``; omitted fields stay as they are."""

    id: ReqId
    conv: ConvId
    pinned: bool | None = None
    muted: bool | None = None
    hidden: bool | None = None
    draft: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    clear_to: Seq | None = None  # clear history for this user up to this seq (never moves back)


class PresenceSub(_Frame, tag="presence"):
    """Watch these users' presence (replaces the connection's previous list; [] stops watching)."""

    id: ReqId
    users: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]], msgspec.Meta(max_length=1000)]


class Typing(_Frame, tag="typing"):
    """The user is typing in ``conv``: forwarded to the other members' online devices, never stored."""

    id: ReqId
    conv: ConvId


OpName = Literal["recall", "delete", "edit", "react", "unreact", "delete_for_me"]
Emoji = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class Op(_Frame, tag="op"):
    """An operation on message ``target`` of ``conv`` (Y3). Every op except ``delete_for_me`` becomes an
    event with its own seq in the conversation log. ``opid`` makes a retried op apply once."""

    id: ReqId
    conv: ConvId
    op: OpName
    target: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    opid: ClientMsgId
    body: dict[str, Any] | None = None  # edit: the new body
    base_version: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None  # edit: the version it is based on
    emoji: Emoji | None = None  # react / unreact


class Forward(_Frame, tag="forward"):
    """Copy messages ``seqs`` of ``conv`` into ``to``: one is copied as it is, several become one
    ``merged`` message. ``cmid`` is the new message's client id (idempotency key)."""

    id: ReqId
    conv: ConvId
    seqs: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]], msgspec.Meta(min_length=1, max_length=100)]
    to: ConvId
    cmid: ClientMsgId
    title: Annotated[str, msgspec.Meta(max_length=256)] = ""


ClientFrame = (
    Auth | Send | Delivered | Read | Sync | Pull | Ping | Typing | Readers | PresenceSub | UpdateSettings | Op | Forward
)


# ---------------------------------------------------------------- server -> client


class Message(msgspec.Struct, omit_defaults=True):
    """A message as stored in the conversation log; pushed in ``msg`` and listed in ``messages``."""

    conv: str
    seq: int
    msg_id: str  # 64-bit snowflake as a decimal string (exact in JavaScript)
    sender: str
    cmid: str
    kind: str
    body: dict[str, Any]
    ts: int  # server time, epoch milliseconds
    # Current state, after the operations on it so far (op events carry the same changes):
    version: int = 1  # +1 per edit, recall or delete for everyone
    state: str = ""  # "" | "recalled" | "deleted" (content gone for everyone) | "hidden" (deleted for me)
    edited_at: int = 0  # epoch ms of the latest edit
    reactions: dict[str, list[str]] = {}  # emoji -> users who reacted, in reaction order


class ConvSummary(msgspec.Struct, omit_defaults=True):
    conv: str
    kind: str  # "direct" | "group"
    version: int  # the conversation-list version at which this entry last changed
    max_seq: int
    read_seq: int
    unread: int
    member_count: int
    unread_mentions: int = 0  # unread messages that mention this user (or everyone)
    name: str = ""
    avatar: str = ""
    peer: str = ""  # direct conversations: the other user
    role: str = ""  # groups: owner | admin | member
    join_seq: int = 0
    left: bool = False  # the user left or was removed: no more messages, history no longer readable
    pinned: bool = False
    muted: bool = False
    hidden: bool = False
    draft: str = ""
    cleared_seq: int = 0  # history cleared for this user up to this seq
    last: Message | None = None
    recent: list[Message] = []  # the newest messages, ascending, when the sync asked for ``recent``
    hidden_seqs: list[int] = []  # messages this user deleted for itself, changed since ``since``


class AuthOk(_Frame, tag="auth_ok"):
    id: int
    user: str
    device: str
    session: str
    server_ts: int
    heartbeat_s: float
    protocol: int = PROTOCOL_VERSION


class Ack(_Frame, tag="ack"):
    id: int
    conv: str
    seq: int
    msg_id: str
    ts: int
    duplicate: bool = False  # True when this answers a retry of an already-stored message (or op)
    target: int = 0  # an op: the seq of the message it changed
    version: int = 0  # an op: that message's version afterwards
    body: dict[str, Any] | None = None  # the body as stored, when the content filter masked what was sent


class Ok(_Frame, tag="ok"):
    id: int


class Msg(_Frame, tag="msg"):
    conv: str
    seq: int
    msg_id: str
    sender: str
    cmid: str
    kind: str
    body: dict[str, Any]
    ts: int
    version: int = 1
    state: str = ""
    edited_at: int = 0
    reactions: dict[str, list[str]] = {}


class Receipt(_Frame, tag="receipt"):
    conv: str
    user: str
    kind: str  # "read" | "delivered"
    seq: int
    device: str = ""


class Convs(_Frame, tag="convs"):
    id: int
    items: list[ConvSummary]
    version: int  # pass as ``since`` next time
    more: bool = False


class Messages(_Frame, tag="messages"):
    id: int
    conv: str
    items: list[Message]
    max_seq: int
    min_seq: int  # the oldest seq this user may read (join seq + 1)
    more: bool = False  # more messages exist in the requested direction


class Pong(_Frame, tag="pong"):
    id: int
    ts: int


class Error(_Frame, tag="error"):
    code: int
    message: str
    retryable: bool = False
    id: int | None = None
    detail: dict[str, Any] | None = None  # machine-readable context, e.g. the current version on a conflict


class Hidden(_Frame, tag="hidden"):
    """Messages the user deleted for itself (reply to ``delete_for_me``, pushed to its other devices)."""

    conv: str
    seqs: list[int]
    version: int
    id: int | None = None


class Kick(_Frame, tag="kick"):
    code: int
    reason: str
    reconnect: bool = True
    retry_after_ms: int = 0


class ReadersList(_Frame, tag="readers"):
    id: int
    conv: str
    seq: int
    read: list[str]  # members who have read it (the sender and later joiners are not listed)
    unread: list[str]


class PresenceState(msgspec.Struct, omit_defaults=True):
    user: str
    online: bool
    last_seen: int = 0  # epoch ms when the user went offline; 0 while online or when unknown


class PresenceList(_Frame, tag="presence_list"):
    id: int
    items: list[PresenceState]


class Presence(_Frame, tag="presence"):
    user: str
    online: bool
    last_seen: int = 0


class ConvSettings(_Frame, tag="conv_settings"):
    """A user's settings of a conversation, after a change (reply to ``settings``, and pushed to the
    user's other devices)."""

    conv: str
    version: int
    pinned: bool = False
    muted: bool = False
    hidden: bool = False
    draft: str = ""
    cleared_seq: int = 0
    id: int | None = None  # set in the reply to the device that made the change


class TypingNotice(_Frame, tag="typing"):
    conv: str
    user: str
    device: str = ""


class NotifySettingsFrame(_Frame, tag="notify_settings"):
    """The user's notification settings changed (``PATCH /v1/me/notifications``): every device of the user gets
    them, so an app can show the same settings everywhere without asking."""

    mode: str  # all | mentions | none
    mentions_break_mute: bool
    preview: bool
    quiet_start: str  # "HH:MM" or "" (no quiet hours)
    quiet_end: str
    timezone: str
    version: int


class BlockList(_Frame, tag="blocks"):
    """The users this user blocks changed (``PUT``/``DELETE /v1/me/blocks/{user_id}``): every device of the user
    gets the whole list, so each shows the same one without asking."""

    users: list[str]
    version: int


class JoinRequestFrame(_Frame, tag="join_request"):
    """A request to join a group by an invite link that needs approval: pushed to the group's owner and admins when
    it is made (``pending``), and to the requester when it is decided (``approved`` or ``denied``)."""

    group_id: str
    user: str
    state: str  # pending | approved | denied
    created_at: int
    note: str = ""


ServerFrame = (
    AuthOk
    | Ack
    | Ok
    | Msg
    | Receipt
    | Convs
    | Messages
    | Pong
    | Error
    | Kick
    | TypingNotice
    | ReadersList
    | PresenceList
    | Presence
    | ConvSettings
    | Hidden
    | NotifySettingsFrame
    | BlockList
    | JoinRequestFrame
)


def msg_from_message(m: Message) -> Msg:
    """The ``msg`` push of a stored message (same fields, tagged)."""
    return Msg(
        m.conv, m.seq, m.msg_id, m.sender, m.cmid, m.kind, m.body, m.ts, m.version, m.state, m.edited_at, m.reactions
    )


def message_from_msg(m: Msg) -> Message:
    """The message carried by a ``msg`` push."""
    return Message(
        m.conv, m.seq, m.msg_id, m.sender, m.cmid, m.kind, m.body, m.ts, m.version, m.state, m.edited_at, m.reactions
    )
