"""Message kinds and the shape of their bodies (U4). A body that does not fit its kind is rejected (422)
before anything is stored; fields beyond the listed ones are kept as they are (apps may add their own)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from flare_im.protocol.errors import ErrorCode, FlareError, invalid

SYSTEM = "system"  # written by the server only
MERGED = "merged"  # several forwarded messages in one (written by the server only)
# Operation events: each changes an earlier message (its ``target``) and has its own seq (Y3).
OP_KINDS = frozenset({"recall", "delete", "edit", "react", "unreact"})
RESERVED_KINDS = OP_KINDS | {SYSTEM, MERGED}
SERVER_KEYS = ("forwarded",)  # body keys only the server sets

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Size = Annotated[int, msgspec.Meta(ge=0)]
Pixels = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
DurationMs = Annotated[int, msgspec.Meta(ge=1)]
Mime = Annotated[str, msgspec.Meta(max_length=128)]
Mentions = Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]], msgspec.Meta(max_length=100)]


class _Body(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    mentions: Mentions = []  # user ids, or "all"


class Text(_Body):
    text: Annotated[str, msgspec.Meta(min_length=1)]


class Image(_Body):
    url: Url
    width: Pixels | None = None
    height: Pixels | None = None
    size: Size | None = None
    mime: Mime = ""
    thumb: Url | None = None


class File(_Body):
    url: Url
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    size: Size
    mime: Mime = ""


class Voice(_Body):
    url: Url
    duration_ms: DurationMs
    size: Size | None = None
    mime: Mime = ""


class Video(_Body):
    url: Url
    duration_ms: DurationMs
    width: Pixels | None = None
    height: Pixels | None = None
    size: Size | None = None
    mime: Mime = ""
    thumb: Url | None = None


class Location(_Body):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lng: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    name: Annotated[str, msgspec.Meta(max_length=256)] = ""
    address: Annotated[str, msgspec.Meta(max_length=512)] = ""


class Custom(_Body):
    """App-defined: any JSON object under ``data``."""

    data: dict[str, Any]


KINDS: dict[str, type[_Body]] = {
    "text": Text,
    "image": Image,
    "file": File,
    "voice": Voice,
    "video": Video,
    "location": Location,
    "custom": Custom,
}
_encode = msgspec.json.Encoder().encode


def is_content(kind: str) -> bool:
    """A message with content (not an operation event nor a system notice): it can be quoted,
    forwarded, recalled, reacted to."""
    return kind in KINDS or kind == MERGED


def snippet(kind: str, body: dict[str, Any], limit: int = 100) -> str:
    """A short text of a message for a quote: the start of a text, else a placeholder."""
    text = body.get("text")
    if kind == "text" and isinstance(text, str):
        return text if len(text) <= limit else text[: limit - 1] + "…"
    name = body.get("name")
    return f"[{kind}: {name}]" if isinstance(name, str) and name else f"[{kind}]"


def check_size(body: dict[str, Any], max_bytes: int) -> None:
    if len(_encode(body)) > max_bytes:
        raise FlareError(ErrorCode.TOO_LARGE, f"message body exceeds {max_bytes} bytes")


def validate_body(kind: str, body: dict[str, Any], max_bytes: int) -> None:
    """Raise FlareError 422 when ``body`` does not fit ``kind``, 413 when it is too large."""
    if kind in RESERVED_KINDS:
        raise invalid(f"kind {kind!r} is reserved for the server")
    for key in SERVER_KEYS:
        if key in body:
            raise invalid(f"body.{key} is set by the server")
    if kind == "text" and len(body) == 1:
        # The common case, checked without conversion: a short plain text is certainly within the limit
        # (JSON spends at most 6 bytes on a character).
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise invalid("a text message needs body.text, a non-empty string")
        if 6 * len(text) + 16 <= max_bytes:
            return
    else:
        shape = KINDS.get(kind)
        if shape is None:
            raise invalid(f"unknown message kind {kind!r} (one of: {', '.join(KINDS)})")
        try:
            msgspec.convert(body, shape)
        except msgspec.ValidationError as exc:
            raise invalid(f"invalid {kind} body: {exc}") from None
    check_size(body, max_bytes)
