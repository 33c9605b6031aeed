"""The object storage port: named byte objects (media originals, thumbnails) in a flat key space.

``ObjectStore`` is what every adapter does; ``Multipart`` (uploads in numbered parts, completed into one
object) is a separate capability, and so is ``Presigner`` (URLs a client uses without the server in between:
S3's presigned GET and part PUT). The local directory has no presigner: the API serves its objects itself under
an HMAC-signed URL (services/media.py).

Keys are made by the server (``media/<id>/orig``): ASCII letters, digits and ``/._-``, no empty segment, no
``..``; an adapter refuses any other key with ``ValueError`` (a key is never a way out of its root).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

CHUNK = 64 * 1024  # bytes per chunk an adapter yields when it reads
MIN_PART = 5 * 2**20  # S3's smallest part but the last; both adapters refuse a smaller one at completion
MAX_PARTS = 10_000  # S3's most parts per upload
_KEY = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*\Z")


class ObjectNotFound(LookupError):
    """No object under that key (or no upload with that id)."""


class PartTooSmall(ValueError):
    """A part other than the last is smaller than ``MIN_PART``: the upload cannot be completed this way."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")) or len(key) > 512:
        raise ValueError(f"bad object key {key!r}")
    return key


class ObjectStore(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        """Store the bytes of ``chunks`` under ``key``, replacing what was there; returns the size.

        Atomic: a reader sees the previous object or the whole new one, never a part. If ``chunks`` raises,
        nothing is stored and the exception propagates. Memory used is bounded (a part at most), whatever the
        size."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size and type, or None when there is none."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``start`` .. ``end`` (exclusive; None: to the end) of the object, in chunks. Raises
        ObjectNotFound on the first iteration when there is no object. The caller checks the range against
        ``head``: a range past the end yields what exists."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object. Idempotent: deleting a missing key is not an error."""
        ...

    async def close(self) -> None: ...


class Multipart(Protocol):
    """Uploads in numbered parts (1 .. MAX_PARTS), uploaded in any order and again (the last one counts), then
    completed into one object: what lets a client resume a large upload after a broken connection."""

    async def create_upload(self, key: str, *, content_type: str) -> str:
        """A new upload for ``key``; returns its id. Nothing is visible under ``key`` until completion."""
        ...

    async def put_part(self, key: str, upload_id: str, number: int, chunks: AsyncIterable[bytes]) -> str:
        """Store part ``number``; returns its etag (needed at completion). ObjectNotFound: no such upload."""
        ...

    async def complete_upload(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> int:
        """Join ``parts`` ((number, etag), ascending numbers) into the object ``key``; returns its size.
        PartTooSmall when a part but the last is under MIN_PART; ObjectNotFound for an unknown upload; ValueError
        when an etag does not match its part. Completing makes the upload id unknown."""
        ...

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Drop the upload and its parts. Idempotent."""
        ...


@runtime_checkable
class Presigner(Protocol):
    """URLs a client uses directly against the storage, valid ``ttl_s`` seconds."""

    async def presign_get(self, key: str, ttl_s: int, *, filename: str = "") -> str: ...

    async def presign_part(self, key: str, upload_id: str, number: int, ttl_s: int) -> str: ...


class Storage(ObjectStore, Multipart, Protocol):
    """What the media service needs: objects and multipart uploads (both adapters have both)."""


async def read_all(store: ObjectStore, key: str) -> bytes:
    """The whole object (for small ones: thumbnails, tests)."""
    return b"".join([chunk async for chunk in store.read(key)])


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def open_object_store(url: str, default_root: str) -> Storage:
    """The adapter ``url`` names: empty or ``file:///path`` a local directory (empty: ``default_root``),
    ``s3://...`` S3 or an S3-compatible server (backends/objects/s3.py)."""
    if not url or url.startswith("file://"):
        from flare_im.backends.objects.local import LocalConfig, LocalObjectStore

        root = url[len("file://") :] if url else default_root
        if not root:
            raise ValueError(f"object_store_url {url!r}: expected file:///path")
        return LocalObjectStore(LocalConfig(root=root))
    if url.startswith("s3://"):
        from flare_im.backends.objects.s3 import S3ObjectStore, s3_config_from_url

        return await S3ObjectStore.open(s3_config_from_url(url))
    raise ValueError(f"unsupported object_store_url {url!r} (file:///path, s3://bucket?endpoint=...)")
