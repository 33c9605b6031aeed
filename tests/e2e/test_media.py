"""Media end to end (docs/media.md), over a real `flare serve` on the local store and on S3 (s3rver): upload,
send an image, the peer downloads the original and the thumbnail, a non-member is refused, an expired URL is
refused, a recall deletes the object; an upload in parts (presigned on S3); limits checked on the content."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.services import require

from flare_im.protocol.errors import ErrorCode
from flare_im.signing import verify_signature

from .conftest import Harness, ServerProcess

DM = "d:alice:bob"
MIB = 2**20
HOOK_SECRET = "moderation-hook-secret"
# The start of a WebM file: the EBML header with its doctype.
WEBM_HEADER = bytes.fromhex(
    "1a45dfa39f4286810142f7810142f2810442f381084282847765626d42878104428581 02".replace(" ", "")
)


def jpeg_with_gps(size: tuple[int, int] = (640, 480)) -> bytes:
    img = Image.new("RGB", size, (10, 120, 200))
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0)})
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture(params=["local", "s3"])
def media_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "FLARE_MEDIA_URL_TTL_S": "2",
        "FLARE_MEDIA_PART_BYTES": str(5 * MIB),
        "FLARE_MEDIA_FILE_MAX_BYTES": str(20 * MIB),
    }
    bucket = ""
    if request.param == "s3":
        endpoint = require("s3")
        bucket = f"e2e-{uuid.uuid4().hex[:16]}"
        env["FLARE_OBJECT_STORE_URL"] = f"s3://S3RVER:S3RVER@{bucket}/flare?endpoint={endpoint}&region=us-east-1"
    srv = ServerProcess(tmp_path / "data", env_overrides=env)
    try:
        srv.start()
        yield srv
    finally:
        try:
            if srv.proc is not None:
                srv.stop()  # fails the test on a traceback in the server's log
        finally:
            if bucket:  # also when the server failed to start or stop cleanly (it creates the bucket first)
                asyncio.run(_drop_bucket(bucket))


async def _drop_bucket(bucket: str) -> None:
    from flare_im.backends.objects.s3 import S3ObjectStore, s3_config_from_url

    store = await S3ObjectStore.open(s3_config_from_url(f"s3://S3RVER:S3RVER@{bucket}?endpoint={require('s3')}"))
    try:
        client = store._client
        listed = await client.list_objects_v2(Bucket=bucket)
        for item in listed.get("Contents", []):
            await client.delete_object(Bucket=bucket, Key=item["Key"])
        await client.delete_bucket(Bucket=bucket)
    finally:
        await store.close()


@pytest.fixture
async def media(media_server: ServerProcess) -> AsyncIterator[Harness]:
    h = Harness(media_server)
    for uid in ("alice", "bob", "eve"):
        await h.user(uid)
    yield h
    await h.close()


def api(h: Harness, uid: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=h.srv.api_url, headers={"Authorization": f"Bearer {h.tokens[uid]}"}, trust_env=False, timeout=30
    )


def absolute(h: Harness, url: str) -> str:
    return h.srv.api_url + url if url.startswith("/") else url


async def fetch(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as anonymous:
        return await anonymous.get(url, **kw)


async def stored_objects(h: Harness, media_id: str) -> int:
    """How many objects of ``media_id`` the store holds (the local directory; on S3, a HEAD per variant)."""
    env = h.srv.env_overrides
    if "FLARE_OBJECT_STORE_URL" not in env:
        root = h.srv.data_dir / "media" / "objects" / "media" / media_id
        return len([p for p in root.glob("*") if not p.name.endswith(".type")]) if root.exists() else 0
    from flare_im.backends.objects.base import open_object_store

    store = await open_object_store(env["FLARE_OBJECT_STORE_URL"], "")
    try:
        return sum([await store.head(f"media/{media_id}/{v}") is not None for v in ("orig", "thumb")])
    finally:
        await store.close()


async def test_image_upload_send_download_recall(media: Harness) -> None:
    original = jpeg_with_gps()
    async with api(media, "alice") as alice, api(media, "bob") as bob, api(media, "eve") as eve:
        # The client's Content-Type is ignored: the content says JPEG.
        up = await alice.post(
            "/v1/media", params={"kind": "image", "name": "cat.jpg"}, content=original, headers={"Content-Type": "x/y"}
        )
        assert up.status_code == 201, up.text
        info = up.json()
        media_id = info["media_id"]
        assert (info["mime"], info["width"], info["height"], info["state"]) == ("image/jpeg", 640, 480, "ready")
        assert info["thumb"]["mime"] == "image/webp"
        assert info["thumb"]["width"] == 320
        assert info["blurhash"]

        # Not sent yet: bob may not read it.
        assert (await bob.get(f"/v1/media/{media_id}")).status_code == 403
        # Only the uploader may send it.
        refused = await bob.post(
            f"/v1/conversations/{DM}/messages", json={"cmid": "b1", "kind": "image", "body": {"media_id": media_id}}
        )
        assert refused.status_code == ErrorCode.FORBIDDEN
        assert (await bob.get(f"/v1/conversations/{DM}/messages")).json()["items"] == []

        sent = await alice.post(
            f"/v1/conversations/{DM}/messages", json={"cmid": "a1", "kind": "image", "body": {"media_id": media_id}}
        )
        assert sent.status_code == 200, sent.text
        seq = sent.json()["seq"]
        [message] = (await bob.get(f"/v1/conversations/{DM}/messages")).json()["items"]
        body = message["body"]
        assert body["media_id"] == media_id
        assert (body["width"], body["height"], body["mime"], body["blurhash"]) == (
            640,
            480,
            "image/jpeg",
            info["blurhash"],
        )
        assert body["url"] == f"/v1/media/{media_id}/download"
        assert body["thumb"] == f"/v1/media/{media_id}/download?variant=thumb"

        # The peer downloads the original (its GPS position removed) and the thumbnail.
        got = await bob.get(body["url"], follow_redirects=False)
        assert got.status_code == 302
        orig = await fetch(absolute(media, got.headers["location"]))
        assert orig.status_code == 200
        assert orig.content[:2] == b"\xff\xd8"
        with Image.open(io.BytesIO(orig.content)) as img:
            assert img.size == (640, 480)
            assert 0x8825 not in img.getexif()
        assert len(orig.content) == info["size"]
        thumb_redirect = await bob.get(body["thumb"], follow_redirects=False)
        thumb = await fetch(absolute(media, thumb_redirect.headers["location"]))
        assert thumb.status_code == 200
        with Image.open(io.BytesIO(thumb.content)) as img:
            assert (img.format, img.size) == ("WEBP", (320, 240))
        # A range, as a video player asks.
        ranged = await fetch(absolute(media, got.headers["location"]), headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 206
        assert ranged.content == orig.content[:10]
        past = await fetch(absolute(media, got.headers["location"]), headers={"Range": f"bytes={info['size']}-"})
        assert past.status_code == 416
        if "FLARE_OBJECT_STORE_URL" not in media.srv.env_overrides:  # the API's own answer
            assert past.headers["content-range"] == f"bytes */{info['size']}"
            assert past.json()["error"]["name"] == "out_of_range"

        # A non-member: refused, on the description and on the redirect.
        assert (await eve.get(f"/v1/media/{media_id}")).status_code == 403
        assert (await eve.get(body["url"], follow_redirects=False)).status_code == 403

        # An expired URL is refused (media_url_ttl_s is 2 here).
        stale = absolute(media, (await bob.get(f"/v1/media/{media_id}")).json()["url"])
        await asyncio.sleep(3.1)
        assert (await fetch(stale)).status_code == 403

        # Recall: the objects go, and nobody can download any more.
        assert await stored_objects(media, media_id) == 2
        recall = await alice.post(f"/v1/conversations/{DM}/messages/{seq}/ops", json={"op": "recall", "opid": "r1"})
        assert recall.status_code == 200, recall.text
        assert await stored_objects(media, media_id) == 0
        assert (await bob.get(f"/v1/media/{media_id}")).status_code == ErrorCode.FORBIDDEN  # no reference left
        assert (await alice.get(f"/v1/media/{media_id}")).status_code == ErrorCode.GONE
        again = await alice.post(
            f"/v1/conversations/{DM}/messages", json={"cmid": "a2", "kind": "image", "body": {"media_id": media_id}}
        )
        assert again.status_code == ErrorCode.CONFLICT


async def test_limits_are_checked_on_the_content(media: Harness) -> None:
    async with api(media, "alice") as alice:
        # A text file claiming to be an image: the content decides, and images are JPEG/PNG/GIF/WebP only.
        fake = await alice.post(
            "/v1/media", params={"kind": "image"}, content=b"just text, " * 100, headers={"Content-Type": "image/png"}
        )
        assert fake.status_code == ErrorCode.INVALID
        assert "application/octet-stream" in fake.json()["error"]["message"]
        # A PNG sent as voice: not audio.
        png = io.BytesIO()
        Image.new("RGB", (4, 4)).save(png, "PNG")
        assert (await alice.post("/v1/media", params={"kind": "voice"}, content=png.getvalue())).status_code == 422
        # Over the kind's size (files: 20 MiB here), declared or not.
        big = await alice.post("/v1/media", params={"kind": "file"}, content=b"x" * (20 * MIB + 1))
        assert big.status_code == ErrorCode.TOO_LARGE

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(21):
                yield b"y" * MIB

        streamed = await alice.post("/v1/media", params={"kind": "file"}, content=chunked())
        assert streamed.status_code == ErrorCode.TOO_LARGE
        # A file of any type is fine, and named.
        ok = await alice.post("/v1/media", params={"kind": "file", "name": "notes.txt"}, content=b"hello")
        assert ok.status_code == 201
        assert (ok.json()["mime"], ok.json()["size"]) == ("application/octet-stream", 5)
        # A media id in a text message, or an unknown one: refused.
        text = await alice.post(
            f"/v1/conversations/{DM}/messages",
            json={"cmid": "t1", "kind": "text", "body": {"text": "hi", "media_id": ok.json()["media_id"]}},
        )
        assert text.status_code == ErrorCode.INVALID
        unknown = await alice.post(
            f"/v1/conversations/{DM}/messages", json={"cmid": "t2", "kind": "file", "body": {"media_id": "nope"}}
        )
        assert unknown.status_code == ErrorCode.FORBIDDEN
        assert (await alice.get(f"/v1/conversations/{DM}/messages")).json()["items"] == []
        # Nothing of the refused uploads is left behind (only the good file).
        if "FLARE_OBJECT_STORE_URL" not in media.srv.env_overrides:
            objects = media.srv.data_dir / "media" / "objects" / "media"
            assert [p.name for p in objects.iterdir()] == [ok.json()["media_id"]]


async def test_upload_in_parts(media: Harness) -> None:
    """Three parts of 5, 5 and 1 MiB: presigned straight to S3, or to the API with an upload token; part 2 is
    sent twice (a resumed upload), then the file is completed, sent and downloaded whole."""
    data = os.urandom(11 * MIB)
    data = WEBM_HEADER + data[len(WEBM_HEADER) :]  # the content sniffs as video/webm
    async with api(media, "alice") as alice, api(media, "bob") as bob:
        start = await alice.post("/v1/media:presign", json={"kind": "video", "size": len(data), "name": "clip.webm"})
        assert start.status_code == 201, start.text
        plan = start.json()
        assert plan["part_size"] == 5 * MIB
        assert [p["number"] for p in plan["parts"]] == [1, 2, 3]
        media_id = plan["media_id"]
        etags = []
        async with httpx.AsyncClient(trust_env=False, timeout=60) as anonymous:
            for part in plan["parts"]:
                n = part["number"]
                chunk = data[(n - 1) * plan["part_size"] : n * plan["part_size"]]
                url = absolute(media, part["url"])
                if n == 2:  # a first try of part 2 broke off; the client sends it again
                    await anonymous.put(url, content=b"\0" * len(chunk), headers=part["headers"])
                put = await anonymous.put(url, content=chunk, headers=part["headers"])
                assert put.status_code == 200, put.text
                etags.append({"number": n, "etag": put.headers["etag"].strip('"')})
            if plan["parts"][0]["headers"]:  # the API's part route: the token is required
                no_token = await anonymous.put(absolute(media, plan["parts"][0]["url"]), content=b"x")
                assert no_token.status_code == ErrorCode.FORBIDDEN
        # Not complete yet: cannot be sent.
        early = await alice.post(
            f"/v1/conversations/{DM}/messages",
            json={"cmid": "v0", "kind": "video", "body": {"media_id": media_id, "duration_ms": 1000}},
        )
        assert early.status_code == ErrorCode.CONFLICT
        done = await alice.post("/v1/media:complete", json={"media_id": media_id, "parts": etags})
        assert done.status_code == 200, done.text
        assert (done.json()["size"], done.json()["mime"], done.json()["state"]) == (len(data), "video/webm", "ready")
        sent = await alice.post(
            f"/v1/conversations/{DM}/messages",
            json={"cmid": "v1", "kind": "video", "body": {"media_id": media_id, "duration_ms": 1000}},
        )
        assert sent.status_code == 200, sent.text
        described = (await bob.get(f"/v1/media/{media_id}")).json()
        whole = await fetch(absolute(media, described["url"]))
        assert whole.status_code == 200
        assert whole.content == data


async def test_quota(media_server: ServerProcess, tmp_path: Path) -> None:
    media_server.stop()
    srv = ServerProcess(
        tmp_path / "quota", env_overrides={**media_server.env_overrides, "FLARE_MEDIA_QUOTA_BYTES": "1000"}
    )
    srv.start()
    h = Harness(srv)
    try:
        await h.user("alice")
        async with api(h, "alice") as alice:
            assert (await alice.post("/v1/media", params={"kind": "file"}, content=b"a" * 600)).status_code == 201
            over = await alice.post("/v1/media", params={"kind": "file"}, content=b"b" * 600)
            assert over.status_code == ErrorCode.TOO_LARGE
            assert over.json()["error"]["detail"] == {"quota": 1000, "used": 600}
            big = await alice.post("/v1/media:presign", json={"kind": "file", "size": 5000})
            assert big.status_code == ErrorCode.TOO_LARGE
    finally:
        await h.close()
        srv.stop()


class ModerationStandIn:
    """The operator's moderation endpoint: blocks files named ``bad*`` (after ``delay_s``, so the message is sent
    first), allows the rest; records what it was asked."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.asked: list[dict[str, Any]] = []
        self.signed: list[bool] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = [line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line]
        fields = {k.strip().lower(): v.strip().decode() for k, v in lines}
        raw = await reader.readexactly(int(fields[b"content-length"]))
        self.signed.append(verify_signature(HOOK_SECRET, fields.get(b"flare-signature", ""), raw, now=time.time()))
        payload = json.loads(raw)
        self.asked.append(payload)
        bad = payload["name"].startswith("bad")
        if bad:
            await asyncio.sleep(self.delay_s)
        answer = json.dumps({"action": "block", "reason": "nudity"} if bad else {"action": "allow"}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(answer))
        writer.write(b"connection: close\r\n\r\n" + answer)
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_moderation_hook_and_admin_block(tmp_path: Path) -> None:
    hook = ModerationStandIn(delay_s=1.5)
    await hook.start()
    env = {
        "FLARE_MEDIA_MODERATION_URL": f"http://127.0.0.1:{hook.port}/judge",
        "FLARE_MEDIA_MODERATION_SECRET": HOOK_SECRET,
    }
    srv = ServerProcess(tmp_path / "data", env_overrides=env)
    srv.start()
    h = Harness(srv)
    try:
        for uid in ("alice", "bob"):
            await h.user(uid)
        async with api(h, "alice") as alice, api(h, "bob") as bob:
            good = (await alice.post("/v1/media", params={"kind": "file", "name": "ok.txt"}, content=b"fine")).json()
            assert good["moderation"] == "pending"

            async def verdict() -> str:
                return str((await alice.get(f"/v1/media/{good['media_id']}")).json().get("moderation"))

            assert await wait_for(lambda: _equals(verdict(), "allowed"))
            assert hook.asked[0]["media_id"] == good["media_id"]
            assert hook.asked[0]["url"].startswith(f"/v1/media/{good['media_id']}/content?")
            assert hook.signed == [True]  # Flare-Signature over the body, with the configured secret

            # Sent while pending; the block comes later: the message is recalled with the reason, the file goes.
            bad = (await alice.post("/v1/media", params={"kind": "file", "name": "bad.txt"}, content=b"evil")).json()
            sent = await alice.post(
                f"/v1/conversations/{DM}/messages",
                json={"cmid": "m1", "kind": "file", "body": {"media_id": bad["media_id"]}},
            )
            assert sent.status_code == 200, sent.text
            seq = sent.json()["seq"]

            async def recalled() -> bool:
                items = (await bob.get(f"/v1/conversations/{DM}/messages")).json()["items"]
                return any(m["seq"] == seq and m.get("state") == "recalled" for m in items)

            assert await wait_for(recalled)
            items = (await bob.get(f"/v1/conversations/{DM}/messages")).json()["items"]
            [event] = [m for m in items if m["kind"] == "recall"]
            assert event["body"]["reason"] == "nudity"
            assert (await alice.get(f"/v1/media/{bad['media_id']}")).status_code == ErrorCode.BLOCKED
            again = await alice.post(
                f"/v1/conversations/{DM}/messages",
                json={"cmid": "m2", "kind": "file", "body": {"media_id": bad["media_id"]}},
            )
            assert again.status_code == ErrorCode.BLOCKED
            orig = srv.data_dir / "media" / "objects" / "media" / bad["media_id"] / "orig"

            async def deleted() -> bool:
                return not orig.exists()

            assert await wait_for(deleted)  # right after the recall event is stored

            # An admin blocks an allowed media that was sent: recalled with the admin's reason.
            sent = await alice.post(
                f"/v1/conversations/{DM}/messages",
                json={"cmid": "m3", "kind": "file", "body": {"media_id": good["media_id"]}},
            )
            seq = sent.json()["seq"]
            headers = {"X-Admin-Key": srv.admin_key}
            blocked = await alice.post(
                f"/v1/admin/media/{good['media_id']}:block", json={"reason": "copyright"}, headers=headers
            )
            assert blocked.status_code == 200, blocked.text
            assert blocked.json()["moderation"] == "blocked"
            assert await recalled()
            missing = await alice.post("/v1/admin/media/nothing:block", json={}, headers=headers)
            assert missing.status_code == ErrorCode.NOT_FOUND
            assert (await bob.post(f"/v1/admin/media/{good['media_id']}:block", json={})).status_code == 401
    finally:
        await h.close()
        srv.stop()
        await hook.close()


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_voice_duration_read_from_the_file(media: Harness) -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 16000 * 2)  # 2 s
    async with api(media, "alice") as alice, api(media, "bob") as bob:
        up = await alice.post("/v1/media", params={"kind": "voice", "name": "hi.wav"}, content=out.getvalue())
        assert up.status_code == 201, up.text
        assert (up.json()["mime"], up.json()["duration_ms"]) == ("audio/x-wav", 2000)
        # No duration_ms from the client: the server's is stored.
        sent = await alice.post(
            f"/v1/conversations/{DM}/messages",
            json={"cmid": "v1", "kind": "voice", "body": {"media_id": up.json()["media_id"]}},
        )
        assert sent.status_code == 200, sent.text
        [message] = (await bob.get(f"/v1/conversations/{DM}/messages")).json()["items"]
        assert message["body"]["duration_ms"] == 2000


async def test_media_over_the_websocket_and_forward(media: Harness) -> None:
    """The WebSocket send path resolves media_id as REST does; a forward into a group lets its members download."""
    alice_ws = await media.device("alice")
    bob_ws = await media.device("bob")
    async with api(media, "alice") as alice, api(media, "eve") as eve:
        up = (await alice.post("/v1/media", params={"kind": "image"}, content=jpeg_with_gps((64, 48)))).json()
        ack = await alice_ws.send(DM, kind="image", body={"media_id": up["media_id"], "caption": "look"})
        got = await bob_ws.next_message()
        assert got.seq == ack.seq
        assert got.body["media_id"] == up["media_id"]
        assert (got.body["width"], got.body["height"], got.body["caption"]) == (64, 48, "look")
        refused = await alice.post(
            f"/v1/conversations/{DM}/messages", json={"cmid": "x", "kind": "image", "body": {"media_id": 5}}
        )
        assert refused.status_code == ErrorCode.INVALID
        # eve cannot read it until alice forwards the message into a group with her.
        assert (await eve.get(f"/v1/media/{up['media_id']}")).status_code == ErrorCode.FORBIDDEN
        group = (await alice.post("/v1/groups", json={"name": "g", "members": ["eve"]})).json()
        forwarded = await alice.post(
            f"/v1/conversations/{DM}/forward", json={"seqs": [ack.seq], "to": group["conv"], "cmid": "f1"}
        )
        assert forwarded.status_code == 200, forwarded.text
        assert (await eve.get(f"/v1/media/{up['media_id']}")).status_code == 200
        # Recalling the original keeps the file: the forwarded copy still references it.
        recall = await alice.post(f"/v1/conversations/{DM}/messages/{ack.seq}/ops", json={"op": "recall", "opid": "r"})
        assert recall.status_code == 200
        assert await stored_objects(media, up["media_id"]) == 2
        assert (await eve.get(f"/v1/media/{up['media_id']}")).status_code == 200


async def test_access_follows_join_seq_and_clear_history(media: Harness) -> None:
    """A member who joined after the message, or who cleared history past it, cannot download its media."""
    await media.user("carol")
    async with api(media, "alice") as alice, api(media, "bob") as bob, api(media, "carol") as carol:
        group = (await alice.post("/v1/groups", json={"name": "g", "members": ["bob"]})).json()
        conv = group["conv"]
        up = (await alice.post("/v1/media", params={"kind": "file", "name": "plan.txt"}, content=b"plan")).json()
        sent = await alice.post(
            f"/v1/conversations/{conv}/messages",
            json={"cmid": "p", "kind": "file", "body": {"media_id": up["media_id"]}},
        )
        seq = sent.json()["seq"]
        assert (await bob.get(f"/v1/media/{up['media_id']}")).status_code == 200
        added = await alice.post(f"/v1/groups/{group['group_id']}/members", json={"user_ids": ["carol"]})
        assert added.status_code == 200
        assert (await carol.get(f"/v1/media/{up['media_id']}")).status_code == ErrorCode.FORBIDDEN
        cleared = await bob.patch(f"/v1/conversations/{conv}/settings", json={"clear_to": seq})
        assert cleared.status_code == 200, cleared.text
        assert (await bob.get(f"/v1/media/{up['media_id']}")).status_code == ErrorCode.FORBIDDEN
        assert (await alice.get(f"/v1/media/{up['media_id']}")).status_code == 200  # the uploader always may
