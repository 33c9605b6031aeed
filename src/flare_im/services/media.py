"""Media: uploads to the object store, what messages say about them, and who may download them (docs/media.md).

- An upload streams to the object store; only the first bytes are held, to sniff the type. The type a file is
  taken for is its content's (``filetype``), never the client's Content-Type; each kind has a size limit and a
  MIME allow-list, and each user a quota. Images are spooled to a temporary file instead, which Pillow reads for
  the dimensions, thumbnail and blurhash, and from which the GPS position is removed before anything is stored.
- Large files go in parts (``presign`` then ``complete``): each part straight to S3 with a presigned URL, or to
  the API with a signed upload token on the local store.
- A message of kind image/file/voice/video may carry ``media_id`` instead of a URL: ``resolve`` checks that the
  sender uploaded it and that it is complete (and not blocked), and fills in url, size, mime, dimensions and
  thumbnail. Once the message is stored, ``sent`` records the reference (conversation, seq).
- Downloads: the uploader, and the members of a conversation that holds a reference they can read (above their
  join seq and cleared seq), get short-lived signed URLs: S3 presigned GETs, or HMAC-signed URLs of the API on the
  local store (``verify_url``). A recall or delete-for-everyone drops the message's reference (``released``);
  the last one gone, the objects are deleted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import logging
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import filetype  # type: ignore[import-untyped]

from flare_im.backends.media.base import (
    ALLOWED,
    BLOCKED,
    DELETED,
    PENDING,
    READY,
    UPLOADING,
    Media,
    MediaRef,
    MediaStore,
)
from flare_im.backends.objects.base import CHUNK, MAX_PARTS, ObjectNotFound, PartTooSmall, Presigner, Storage
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, forbidden, invalid, not_found
from flare_im.services.media_images import process_image
from flare_im.services.media_probe import HEAD_BYTES as PROBE_HEAD_BYTES
from flare_im.services.media_probe import probe_duration_ms

log = logging.getLogger(__name__)

MEDIA_KINDS = ("image", "file", "voice", "video")
SNIFF_BYTES = 4096  # what is read before the type is decided (filetype needs 261; some containers more)
ORIGINAL, THUMB = "orig", "thumb"
GC_BATCH = 100
FILE_MIME = "application/octet-stream"  # a file whose content matches no known type


@dataclass(frozen=True, slots=True)
class KindLimit:
    max_bytes: int
    types: tuple[str, ...]  # MIME patterns: "image/jpeg", "audio/*", "*"

    def allows(self, mime: str) -> bool:
        return any(fnmatch.fnmatchcase(mime, pattern) for pattern in self.types)


@dataclass(frozen=True, slots=True)
class MediaConfig:
    limits: dict[str, KindLimit]
    quota_bytes: int = 0  # per user; 0: none
    url_ttl_s: int = 300  # signed download URLs
    upload_ttl_s: int = 3600  # presigned part URLs and upload tokens
    part_bytes: int = 8 * 2**20  # the part size a presigned upload is cut into
    gc_after_s: float = 24 * 3600.0  # an upload not completed this long after its last change is collected
    strip_gps: bool = True
    thumb_px: int = 320
    thumb_format: str = "WEBP"
    max_pixels: int = 50_000_000
    spool_dir: str = ""  # temporary files of image uploads ("": the system's)


def parse_types(text: str) -> tuple[str, ...]:
    return tuple(t.strip().lower() for t in text.split(",") if t.strip())


class MediaService:
    def __init__(
        self,
        store: MediaStore,
        objects: Storage,
        config: MediaConfig,
        *,
        url_secret: str,
        can_read: Callable[[str, str, int], Awaitable[bool]],
    ) -> None:
        """``can_read(uid, conv, seq)``: whether the user may read message ``seq`` of ``conv`` (a member, above
        its join seq and cleared seq)."""
        self.store = store
        self.objects = objects
        self.config = config
        self._key = hashlib.sha256(b"flare-media-url:" + url_secret.encode()).digest()
        self._can_read = can_read
        self._presigner = objects if isinstance(objects, Presigner) else None
        self.on_ready: Callable[[Media], None] | None = None  # the moderation hook (services/media_moderation.py)
        # (conv, seq, reason) -> recalled: how a block recalls the messages that sent a media (set by the root)
        self.recall_message: Callable[[str, int, str], Awaitable[bool]] | None = None

    # ------------------------------------------------------------------ upload

    def _limit(self, kind: str) -> KindLimit:
        limit = self.config.limits.get(kind)
        if limit is None:
            raise invalid(f"unknown media kind {kind!r} (one of: {', '.join(MEDIA_KINDS)})")
        return limit

    async def _check_quota(self, owner: str, adding: int) -> None:
        quota = self.config.quota_bytes
        if quota and (used := await self.store.usage(owner)) + adding > quota:
            raise FlareError(
                ErrorCode.TOO_LARGE,
                f"media quota of {quota} bytes reached ({used} used)",
                detail={"quota": quota, "used": used},
            )

    async def upload(
        self, owner: str, kind: str, name: str, chunks: AsyncIterator[bytes], *, length: int | None = None
    ) -> Media:
        """Store one file sent in a single request; returns its row (state ready)."""
        limit = self._limit(kind)
        if length is not None and length > limit.max_bytes:
            raise FlareError(ErrorCode.TOO_LARGE, f"a {kind} may be at most {limit.max_bytes} bytes")
        await self._check_quota(owner, length or 0)
        head, rest = await _read_head(chunks, SNIFF_BYTES)
        mime = sniff(head, kind)
        if not limit.allows(mime):
            raise FlareError(ErrorCode.INVALID, f"a {kind} of type {mime} is not accepted here")
        now = now_ms()
        media = Media(new_media_id(), owner, kind, UPLOADING, name, mime, length or 0, now, now)
        await self.store.insert(media)
        try:
            counted = _bounded(head, rest, limit.max_bytes, kind)
            if kind == "image":
                media = await self._store_image(media, counted)
            else:
                size = await self.objects.put(media.key, counted, content_type=mime)
                media = replace(media, size=size, duration_ms=await self._duration(media.key, kind, size))
            await self._check_quota(owner, media.size - (length or 0))  # the row counted the declared size
        except BaseException:
            await self._discard(media)
            raise
        return await self._ready(media)

    async def _store_image(self, media: Media, chunks: AsyncIterator[bytes]) -> Media:
        config = self.config
        with tempfile.TemporaryDirectory(dir=config.spool_dir or None, prefix="flare-media-") as tmp:
            path = Path(tmp) / "image"
            f = await asyncio.to_thread(open, path, "wb")
            try:
                async for chunk in chunks:
                    await asyncio.to_thread(f.write, chunk)
            finally:
                f.close()
            facts = await asyncio.to_thread(
                process_image,
                path,
                media.mime,
                thumb_px=config.thumb_px,
                thumb_format=config.thumb_format,
                strip_gps=config.strip_gps,
                max_pixels=config.max_pixels,
            )
            size = await self.objects.put(media.key, _file_chunks(path), content_type=media.mime)
        await self.objects.put(media.thumb_key, _one(facts.thumb), content_type=facts.thumb_mime)
        return replace(
            media,
            size=size,
            width=facts.width,
            height=facts.height,
            thumb_mime=facts.thumb_mime,
            thumb_size=len(facts.thumb),
            thumb_width=facts.thumb_width,
            thumb_height=facts.thumb_height,
            blurhash=facts.blurhash,
        )

    async def _ready(self, media: Media) -> Media:
        moderation = PENDING if self.on_ready is not None else ""
        ready = replace(media, state=READY, upload_id="", updated_at=now_ms(), moderation=moderation)
        if not await self.store.update(ready, expect=UPLOADING):
            await self._delete_objects(ready)
            raise FlareError(ErrorCode.CONFLICT, "the upload was cancelled meanwhile")
        if self.on_ready is not None:
            self.on_ready(ready)
        return ready

    async def _discard(self, media: Media) -> None:
        """Undo a failed upload: its objects and its row (best effort: the collector retries what is left)."""
        with contextlib.suppress(Exception):
            if media.upload_id:
                await self.objects.abort_upload(media.key, media.upload_id)
            await self._delete_objects(media)
            await self.store.delete(media.media_id)

    async def _delete_objects(self, media: Media) -> None:
        await self.objects.delete(media.key)
        if media.thumb_mime:
            await self.objects.delete(media.thumb_key)

    # ------------------------------------------------------------------ uploads in parts

    async def presign(self, owner: str, kind: str, name: str, size: int, mime: str) -> tuple[Media, list[str]]:
        """Start an upload of ``size`` bytes in parts: the row (uploading) and one URL per part. ``mime`` is the
        client's word, checked against the allow-list now and against the content at ``complete``."""
        limit = self._limit(kind)
        if kind == "image":
            raise invalid("images are uploaded in one request (POST /v1/media): the server reads them")
        if not 1 <= size <= limit.max_bytes:
            raise FlareError(ErrorCode.TOO_LARGE, f"a {kind} may be 1 to {limit.max_bytes} bytes")
        mime = mime.lower()
        if mime and not limit.allows(mime):  # none given: the content decides at completion
            raise FlareError(ErrorCode.INVALID, f"a {kind} of type {mime} is not accepted here")
        parts = -(-size // self.config.part_bytes)
        if parts > MAX_PARTS:
            raise invalid(f"{size} bytes would take more than {MAX_PARTS} parts")
        await self._check_quota(owner, size)
        now = now_ms()
        media = Media(new_media_id(), owner, kind, UPLOADING, name, mime, size, now, now, parts=parts)
        upload_id = await self.objects.create_upload(media.key, content_type=mime or FILE_MIME)
        media = replace(media, upload_id=upload_id)
        try:
            await self.store.insert(media)
        except BaseException:
            await self.objects.abort_upload(media.key, upload_id)
            raise
        return media, [await self.part_url(media, n) for n in range(1, parts + 1)]

    async def part_url(self, media: Media, number: int) -> str:
        """Where part ``number`` goes: S3's presigned URL, or the API's path (the client adds the upload token)."""
        if self._presigner is not None:
            return await self._presigner.presign_part(media.key, media.upload_id, number, self.config.upload_ttl_s)
        return f"/v1/media/{media.media_id}/parts/{number}"

    def upload_token(self, media: Media) -> str:
        """What a client sends with each part to the API (local store): it names the upload and expires."""
        expires = int(time.time()) + self.config.upload_ttl_s
        return f"{media.media_id}.{expires}.{self._sign('upload', media.media_id, str(expires))}"

    def check_upload_token(self, token: str, media_id: str | None = None) -> str | None:
        """The media id the token is for if it is valid (and for ``media_id`` when given), else None."""
        try:
            token_id, expires, signature = token.split(".")
            valid = _same(signature, self._sign("upload", token_id, expires))
            fresh = int(expires) >= time.time()
        except ValueError:
            return None
        if not valid or not fresh or (media_id is not None and token_id != media_id):
            return None
        return token_id

    async def put_part(self, media_id: str, number: int, chunks: AsyncIterator[bytes]) -> str:
        """Store part ``number`` sent to the API (local store, or an S3 the clients cannot reach); its etag."""
        media = await self._uploading(media_id)
        if not 1 <= number <= media.parts:
            raise FlareError(ErrorCode.OUT_OF_RANGE, f"part numbers of this upload are 1..{media.parts}")
        most = self.config.part_bytes
        try:
            return await self.objects.put_part(media.key, media.upload_id, number, _bounded(b"", chunks, most, "part"))
        except ObjectNotFound:
            raise FlareError(ErrorCode.GONE, "the upload was cancelled or completed") from None

    async def complete(self, owner: str, media_id: str, parts: list[tuple[int, str]]) -> Media:
        """Join the parts; sniff the content and check the size actually stored. A refusal deletes the upload."""
        media = await self._uploading(media_id)
        if media.owner != owner:
            raise forbidden("only the uploader may complete an upload")
        if len(parts) != media.parts or [n for n, _ in parts] != list(range(1, media.parts + 1)):
            raise invalid(f"list the etags of parts 1..{media.parts}, in order")
        try:
            size = await self.objects.complete_upload(media.key, media.upload_id, parts)
        except PartTooSmall as exc:
            raise invalid(f"{exc} (use the part size of the presign answer)") from None
        except ObjectNotFound:
            raise FlareError(ErrorCode.GONE, "the upload was cancelled or completed") from None
        except ValueError as exc:
            raise invalid(str(exc)) from None
        limit = self._limit(media.kind)
        try:
            head = b"".join([chunk async for chunk in self.objects.read(media.key, 0, SNIFF_BYTES)])
            mime = sniff(head, media.kind)
            if size > limit.max_bytes or size > media.size:
                raise FlareError(ErrorCode.TOO_LARGE, f"{size} bytes stored, {media.size} declared")
            if not limit.allows(mime):
                raise FlareError(ErrorCode.INVALID, f"a {media.kind} of type {mime} is not accepted here")
        except BaseException:
            await self._discard(replace(media, upload_id=""))
            raise
        duration = await self._duration(media.key, media.kind, size)
        return await self._ready(replace(media, size=size, mime=mime, duration_ms=duration))

    async def _duration(self, key: str, kind: str, size: int) -> int:
        """A voice or video file's duration from its headers (services/media_probe.py), 0 when not cheap to tell."""
        if kind not in ("voice", "video"):
            return 0

        async def read(start: int, end: int) -> bytes:
            return b"".join([chunk async for chunk in self.objects.read(key, start, end)])

        return await probe_duration_ms(await read(0, PROBE_HEAD_BYTES), size, read) or 0

    async def _uploading(self, media_id: str) -> Media:
        media = await self.store.get(media_id)
        if media is None or media.state == DELETED:
            raise not_found("no such media")
        if media.state != UPLOADING or not media.upload_id:
            raise FlareError(ErrorCode.CONFLICT, "this media is not an upload in parts in progress")
        return media

    # ------------------------------------------------------------------ reading

    async def readable(self, uid: str, media_id: str) -> Media:
        """The media if ``uid`` may download it: 404 when it does not exist or the user may not know of it."""
        media = await self.store.get(media_id)
        if media is None:
            raise not_found("no such media")
        if media.owner != uid and not await self._referenced_for(uid, media_id):
            raise forbidden("not the uploader, nor a member of a conversation where this media was sent")
        if media.moderation == BLOCKED:
            raise FlareError(ErrorCode.BLOCKED, "this media was blocked by moderation")
        if media.state == DELETED:
            raise FlareError(ErrorCode.GONE, "this media was deleted")
        if media.state != READY:
            raise FlareError(ErrorCode.CONFLICT, "the upload is not complete")
        return media

    async def _referenced_for(self, uid: str, media_id: str) -> bool:
        for ref in await self.store.refs(media_id):
            try:
                if await self._can_read(uid, ref.conv, ref.seq):
                    return True
            except FlareError:
                continue
        return False

    async def download_url(self, media: Media, variant: str = ORIGINAL) -> tuple[str, int]:
        """A signed URL of the original or the thumbnail and when it expires (epoch seconds)."""
        if variant == THUMB and not media.thumb_mime:
            raise not_found("this media has no thumbnail")
        ttl = self.config.url_ttl_s
        expires = int(time.time()) + ttl
        key = media.thumb_key if variant == THUMB else media.key
        if self._presigner is not None:
            filename = media.name if variant == ORIGINAL else ""
            return await self._presigner.presign_get(key, ttl, filename=filename), expires
        signature = self._sign(variant, media.media_id, str(expires))
        return f"/v1/media/{media.media_id}/content?v={variant}&exp={expires}&sig={signature}", expires

    def verify_url(self, media_id: str, variant: str, expires: int, signature: str) -> None:
        """Check a signed local URL: 403 when the signature is wrong or the URL has expired."""
        expected = self._sign(variant, media_id, str(expires))
        if not _same(expected, signature):
            raise forbidden("bad signature")
        if expires < time.time():
            raise forbidden("this URL has expired; ask for a new one")

    def _sign(self, *parts: str) -> str:
        mac = hmac.new(self._key, "\n".join(parts).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    # ------------------------------------------------------------------ messages

    async def resolve(self, sender: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body of a message that names ``media_id``, with the server's facts about that media filled in."""
        media_id = body["media_id"]
        if kind not in MEDIA_KINDS:
            raise invalid(f"media_id belongs in a message of kind {', '.join(MEDIA_KINDS)}, not {kind!r}")
        if not isinstance(media_id, str) or not media_id:
            raise invalid("media_id must be a media id (a string)")
        media = await self.store.get(media_id)
        if media is None or media.owner != sender:
            raise forbidden("only the uploader of a media may send it")
        if media.moderation == BLOCKED:
            raise FlareError(ErrorCode.BLOCKED, "this media was blocked by moderation")
        if media.state != READY:
            raise FlareError(ErrorCode.CONFLICT, f"media {media_id} is {media.state}, not ready to send")
        if kind != media.kind and kind != "file":
            raise invalid(f"media {media_id} is a {media.kind}; send it as {media.kind} or file")
        return {**body, **media_fields(media, kind)}

    async def sent(self, conv: str, seq: int, sender: str, media_ids: Iterable[str]) -> None:
        """Record that message (conv, seq) references these media: its readers may download them. The message
        is stored already: a failure is logged, not raised (its readers then get 403 until it is sent again)."""
        try:
            for media_id in media_ids:
                await self.store.add_ref(MediaRef(media_id, conv, seq, sender))
        except Exception:
            log.exception("recording the media of %s seq %d failed", conv, seq)

    async def released(self, conv: str, seq: int) -> None:
        """Message (conv, seq) is gone for everyone (recalled, deleted): drop its references, and delete the
        media no other message references. The recall is stored already: a failure is logged, not raised."""
        try:
            for media_id in await self.store.drop_refs(conv, seq):
                await self.delete(media_id)
        except Exception:
            log.exception("releasing the media of %s seq %d failed", conv, seq)

    async def delete(self, media_id: str, now: int | None = None) -> bool:
        """Delete the objects of a media and mark it deleted (its row stays until the collector: 410 meanwhile)."""
        media = await self.store.get(media_id)
        if media is None or media.state == DELETED:
            return False
        gone = replace(media, state=DELETED, updated_at=now_ms() if now is None else now, upload_id="")
        if not await self.store.update(gone, expect=media.state):
            return False
        if media.upload_id:
            await self.objects.abort_upload(media.key, media.upload_id)
        await self._delete_objects(media)
        return True

    async def delete_own(self, owner: str, media_id: str) -> None:
        """The uploader deletes a media that no message references (one that was sent goes with its messages)."""
        media = await self.store.get(media_id)
        if media is None or media.owner != owner:
            raise not_found("no such media")
        if await self.store.refs(media_id):
            raise FlareError(ErrorCode.CONFLICT, "this media was sent: recall or delete its messages instead")
        await self.delete(media_id)

    async def set_moderation(self, media_id: str, verdict: str) -> Media | None:
        """Record a moderation verdict (allowed or blocked); the updated row, or None if there is none to update."""
        if verdict not in (ALLOWED, BLOCKED):
            raise ValueError(verdict)
        for _ in range(3):  # a concurrent change of the row (a completion, a delete) is retried
            media = await self.store.get(media_id)
            if media is None or media.state == DELETED:
                return None
            judged = replace(media, moderation=verdict, updated_at=now_ms())
            if await self.store.update(judged, expect=media.state):
                return judged
        return None

    # ------------------------------------------------------------------ collection

    async def collect(self, now: int | None = None) -> int:
        """Delete uploads abandoned for ``gc_after_s`` and the rows of media deleted as long ago; how many."""
        now = now_ms() if now is None else now
        before = now - int(self.config.gc_after_s * 1000)
        done = 0
        for media in await self.store.stale(UPLOADING, before, GC_BATCH):
            if await self.delete(media.media_id, now):
                done += 1
        for media in await self.store.stale(DELETED, before, GC_BATCH):
            await self.store.delete(media.media_id)
            done += 1
        return done

    async def run_collector(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                collected = await self.collect()
                if collected:
                    log.info("media collector: %d abandoned uploads or deleted media removed", collected)
            except Exception:
                log.exception("media collector failed; retrying in %.0f s", interval_s)


def media_fields(media: Media, kind: str) -> dict[str, Any]:
    """What the server writes into a message body about its media (docs/protocol.md "Media")."""
    out: dict[str, Any] = {"url": f"/v1/media/{media.media_id}/download", "size": media.size, "mime": media.mime}
    if kind == "file":
        out["name"] = media.name or "file"
    if media.width:
        out |= {"width": media.width, "height": media.height}
    if media.duration_ms and kind in ("voice", "video"):
        out["duration_ms"] = media.duration_ms
    if media.thumb_mime and kind in ("image", "video"):
        out["thumb"] = f"/v1/media/{media.media_id}/download?variant=thumb"
        out["thumb_width"], out["thumb_height"] = media.thumb_width, media.thumb_height
    if media.blurhash:
        out["blurhash"] = media.blurhash
    return out


def media_ids_of(kind: str, body: dict[str, Any]) -> list[str]:
    """The media a stored message references: its own, and those of the messages a merged forward holds."""
    found = body.get("media_id")
    ids = [found] if isinstance(found, str) else []
    if kind == "merged":
        for item in body.get("items", ()):
            inner = item.get("body") if isinstance(item, dict) else None
            if isinstance(inner, dict) and isinstance(inner.get("media_id"), str):
                ids.append(inner["media_id"])
    return ids


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings from anywhere (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def new_media_id() -> str:
    return secrets.token_urlsafe(18)  # 144 random bits: an id is no way to guess another


def sniff(head: bytes, kind: str) -> str:
    """The MIME type of content starting with ``head``; a file's unknown type is application/octet-stream."""
    guess = filetype.guess(head)
    if guess is not None:
        mime = str(guess.mime).lower()
        if kind == "voice" and mime.startswith("video/") and mime in ("video/webm", "video/mp4"):
            return mime.replace("video/", "audio/")  # an audio-only WebM/MP4 container sniffs as video
        return mime
    return FILE_MIME


async def _read_head(chunks: AsyncIterator[bytes], size: int) -> tuple[bytes, AsyncIterator[bytes]]:
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= size:
            break
    return head, chunks


async def _bounded(head: bytes, rest: AsyncIterator[bytes], most: int, what: str) -> AsyncIterator[bytes]:
    """``head`` then ``rest``, cut off with 413 past ``most`` bytes (a client that sends more than it declared)."""
    total = len(head)
    if total > most:
        raise FlareError(ErrorCode.TOO_LARGE, f"a {what} may be at most {most} bytes")
    if head:
        yield head
    async for chunk in rest:
        total += len(chunk)
        if total > most:
            raise FlareError(ErrorCode.TOO_LARGE, f"a {what} may be at most {most} bytes")
        yield chunk


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, CHUNK * 16):
            yield chunk
    finally:
        f.close()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
