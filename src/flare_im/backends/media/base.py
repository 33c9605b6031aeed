"""The media metadata store (services/media.py): one row per uploaded file, and one per message that references
it (``media_refs``: the conversation and seq where it was sent, which is what lets a member download it).

Contract (both adapters, tests/contract/test_media_store_contract.py):

- ``insert`` adds a new row (a media id already there raises ``KeyError``).
- ``update`` replaces a row's fields only if its state is still ``expect``: a compare-and-set that makes the
  state transitions (uploading -> ready -> deleted) happen once even when two requests race; returns whether it
  applied.
- ``usage`` is the bytes a user holds (states uploading and ready: an upload in progress counts with its
  declared size, so parallel uploads cannot overrun a quota).
- ``add_ref`` is idempotent on (media id, conv, seq); ``drop_refs(conv, seq)`` removes the references of one
  message and returns the media ids that no message references any more, in one transaction (so two recalls
  racing on two messages of one media cannot both see one reference left).
- ``stale`` lists rows in a state last updated before a time (uploads abandoned, rows to collect), oldest first.
- ``delete`` removes the row and its references; idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any, Protocol

UPLOADING, READY, DELETED = "uploading", "ready", "deleted"
STATES = (UPLOADING, READY, DELETED)
# Moderation verdicts ("": no hook configured)
PENDING, ALLOWED, BLOCKED = "pending", "allowed", "blocked"


@dataclass(frozen=True, slots=True)
class Media:
    media_id: str
    owner: str
    kind: str  # image | file | voice | video
    state: str
    name: str  # the file name the uploader gave ("" for none)
    mime: str  # sniffed from the content
    size: int  # bytes; while uploading in parts: the declared size
    created_at: int  # epoch ms
    updated_at: int
    upload_id: str = ""  # a multipart upload in progress
    parts: int = 0  # its number of parts
    width: int = 0
    height: int = 0
    duration_ms: int = 0
    thumb_mime: str = ""  # "" when there is no thumbnail
    thumb_size: int = 0
    thumb_width: int = 0
    thumb_height: int = 0
    blurhash: str = ""
    moderation: str = ""

    @property
    def key(self) -> str:
        return f"media/{self.media_id}/orig"

    @property
    def thumb_key(self) -> str:
        return f"media/{self.media_id}/thumb"


COLUMNS = tuple(f.name for f in fields(Media))
COLS = ", ".join(COLUMNS)


def media_values(media: Media) -> tuple[Any, ...]:
    return astuple(media)


def media_of(row: Sequence[Any]) -> Media:
    return Media(*row)


@dataclass(frozen=True, slots=True)
class MediaRef:
    media_id: str
    conv: str
    seq: int
    sender: str


class MediaStore(Protocol):
    async def insert(self, media: Media) -> None: ...

    async def get(self, media_id: str) -> Media | None: ...

    async def update(self, media: Media, *, expect: str) -> bool:
        """Write ``media`` if the stored row's state is ``expect``; whether it did."""
        ...

    async def usage(self, owner: str) -> int: ...

    async def add_ref(self, ref: MediaRef) -> None: ...

    async def refs(self, media_id: str) -> list[MediaRef]: ...

    async def drop_refs(self, conv: str, seq: int) -> list[str]:
        """Remove the references of message (conv, seq); the media ids no message references any more."""
        ...

    async def stale(self, state: str, before_ms: int, limit: int) -> list[Media]: ...

    async def delete(self, media_id: str) -> None: ...

    async def close(self) -> None: ...
