"""The media service without a server: the collector of abandoned uploads, upload tokens, media_fields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flare_im.backends.media.base import DELETED, UPLOADING
from flare_im.backends.media.sqlite import SqliteMediaStore
from flare_im.backends.objects.local import LocalConfig, LocalObjectStore
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.ids import now_ms
from flare_im.protocol.errors import FlareError
from flare_im.services.media import KindLimit, MediaConfig, MediaService, media_fields, media_ids_of

MIB = 2**20


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[MediaService]:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    store = SqliteMediaStore(db)
    db.start()
    limits = {k: KindLimit(100 * MIB, ("*",)) for k in ("image", "file", "voice", "video")}

    async def can_read(uid: str, conv: str, seq: int) -> bool:
        return uid == "bob"

    media = MediaService(
        store,
        LocalObjectStore(LocalConfig(str(tmp_path / "media"))),
        MediaConfig(limits=limits, part_bytes=5 * MIB, gc_after_s=60),
        url_secret="s",
        can_read=can_read,
    )
    yield media
    await db.close()


async def test_collector_removes_abandoned_uploads_only(service: MediaService, tmp_path: Path) -> None:
    abandoned, _ = await service.presign("alice", "video", "a.webm", 6 * MIB, "")
    await service.put_part(abandoned.media_id, 1, _chunks(b"x" * 5 * MIB))
    done = await service.upload("alice", "file", "f.txt", _chunks(b"kept"))
    uploads = tmp_path / "media" / "uploads"
    assert len(list(uploads.iterdir())) == 1
    assert await service.collect() == 0  # not old enough
    later = now_ms() + 61_000
    assert await service.collect(later) == 1
    row = await service.store.get(abandoned.media_id)
    assert row is not None
    assert row.state == DELETED
    assert list(uploads.iterdir()) == []  # its parts are gone
    assert await service.store.usage("alice") == 4  # the deleted upload no longer counts
    # A deleted row is kept gc_after_s longer (410 meanwhile), then removed; the completed file stays.
    assert await service.collect(later) == 0
    assert await service.collect(now_ms() + 122_000) == 1
    assert await service.store.get(abandoned.media_id) is None
    kept = await service.store.get(done.media_id)
    assert kept is not None
    assert kept.state != UPLOADING
    with pytest.raises(FlareError, match="not an upload in parts"):
        await service.put_part(done.media_id, 1, _chunks(b"x"))


async def test_upload_tokens_and_signed_urls(service: MediaService) -> None:
    media, urls = await service.presign("alice", "file", "f.bin", 11 * MIB, "")
    assert urls == [f"/v1/media/{media.media_id}/parts/{n}" for n in (1, 2, 3)]
    token = service.upload_token(media)
    assert service.check_upload_token(token, media.media_id) == media.media_id
    assert service.check_upload_token(token, "another") is None
    assert service.check_upload_token(token[:-2] + "xx") is None
    assert service.check_upload_token("garbage") is None
    assert service.check_upload_token("a.1.\u00e9\u00e8") is None  # non-ASCII: refused, not a TypeError
    with pytest.raises(FlareError, match=r"1\.\.3"):
        await service.put_part(media.media_id, 4, _chunks(b"x"))
    with pytest.raises(FlareError, match="bad signature"):
        service.verify_url(media.media_id, "orig", 2**40, "forged")
    with pytest.raises(FlareError, match="bad signature"):
        service.verify_url(media.media_id, "orig", 2**40, "\u00f3\u00b8\x1e")
    expired = 1000
    with pytest.raises(FlareError, match="expired"):
        service.verify_url(media.media_id, "orig", expired, service._sign("orig", media.media_id, str(expired)))


async def test_fields_and_ids(service: MediaService) -> None:
    media = await service.upload("alice", "file", "notes.txt", _chunks(b"hello"))
    fields = media_fields(media, "file")
    assert fields == {
        "url": f"/v1/media/{media.media_id}/download",
        "size": 5,
        "mime": "application/octet-stream",
        "name": "notes.txt",
    }
    merged = {"items": [{"body": {"media_id": "a"}}, {"body": {"text": "x"}}, "junk", {"body": {"media_id": "b"}}]}
    assert media_ids_of("merged", merged) == ["a", "b"]
    assert media_ids_of("text", {"text": "x"}) == []
    # bob may read a message that references it; eve may not.
    await service.sent("d:alice:bob", 3, "alice", [media.media_id])
    assert (await service.readable("bob", media.media_id)).media_id == media.media_id
    with pytest.raises(FlareError, match="not the uploader"):
        await service.readable("eve", media.media_id)
    # The uploader cannot delete a sent media; a recall releases it.
    with pytest.raises(FlareError, match="was sent"):
        await service.delete_own("alice", media.media_id)
    await service.released("d:alice:bob", 3)
    row = await service.store.get(media.media_id)
    assert row is not None
    assert row.state == DELETED
