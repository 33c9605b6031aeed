"""The media moderation hook (F4): every completed upload is described to an HTTP endpoint of the operator's,
which answers allow or block.

The request is ``POST <media_moderation_url>`` with JSON ``{media_id, owner, kind, mime, size, name, width,
height, url}`` (``url``: a signed URL of the file, valid ``media_url_ttl_s``; on the local store a path of the
API, to resolve against its address). The answer is ``{"action": "allow" | "block", "reason"?: str}``. Until
it arrives the media is ``pending`` and may be sent; a block makes it unsendable and, if it was sent already,
recalls every message that references it with the reason as a system reason, then deletes the file. A hook that
fails (not 2xx, not JSON, a timeout) is asked again with a growing delay, ``MAX_TRIES`` times in all; after that
the media stays pending (logged). An admin can block a media at any time (``POST /v1/admin/media/{id}:block``).
With ``media_moderation_secret`` set, each request carries ``Flare-Signature`` (flare_im/signing.py), as the
webhooks do, so the endpoint can tell Flare's requests from anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import httpx

from flare_im.backends.media.base import ALLOWED, BLOCKED, Media
from flare_im.services.media import ORIGINAL, MediaService
from flare_im.signing import SIGNATURE_HEADER, signature

log = logging.getLogger(__name__)

MAX_TRIES = 5
FIRST_DELAY_S = 1.0
MAX_IN_FLIGHT = 64  # uploads being judged at once; more wait their turn


class ModerationHook:
    def __init__(self, media: MediaService, url: str, *, secret: str = "", timeout_s: float = 10.0) -> None:
        self._media = media
        self._url = url
        self._secret = secret  # signs each request (Flare-Signature, flare_im/signing.py) when set
        self._client = httpx.AsyncClient(timeout=timeout_s, trust_env=False)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    def submit(self, media: Media) -> None:
        """Ask about ``media`` in the background (called once its upload is complete)."""
        task = asyncio.create_task(self._judge(media), name=f"flare-moderation-{media.media_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _judge(self, media: Media) -> None:
        delay = FIRST_DELAY_S
        async with self._slots:
            for attempt in range(1, MAX_TRIES + 1):
                try:
                    action, reason = await self._ask(media)
                except (httpx.HTTPError, ValueError) as exc:
                    if attempt == MAX_TRIES:
                        log.warning(
                            "moderation hook: %s stays pending after %d tries (%s)", media.media_id, attempt, exc
                        )
                        return
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                if action == "block":
                    await block(self._media, media.media_id, reason or "blocked by moderation")
                else:
                    await self._media.set_moderation(media.media_id, ALLOWED)
                return

    async def _ask(self, media: Media) -> tuple[str, str]:
        url, _ = await self._media.download_url(media, ORIGINAL)
        payload = {
            "media_id": media.media_id,
            "owner": media.owner,
            "kind": media.kind,
            "mime": media.mime,
            "size": media.size,
            "name": media.name,
            "width": media.width,
            "height": media.height,
            "url": url,
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, int(time.time()), body)
        answer = await self._client.post(self._url, content=body, headers=headers)
        answer.raise_for_status()
        verdict = answer.json()
        action = verdict.get("action") if isinstance(verdict, dict) else None
        if action not in ("allow", "block"):
            raise ValueError(f"the hook answered {verdict!r}, not an action allow or block")
        reason = verdict.get("reason", "")
        return str(action), reason if isinstance(reason, str) else ""

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()


async def block(media: MediaService, media_id: str, reason: str) -> Media | None:
    """Block a media: it can no longer be sent or downloaded; each message that sent it is recalled with
    ``reason``, and its file deleted. None when there is no such media."""
    judged = await media.set_moderation(media_id, BLOCKED)
    if judged is None:
        return None
    recall = media.recall_message
    for ref in await media.store.refs(media_id):
        if recall is not None:
            try:
                await recall(ref.conv, ref.seq, reason)
            except Exception:
                log.exception("recalling %s seq %d (media %s blocked) failed", ref.conv, ref.seq, media_id)
    await media.delete(media_id)  # what the recalls left (a media never sent, or a recall that failed)
    return judged
