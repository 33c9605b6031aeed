"""Media on a `flare serve` node: the media metadata store (of the relational database), the object store of
``object_store_url``, the service, its collector of abandoned uploads, and what the API's body limits need."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flare_im.backends.media.base import MediaStore
from flare_im.backends.objects.base import MIN_PART, open_object_store
from flare_im.backends.sqlite_db import SqliteDatabase
from flare_im.config import Settings
from flare_im.services.conversations import ConversationService
from flare_im.services.media import MEDIA_KINDS, KindLimit, MediaConfig, MediaService, parse_types

if TYPE_CHECKING:
    from flare_im.api.http import ApiContext
    from flare_im.services.auth import AuthService

log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]
UPLOAD_TOKEN_HEADER = "x-flare-upload"


async def open_media_store(url: str, sqlite: Callable[[str], SqliteDatabase], closers: list[Closer]) -> MediaStore:
    """The media adapter of the relational database ``url`` (before the SQLite databases start: the embedded one
    migrates itself; PostgreSQL is migrated by ``flare migrate``)."""
    if url.startswith("sqlite://"):
        from flare_im.backends.media.sqlite import SqliteMediaStore

        return SqliteMediaStore(sqlite(url))
    from flare_im.backends.media.postgres import PostgresMediaStore

    store = await PostgresMediaStore.open(url)
    closers.append(store.close)
    return store


def media_config(settings: Settings) -> MediaConfig:
    limits = {
        kind: KindLimit(
            getattr(settings, f"media_{kind}_max_bytes"), parse_types(getattr(settings, f"media_{kind}_types"))
        )
        for kind in MEDIA_KINDS
    }
    spool = Path(settings.data_dir) / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    return MediaConfig(
        limits=limits,
        quota_bytes=settings.media_quota_bytes,
        url_ttl_s=settings.media_url_ttl_s,
        upload_ttl_s=settings.media_upload_ttl_s,
        part_bytes=max(MIN_PART, settings.media_part_bytes),  # S3 refuses smaller parts but the last
        gc_after_s=settings.media_gc_after_s,
        strip_gps=settings.media_strip_gps,
        thumb_px=min(max(16, settings.media_thumb_px), 2048),
        thumb_format=settings.media_thumb_format.upper(),
        spool_dir=str(spool),
    )


async def start_media(
    settings: Settings,
    store: MediaStore,
    conversations: ConversationService,
    url_secret: str,
    closers: list[Closer],
    stoppers: list[Closer],
) -> MediaService:
    objects = await open_object_store(settings.object_store_url, str(Path(settings.data_dir) / "media"))
    closers.append(objects.close)

    async def can_read(uid: str, conv: str, seq: int) -> bool:
        member = await conversations.member_for_read(uid, conv)
        return seq > max(member.join_seq, member.cleared_seq)

    service = MediaService(store, objects, media_config(settings), url_secret=url_secret, can_read=can_read)
    if settings.media_moderation_url:
        from flare_im.services.media_moderation import ModerationHook

        hook = ModerationHook(
            service,
            settings.media_moderation_url,
            secret=settings.media_moderation_secret,
            timeout_s=settings.media_moderation_timeout_s,
        )
        service.on_ready = hook.submit
        stoppers.append(hook.close)
    collector = asyncio.create_task(service.run_collector(settings.media_gc_interval_s), name="flare-media-gc")

    async def stop() -> None:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector

    stoppers.append(stop)
    return service


def media_body_limit(settings: Settings) -> tuple[str, int]:
    """The request-body limit of the media routes: the largest upload of any kind (each kind's own limit, and
    the part size, are checked by the service as the bytes arrive)."""
    largest = max(getattr(settings, f"media_{kind}_max_bytes") for kind in MEDIA_KINDS)
    return "/v1/media", max(largest, settings.media_part_bytes, MIN_PART)


def media_credentials(
    credentials: Callable[[AuthService], Callable[[dict[str, str]], bool]], api: ApiContext
) -> Callable[[dict[str, str]], bool]:
    """``credentials(api.auth)`` (what the body limit takes for credentials), and upload tokens besides."""
    return with_upload_tokens(credentials(api.auth), api.media)


def with_upload_tokens(
    authenticated: Callable[[dict[str, str]], bool], media: MediaService | None
) -> Callable[[dict[str, str]], bool]:
    """A part sent to the API carries an upload token instead of an access token: it counts as credentials for
    the body limit (the route checks the token against the media id)."""
    if media is None:
        return authenticated

    def check(headers: dict[str, str]) -> bool:
        token = headers.get(UPLOAD_TOKEN_HEADER)
        if token is not None and media.check_upload_token(token) is not None:
            return True
        return authenticated(headers)

    return check
