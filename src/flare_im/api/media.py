"""REST routes of media (docs/media.md): uploads in one request or in parts, what a media is, signed downloads.

The upload body is the file itself (any Content-Type: the server sniffs the content), streamed to the object
store as it arrives. Signed local URLs (``/v1/media/{id}/content``) carry their own authorisation and need no
token; they serve byte ranges, so a video player can seek.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from flare_im.api.errors import error_response
from flare_im.api.openapi import reply
from flare_im.backends.media.base import Media
from flare_im.backends.objects.base import ObjectNotFound
from flare_im.protocol.errors import ErrorCode, FlareError, forbidden, not_found
from flare_im.services.media import ORIGINAL, THUMB, MediaService
from flare_im.services.media_moderation import block

if TYPE_CHECKING:
    from flare_im.api.http import ApiContext

UPLOAD_TOKEN_HEADER = "x-flare-upload"  # the token of an upload in parts, sent with each part to the API
MediaId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Kind = Literal["image", "file", "voice", "video"]
# What reading a media answers besides success: not allowed, none, upload incomplete, deleted, blocked.
_READ_ERRORS = (ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT, ErrorCode.GONE, ErrorCode.BLOCKED)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


class ThumbInfo(BaseModel):
    mime: str
    width: int
    height: int
    size: int


class MediaInfo(BaseModel):
    media_id: str
    kind: str
    state: Literal["uploading", "ready", "deleted"]
    name: str
    mime: str
    size: int
    created_at: int
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    blurhash: str | None = None
    thumb: ThumbInfo | None = None
    moderation: str | None = Field(default=None, description="pending | allowed | blocked, with a moderation hook")
    url: str | None = Field(default=None, description="GET /v1/media/{id}: a signed URL of the original")
    thumb_url: str | None = Field(default=None, description="GET /v1/media/{id}: a signed URL of the thumbnail")
    expires_at: int | None = Field(default=None, description="when the signed URLs expire (epoch seconds)")


class PresignBody(BaseModel):
    kind: Literal["file", "voice", "video"] = Field(description="images go in one request: the server reads them")
    size: int = Field(ge=1, le=2**53 - 1, description="bytes of the whole file")
    name: str = Field(default="", max_length=255)
    mime: str = Field(
        default="",
        max_length=128,
        description="what the client believes, refused at once when the kind does not take it; the content decides",
    )


class PartTarget(BaseModel):
    number: int
    url: str
    method: Literal["PUT"]
    headers: dict[str, str]


class PresignReply(BaseModel):
    media_id: str
    part_size: int
    parts: list[PartTarget]
    expires_at: int


class PartDone(BaseModel):
    number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=128)


class CompleteBody(BaseModel):
    media_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="the presign answer's")
    parts: list[PartDone] = Field(min_length=1, max_length=10_000)


class BlockBody(BaseModel):
    reason: str = Field(default="blocked by moderation", min_length=1, max_length=256)


class PartReply(BaseModel):
    etag: str


def media_json(media: Media) -> dict[str, Any]:
    out: dict[str, Any] = {
        "media_id": media.media_id,
        "kind": media.kind,
        "state": media.state,
        "name": media.name,
        "mime": media.mime,
        "size": media.size,
        "created_at": media.created_at,
    }
    if media.width:
        out |= {"width": media.width, "height": media.height}
    if media.duration_ms:
        out["duration_ms"] = media.duration_ms
    if media.blurhash:
        out["blurhash"] = media.blurhash
    if media.thumb_mime:
        thumb = {"mime": media.thumb_mime, "width": media.thumb_width, "height": media.thumb_height}
        out["thumb"] = thumb | {"size": media.thumb_size}
    if media.moderation:
        out["moderation"] = media.moderation
    return out


def install_media_routes(app: FastAPI, ctx: ApiContext, user: Any, admin: Any) -> None:
    caller = Depends(user)

    def service() -> MediaService:
        if ctx.media is None:
            raise FlareError(ErrorCode.UNAVAILABLE, "media are not configured on this server")
        return ctx.media

    @app.post(
        "/v1/media",
        tags=["media"],
        status_code=201,
        **reply(MediaInfo, ErrorCode.TOO_LARGE, ErrorCode.INVALID),
        openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {}}}},
    )
    async def upload(
        request: Request,
        kind: Annotated[Kind, Query(description="what the file is: image, file, voice, video")],
        name: Annotated[str, Query(max_length=255)] = "",
        uid: str = caller,
    ) -> dict[str, Any]:
        """Upload one file; the body is its bytes. Type and size are checked on the content (not Content-Type);
        an image gets dimensions, a thumbnail and a blurhash, and loses its GPS position. For large files use
        ``POST /v1/media:presign``."""
        declared = request.headers.get("content-length")
        length = int(declared) if declared and declared.isdigit() else None
        media = await service().upload(uid, kind, name, _body(request), length=length)
        return media_json(media)

    @app.post("/v1/media:presign", tags=["media"], status_code=201, **reply(PresignReply, ErrorCode.TOO_LARGE))
    async def presign(body: PresignBody, uid: str = caller) -> dict[str, Any]:
        """Start an upload in parts (files, voice, video): PUT each part (``part_size`` bytes, the last one less)
        to its URL with its headers, keep each answer's ETag, then ``POST /v1/media:complete``."""
        media_service = service()
        media, urls = await media_service.presign(uid, body.kind, body.name, body.size, body.mime)
        headers = {} if not urls[0].startswith("/") else {"X-Flare-Upload": media_service.upload_token(media)}
        return {
            "media_id": media.media_id,
            "part_size": media_service.config.part_bytes,
            "parts": [
                {"number": n, "url": url, "method": "PUT", "headers": headers} for n, url in enumerate(urls, start=1)
            ],
            "expires_at": media.created_at // 1000 + media_service.config.upload_ttl_s,
        }

    @app.put(
        "/v1/media/{media_id}/parts/{number}",
        tags=["media"],
        **reply(
            PartReply, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT, ErrorCode.GONE, ErrorCode.TOO_LARGE
        ),
        openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {}}}},
    )
    async def put_part(
        request: Request,
        response: Response,
        media_id: MediaId,
        number: Annotated[int, Path(ge=1, le=10_000)],
        x_flare_upload: Annotated[str, Header(description="the upload token of the presign answer")] = "",
    ) -> dict[str, Any]:
        """One part of an upload (when the presign answer points here: the local store). Sending a part
        again replaces it: a broken upload resumes with the parts it lacks."""
        media_service = service()
        if media_service.check_upload_token(x_flare_upload, media_id) is None:
            raise forbidden("missing, expired or wrong X-Flare-Upload token")
        etag = await media_service.put_part(media_id, number, _body(request))
        response.headers["ETag"] = f'"{etag}"'
        return {"etag": etag}

    @app.post(
        "/v1/media:complete",
        tags=["media"],
        **reply(
            MediaInfo,
            ErrorCode.FORBIDDEN,
            ErrorCode.NOT_FOUND,
            ErrorCode.CONFLICT,
            ErrorCode.GONE,
            ErrorCode.TOO_LARGE,
            ErrorCode.INVALID,
        ),
    )
    async def complete(body: CompleteBody, uid: str = caller) -> dict[str, Any]:
        """Join the uploaded parts into the file; its content is checked as a one-request upload's is."""
        parts = [(p.number, p.etag) for p in body.parts]
        return media_json(await service().complete(uid, body.media_id, parts))

    @app.get(
        "/v1/media/{media_id}",
        tags=["media"],
        **reply(MediaInfo, *_READ_ERRORS),
    )
    async def describe(media_id: MediaId, uid: str = caller) -> dict[str, Any]:
        """A media and short-lived signed URLs of it, for its uploader and the members of a conversation where
        it was sent (from their join seq, not before a clear-history)."""
        media_service = service()
        media = await media_service.readable(uid, media_id)
        url, expires = await media_service.download_url(media, ORIGINAL)
        out = media_json(media) | {"url": url, "expires_at": expires}
        if media.thumb_mime:
            out["thumb_url"], _ = await media_service.download_url(media, THUMB)
        return out

    @app.get(
        "/v1/media/{media_id}/download",
        tags=["media"],
        status_code=302,
        response_class=RedirectResponse,
        **reply(None, *_READ_ERRORS),
    )
    async def download(
        media_id: MediaId,
        variant: Annotated[Literal["orig", "thumb"], Query()] = "orig",
        uid: str = caller,
    ) -> RedirectResponse:
        """The URL a message body names: a redirect to a fresh signed URL of the original or the thumbnail."""
        media_service = service()
        media = await media_service.readable(uid, media_id)
        url, _ = await media_service.download_url(media, variant)
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "private, no-store"})

    @app.get(
        "/v1/media/{media_id}/content",
        tags=["media"],
        **reply(None, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.GONE, ErrorCode.OUT_OF_RANGE),
    )
    async def content(
        media_id: MediaId,
        v: Annotated[Literal["orig", "thumb"], Query()],
        exp: Annotated[int, Query(ge=0, le=2**53)],
        sig: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
        range_: Annotated[str | None, Header(alias="range")] = None,
    ) -> Response:
        """A signed URL of the local store (no token: the signature is the permission). Honors one byte range."""
        media_service = service()
        media_service.verify_url(media_id, v, exp, sig)
        media = await media_service.store.get(media_id)
        if media is None or media.state != "ready" or (v == THUMB and not media.thumb_mime):
            raise FlareError(ErrorCode.GONE, "this media is no longer here")
        size = media.thumb_size if v == THUMB else media.size
        mime = media.thumb_mime if v == THUMB else media.mime
        key = media.thumb_key if v == THUMB else media.key
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=300"}
        if v == ORIGINAL and media.kind == "file":
            headers["Content-Disposition"] = _disposition(media.name or "file")
        start, end, status = 0, size, 200
        if range_ is not None and _RANGE.match(range_.strip()):  # anything else: ignored, the whole file
            picked = _byte_range(range_, size)
            if picked is None:
                message = f"range {range_!r} is outside the {size} bytes of this file"
                return error_response(
                    ErrorCode.OUT_OF_RANGE, message, False, headers={"Content-Range": f"bytes */{size}"}
                )
            start, end = picked
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        chunks = media_service.objects.read(key, start, end)
        try:
            first = await anext(chunks, b"")
        except ObjectNotFound:
            raise FlareError(ErrorCode.GONE, "this media is no longer here") from None
        return StreamingResponse(_prepend(first, chunks), status_code=status, media_type=mime, headers=headers)

    @app.delete(
        "/v1/media/{media_id}", tags=["media"], status_code=204, **reply(None, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT)
    )
    async def delete(media_id: MediaId, uid: str = caller) -> None:
        """The uploader deletes a media it has not sent (a sent one goes when its messages are recalled)."""
        await service().delete_own(uid, media_id)

    @app.post(
        "/v1/admin/media/{media_id}:block",
        tags=["admin"],
        dependencies=[Depends(admin)],
        **reply(MediaInfo, ErrorCode.NOT_FOUND),
    )
    async def admin_block(media_id: MediaId, body: BlockBody) -> dict[str, Any]:
        """Block a media (a late moderation verdict): it can no longer be sent or downloaded, every message that
        sent it is recalled with ``reason``, and its file is deleted."""
        judged = await block(service(), media_id, body.reason)
        if judged is None:
            raise not_found("no such media")
        return media_json(judged)


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a single ``bytes=`` range, or None when it cannot be satisfied."""
    match = _RANGE.match(header.strip())
    if match is None:
        return 0, size
    first, last = match.groups()
    if not first and not last:
        return 0, size
    if not first:  # the last N bytes
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else None
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or (last and int(last) < start):
        return None
    return start, end


def _disposition(name: str) -> str:
    from urllib.parse import quote

    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
