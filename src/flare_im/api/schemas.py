r"""What the REST API's values look like, for the OpenAPI document (docs/protocol.md §11).

* Field types of request bodies and parameters with the limits the server enforces: ids (``flare_im.identity``:
  normalised, then 1-64 of ``a-z 0-9 _ . @ -``), conversation ids, and human-readable text (no control
  characters). These limits are checked by the services, which answer 422 with a message that says why; here
  they are only stated (``json_schema_extra``), so the document and the checks cannot disagree on the message.
* Response models: the success bodies. A route returns a plain dict and FastAPI validates it against its
  model and serialises only the keys the dict has (``response_model_exclude_unset``), so an optional field
  (``keys`` of a push target, ``body`` of a send result) is absent, never ``null``, when it does not apply.

What the patterns do not say: an id is normalised (NFKC, case folding) before it is checked, so the server
also takes ``Alice`` or a full-width ``\\uff21lice`` for ``alice``; the patterns describe the normal form, which
is what a client should send. Text may hold no character of Unicode category C but U+200C/U+200D; the pattern
lists the Cc, Cf and Co ranges (``identity.CONTROL_RANGES``), not the unassigned code points (Cn), which the
server refuses too: they change with each Unicode version, and their 700 ranges make generators crawl.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, Field

from flare_im.identity import CONTROL_RANGES
from flare_im.protocol.values import MAX_DEPTH, MAX_SAFE_INT
from flare_im.services.devices import WEBPUSH_ENDPOINT

# ---------------------------------------------------------------------------- value types

ID_CLASS = "[-.0-9@_a-z]"  # an id in normal form, in code-point order: - . 0-9 @ _ a-z
ID_PATTERN = "^[A-Za-z0-9_.@-]{1,64}$"
# In a path, "." and ".." are not ids: a client's URL library resolves them as dot segments.
PATH_ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9_.@-]{1,64}$"
_ID_ORDER = "-.0123456789@_abcdefghijklmnopqrstuvwxyz"


def _class_above(char: str) -> str:
    """The class of the id characters after ``char`` (runs written as ranges)."""
    return "[" + _ranges(_ID_ORDER[_ID_ORDER.index(char) + 1 :]) + "]"


def _ranges(chars: str) -> str:
    out, i = [], 0
    while i < len(chars):
        j = i
        while j + 1 < len(chars) and ord(chars[j + 1]) == ord(chars[j]) + 1:
            j += 1
        lo, hi = (c.replace(".", "\\.") for c in (chars[i], chars[j]))
        out.append(lo if i == j else f"{lo}{hi}" if j == i + 1 else f"{lo}-{hi}")
        i = j + 1
    return "".join(out)


# A conversation id: g:<gid>, or d:<a>:<b> with a < b in code-point order (the server refuses d:<b>:<a> and
# d:<a>:<a>). The order is spelled with a back-reference: a and b share a prefix, then either a's next
# character is below b's, or a ends there and b goes on. A look-ahead bounds both ids to 64 characters.
CONV_PATTERN = (
    f"^(?:g:{ID_CLASS}{{1,64}}|(?=d:{ID_CLASS}{{1,64}}:{ID_CLASS}{{1,64}}$)d:(?:({ID_CLASS}*)(?:"
    + "|".join(f"{_ranges(c)}{ID_CLASS}*:\\1{_class_above(c)}" for c in _ID_ORDER[:-1])
    + f"){ID_CLASS}*|({ID_CLASS}+):\\2{ID_CLASS}+))$"
)


def _control_class() -> str:
    """``identity.CONTROL_RANGES`` as the inside of a regex class: BMP code points as ``\\uXXXX`` (ECMA and
    Python read it alike), the others as themselves (a JSON Schema regex is read with Unicode code points)."""

    def char(cp: int) -> str:
        return f"\\u{cp:04X}" if cp <= 0xFFFF else chr(cp)

    return "".join(char(lo) if lo == hi else f"{char(lo)}-{char(hi)}" for lo, hi in CONTROL_RANGES)


# Text with no control character: the ranges of Cc, Cf (but U+200C, U+200D) and Co. Unassigned code points
# (Cn) are refused too, but are not listed: they change with each Unicode version, and listing them (700
# ranges) makes the document unusable for tools. NAME_PATTERN: and not only spaces.
_CONTROL = _control_class()
TEXT_PATTERN = f"^[^{_CONTROL}]*$"
NAME_PATTERN = f"^[^{_CONTROL}]*[^\\s{_CONTROL}][^{_CONTROL}]*$"

_ID_DOC = "1-64 characters of a-z 0-9 _ . @ - (normalised: NFKC and case folding, so 'Alice' is 'alice')"


def _id(what: str, pattern: str = ID_PATTERN) -> Any:
    extra: Any = {"pattern": pattern, "minLength": 1, "maxLength": 64}
    return Field(max_length=256, description=f"{what}: {_ID_DOC}", json_schema_extra=extra)


def _path_id(what: str) -> Any:
    extra: Any = {"pattern": PATH_ID_PATTERN, "minLength": 1, "maxLength": 64}
    return Path(max_length=256, description=f"{what}: {_ID_DOC}", json_schema_extra=extra)


_CONV_DOC = "a conversation id: g:<gid>, or d:<a>:<b> with a < b, ids in normal form (protocol.md §1)"
UserId = Annotated[str, _id("a user id")]
Password = Annotated[str, Field(max_length=256, description="8-256 characters", json_schema_extra={"minLength": 8})]
ROLES = ("owner", "admin", "member")
# The kinds a client may send (services/message_kinds.py).
KINDS = ("text", "image", "file", "voice", "video", "location", "custom")
_IDS_DOC = "comma-separated user ids (empty items are skipped), up to 500"
IdList = Annotated[
    str,
    Query(description=_IDS_DOC, pattern=None, json_schema_extra={"pattern": "^,*(?:[A-Za-z0-9_.@-]{1,64}(?:,+|$))*$"}),
]
GroupId = Annotated[str, _id("a group id")]
NewGroupId = Annotated[
    str,
    Field(
        max_length=256,
        description=f"the new group's id: {_ID_DOC}; empty or left out: the server picks one",
        json_schema_extra={"pattern": "^(?:[A-Za-z0-9_.@-]{1,64})?$", "maxLength": 64},
    ),
]
ConvId = Annotated[str, Field(max_length=160, description=_CONV_DOC, json_schema_extra={"pattern": CONV_PATTERN})]
UserPath = Annotated[str, _path_id("a user id")]
GroupPath = Annotated[str, _path_id("a group id")]
DevicePath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="the device of the connection's auth: 1-64 characters",
        json_schema_extra={"pattern": r"^(?!\.\.?$)[^/]{1,64}$"},
    ),
]
ConvPath = Annotated[str, Path(max_length=160, description=_CONV_DOC, json_schema_extra={"pattern": CONV_PATTERN})]


def text(max_length: int, *, default: Any = ..., nonblank: bool = False, what: str = "") -> Any:
    """A human-readable string field: no control characters (``nonblank``: and not only spaces), at most
    ``max_length`` characters."""
    doc = f"{what}; " if what else ""
    pattern = NAME_PATTERN if nonblank else TEXT_PATTERN
    return Field(
        default,
        max_length=max_length,
        description=f"{doc}no control characters (Unicode category C but U+200C, U+200D)",
        json_schema_extra={"pattern": pattern},
    )


# ---------------------------------------------------------------------------- success bodies


def absent(description: str) -> Any:
    """An optional field of a reply: left out (never null) when it does not apply."""
    return Field(default=None, description=f"{description} (left out otherwise)")


class Health(BaseModel):
    status: Literal["ok"]


class Gateways(BaseModel):
    websocket: list[str]
    protocol: int
    encodings: list[str]


class Tokens(BaseModel):
    user_id: str
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds")


class AdminUser(BaseModel):
    user_id: str
    display_name: str
    avatar: str
    created_at: int = Field(description="epoch ms")


class ImportedUsers(BaseModel):
    created: list[str]
    existing: list[str]


class IssuedToken(BaseModel):
    user_id: str
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int


class IssuedTokens(BaseModel):
    tokens: dict[str, str] = Field(description="access token by normalised user id")
    token_type: Literal["Bearer"]
    expires_in: int


class Invite(BaseModel):
    invite_id: str
    token: str = absent("only in the reply that created it")
    max_uses: int
    uses: int
    expires_at: int = Field(description="epoch s")
    created_at: int = Field(description="epoch ms")
    note: str


class Invites(BaseModel):
    items: list[Invite]


class Profile(BaseModel):
    user_id: str
    display_name: str
    avatar: str


class OwnProfile(Profile):
    username: str = Field(description='the login name; "" for a user created by the admin API')
    created_at: int


class Profiles(BaseModel):
    items: list[Profile]


class PushTarget(BaseModel):
    device: str
    provider: Literal["apns", "fcm", "webpush", "webhook"]
    token: str
    app_id: str
    keys: dict[str, str] = absent("webpush only")
    locale: str
    updated_at: int


class PushTargets(BaseModel):
    items: list[PushTarget]


class Rule(BaseModel):
    rule_id: str
    pattern: str
    match: Literal["word", "regex"]
    action: Literal["block", "mask"]
    enabled: bool
    note: str
    created_at: int
    updated_at: int


class Rules(BaseModel):
    items: list[Rule]


class FilterCheck(BaseModel):
    blocked: bool
    text: str | None = Field(description="the text as the rules leave it; null when blocked")


class Group(BaseModel):
    group_id: str
    conv: str
    name: str
    avatar: str
    owner: str
    created_at: int
    member_count: int


class Member(BaseModel):
    user_id: str
    role: Literal["owner", "admin", "member"]
    join_seq: int


class Members(BaseModel):
    items: list[Member]


class Added(BaseModel):
    added: list[str]


class Message(BaseModel):
    """A message as in the WebSocket's ``msg`` (protocol.md §4); fields at their default are left out."""

    conv: str
    seq: int
    msg_id: str
    sender: str
    cmid: str
    kind: str
    body: dict[str, Any]
    ts: int
    version: int = 1
    state: Literal["", "recalled", "deleted", "hidden"] = ""
    edited_at: int = 0
    reactions: dict[str, list[str]] = {}


class ConvEntry(BaseModel):
    """An entry of the conversation list as in ``convs`` (protocol.md §4); fields at their default are left out."""

    conv: str
    kind: Literal["direct", "group"]
    version: int
    max_seq: int
    read_seq: int
    unread: int
    member_count: int
    unread_mentions: int = 0
    name: str = ""
    avatar: str = ""
    peer: str = ""
    role: str = ""
    join_seq: int = 0
    left: bool = False
    pinned: bool = False
    muted: bool = False
    hidden: bool = False
    draft: str = ""
    cleared_seq: int = 0
    last: Message = absent("the newest message")
    recent: list[Message] = []
    hidden_seqs: list[int] = []


class Conversations(BaseModel):
    items: list[ConvEntry]
    version: int
    more: bool


class MessagesPage(BaseModel):
    conv: str
    items: list[Message]
    max_seq: int
    min_seq: int
    more: bool


class SendResult(BaseModel):
    conv: str
    seq: int
    msg_id: str
    ts: int
    duplicate: bool
    body: dict[str, Any] = absent("the body as stored, when the content filter masked part of it")


class OpResult(SendResult):
    target: int = Field(description="the seq of the message the operation applies to")
    version: int = Field(description="the target's version after it")


class Hidden(BaseModel):
    """The reply to ``delete_for_me``: the ``hidden`` frame."""

    conv: str
    seqs: list[int]
    version: int


class Revision(BaseModel):
    version: int
    body: dict[str, Any]
    ts: int


class Revisions(BaseModel):
    message: Message
    revisions: list[Revision]


class Readers(BaseModel):
    conv: str
    seq: int
    read: list[str]
    unread: list[str]
    read_count: int
    unread_count: int


class ConvSettings(BaseModel):
    """``conv_settings`` without ``type`` and ``id``: the fields at their default are left out."""

    conv: str
    version: int
    pinned: bool = False
    muted: bool = False
    hidden: bool = False
    draft: str = ""
    cleared_seq: int = 0


# ---------------------------------------------------------------------------- message bodies

# What a body may hold (protocol/values.py): integers within ±(2**53-1), objects and arrays nested at most
# MAX_DEPTH deep, the body itself counted (``BodyValue`` is recursive: the depth is in its description, as a
# chain of one schema per level makes documentation tools expand it level by level). Then the fields of each
# kind (services/message_kinds.py): a body may hold fields of its own besides them, never ``forwarded`` (set by
# the server).
MAX_SAFE = MAX_SAFE_INT
_BODY_VALUE = {"$ref": "#/components/schemas/BodyValue"}
_INNER_VALUE = _BODY_VALUE
_VALUE_SCHEMA: dict[str, Any] = {
    "title": "BodyValue",
    "description": f"A JSON value of a message body: integers within ±(2^53-1), objects and arrays nested at most"
    f" {MAX_DEPTH} deep counting the body (protocol.md §3, body values).",
    "anyOf": [
        {"type": "string"},
        {"type": "number", "minimum": -MAX_SAFE, "maximum": MAX_SAFE},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": _BODY_VALUE},
        {"type": "object", "additionalProperties": _BODY_VALUE},
    ],
}
_URL = {"type": "string", "minLength": 1, "maxLength": 2048}
_SIZE = {"type": "integer", "minimum": 0, "maximum": MAX_SAFE}
_PIXELS = {"type": ["integer", "null"], "minimum": 1, "maximum": 100_000}
_OPT_SIZE = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SAFE}
_OPT_URL = {"type": ["string", "null"], "minLength": 1, "maxLength": 2048}
_DURATION = {"type": "integer", "minimum": 1, "maximum": MAX_SAFE}
_MIME = {"type": "string", "maxLength": 128}
_KIND_FIELDS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "text": ({"text": {"type": "string", "minLength": 1}}, ["text"]),
    "image": (
        {"url": _URL, "width": _PIXELS, "height": _PIXELS, "size": _OPT_SIZE, "mime": _MIME, "thumb": _OPT_URL},
        ["url"],
    ),
    "file": (
        {"url": _URL, "name": {"type": "string", "minLength": 1, "maxLength": 255}, "size": _SIZE, "mime": _MIME},
        ["url", "name", "size"],
    ),
    "voice": ({"url": _URL, "duration_ms": _DURATION, "size": _OPT_SIZE, "mime": _MIME}, ["url", "duration_ms"]),
    "video": (
        {
            "url": _URL,
            "duration_ms": _DURATION,
            "width": _PIXELS,
            "height": _PIXELS,
            "size": _OPT_SIZE,
            "mime": _MIME,
            "thumb": _OPT_URL,
        },
        ["url", "duration_ms"],
    ),
    "location": (
        {
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "lng": {"type": "number", "minimum": -180, "maximum": 180},
            "name": {"type": "string", "maxLength": 256},
            "address": {"type": "string", "maxLength": 512},
        },
        ["lat", "lng"],
    ),
    "custom": ({"data": {"type": "object", "additionalProperties": _INNER_VALUE}}, ["data"]),
}
_MENTIONS = {
    "type": "array",
    "maxItems": 100,
    "items": {"type": "string", "minLength": 1, "maxLength": 64},
    "description": 'user ids, or "all"',
}

_REPLY_TO = {
    "type": "object",
    "description": "a reply: the quoted message's seq (the server stores a snapshot of it)",
    "properties": {"seq": {"type": "integer", "minimum": 1, "maximum": MAX_SAFE}},
    "required": ["seq"],
    "additionalProperties": _INNER_VALUE,
}


def body_name(kind: str) -> str:
    return f"{kind.capitalize()}Body"


def body_schemas() -> dict[str, Any]:
    """The components of message bodies: ``BodyValue`` and one ``<Kind>Body`` per kind."""
    out: dict[str, Any] = {"BodyValue": _VALUE_SCHEMA}
    for kind, (fields, required) in _KIND_FIELDS.items():
        out[body_name(kind)] = {
            "title": body_name(kind),
            "description": f"The body of a `{kind}` message; fields of the app's own may be added.",
            "type": "object",
            "properties": {**fields, "mentions": _MENTIONS, "reply_to": _REPLY_TO, "forwarded": {"not": {}}},
            "required": required,
            "additionalProperties": _BODY_VALUE,
        }
    return out


def body_ref(kind: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{body_name(kind)}"}


def _send_variant(kind: str) -> dict[str, Any]:
    variant: dict[str, Any] = {"properties": {"kind": {"const": kind}, "body": body_ref(kind)}}
    variant["required"] = ["body"] if kind == "text" else ["kind", "body"]
    return variant


# The body of a send, one variant per kind (a missing kind is text).
SEND_VARIANTS: dict[str, Any] = {"oneOf": [_send_variant(kind) for kind in KINDS]}

_EDIT_BODY = {"allOf": [body_ref("text"), {"properties": {"reply_to": {"not": {}}}}]}
# The body of an operation: edit (a text body: only text messages can be edited), react and unreact (an emoji),
# the others (nothing more; a body given is any body, its numbers within 2**53 as every body's).
_ANY_BODY = {"anyOf": [{"type": "null"}, {"type": "object", "additionalProperties": _BODY_VALUE}]}
OP_VARIANTS: dict[str, Any] = {
    "oneOf": [
        {
            "properties": {"op": {"const": "edit"}, "body": _EDIT_BODY, "base_version": {"type": "integer"}},
            "required": ["op", "body", "base_version"],
        },
        {
            "properties": {
                "op": {"enum": ["react", "unreact"]},
                "emoji": {"type": "string", "minLength": 1, "maxLength": 32},
                "body": _ANY_BODY,
            },
            "required": ["op", "emoji"],
        },
        {
            "properties": {
                "op": {"enum": ["recall", "delete", "delete_for_me"]},
                "body": _ANY_BODY,
            },
            "required": ["op"],
        },
    ]
}

# ---------------------------------------------------------------------------- push targets

_BASE64URL = {"type": "string", "pattern": "^[A-Za-z0-9_-]+=*$", "minLength": 1, "maxLength": 256}
_NO_KEYS = {"type": "null", "description": "Web Push only"}
# The token of each provider (services/devices.py), one variant each.
PUSH_VARIANTS: dict[str, Any] = {
    "oneOf": [
        {
            "properties": {
                "provider": {"const": "apns"},
                "token": {"type": "string", "pattern": "^[0-9A-Fa-f]{64,200}$", "description": "device token, hex"},
                "keys": _NO_KEYS,
            }
        },
        {
            "properties": {
                "provider": {"const": "fcm"},
                "token": {"type": "string", "pattern": "^[-A-Za-z0-9_:.]{20,4096}$", "description": "FCM token"},
                "keys": _NO_KEYS,
            }
        },
        {
            "properties": {
                "provider": {"const": "webhook"},
                "token": {
                    "type": "string",
                    "pattern": "^[!-~]{1,4096}$",
                    "description": "the device's token at its provider: printable ASCII, no spaces",
                },
                "keys": _NO_KEYS,
            }
        },
        {
            "properties": {
                "provider": {"const": "webpush"},
                "token": {
                    "type": "string",
                    "pattern": WEBPUSH_ENDPOINT,
                    "maxLength": 2048,
                    "description": "the subscription's endpoint, an https URL",
                },
                "keys": {
                    "type": "object",
                    "properties": {"p256dh": _BASE64URL, "auth": _BASE64URL},
                    "required": ["p256dh", "auth"],
                    "additionalProperties": False,
                },
            },
            "required": ["keys"],
        },
    ]
}
LOCALE_PATTERN = "^(?:[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*)?$"
