"""A local stand-in of APNs (Apple's provider API, token authentication) over HTTP/2 and TLS.

It checks what Apple checks and answers as Apple answers: ``POST /3/device/<hex token>`` over HTTP/2 only;
``authorization: bearer <ES256 JWT>`` verified against the team key's public key (``kid`` = key id, ``iss`` =
team id, ``iat`` within the last hour, else 403 ``ExpiredProviderToken``; a wrong signature or kid: 403
``InvalidProviderToken``); ``apns-topic`` must be the app's bundle id (``.voip`` for ``apns-push-type: voip``:
else 400 ``DeviceTokenNotForTopic``); background pushes must have priority 5; a payload over 4096 bytes (5120
for VoIP) is 413 ``PayloadTooLarge``; tokens in ``unregistered`` get 410 ``Unregistered`` with a timestamp.
Errors are JSON ``{"reason": ...}`` with the ``apns-id`` echoed, as Apple sends them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable

import jwt
from tests.fakes.server import FakeProvider, Request, Response

_HEX_TOKEN = re.compile(r"[0-9a-f]{64,200}")


class FakeApns(FakeProvider):
    def __init__(
        self,
        public_key_pem: bytes,
        key_id: str,
        team_id: str,
        topic: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.public_key_pem, self.key_id, self.team_id, self.topic = public_key_pem, key_id, team_id, topic
        self.clock = clock
        self.unregistered: set[str] = set()
        self.tokens_seen: list[str] = []  # distinct provider tokens, in the order first seen
        self._verified: dict[str, float] = {}  # provider token -> its iat

    def _authenticate(self, request: Request) -> str:
        """'' if the provider token is good, else the reason Apple gives."""
        auth = request.headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return "MissingProviderToken"
        token = auth[len("bearer ") :]
        iat = self._verified.get(token)
        if iat is None:
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(token, self.public_key_pem, algorithms=["ES256"], options={"verify_iat": False})
            except jwt.PyJWTError:
                return "InvalidProviderToken"
            if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
                return "InvalidProviderToken"
            iat = float(claims["iat"])
            self._verified[token] = iat
            self.tokens_seen.append(token)
        if self.clock() - iat > 3600:
            return "ExpiredProviderToken"
        return ""

    async def handle(self, request: Request) -> Response:
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4())
        headers = {"apns-id": apns_id}

        def error(status: int, reason: str, extra: dict[str, object] | None = None) -> Response:
            return Response.of_json(status, {"reason": reason, **(extra or {})}, headers)

        if request.http_version != "2":
            return Response(505, b"APNs speaks HTTP/2 only")
        match = re.fullmatch(r"/3/device/([^/]+)", request.path)
        if request.method != "POST" or match is None:
            return error(405 if match else 404, "MethodNotAllowed" if match else "BadPath")
        if reason := self._authenticate(request):
            return error(403, reason)
        if failure := self.take_failure():
            extra = {"retry-after": failure.retry_after} if failure.retry_after else {}
            response = error(failure.status, failure.reason)
            response.headers.update(extra)
            return response
        device = match.group(1)
        if not _HEX_TOKEN.fullmatch(device):
            return error(400, "BadDeviceToken")
        if device in self.unregistered:
            return error(410, "Unregistered", {"timestamp": int(self.clock() * 1000)})
        push_type = request.headers.get("apns-push-type", "alert")
        topic = request.headers.get("apns-topic", "")
        if not topic:
            return error(400, "MissingTopic")
        if topic != (self.topic + ".voip" if push_type == "voip" else self.topic):
            return error(400, "DeviceTokenNotForTopic")
        if push_type not in ("alert", "background", "voip"):
            return error(400, "InvalidPushType")
        priority = request.headers.get("apns-priority", "10")
        if priority not in ("5", "10") or (push_type == "background" and priority != "5"):
            return error(400, "BadPriority")
        if len(request.headers.get("apns-collapse-id", "").encode()) > 64:
            return error(400, "BadCollapseId")
        if "apns-id" in request.headers:
            try:
                uuid.UUID(request.headers["apns-id"])
            except ValueError:
                return error(400, "BadMessageId")
        if len(request.body) > (5120 if push_type == "voip" else 4096):
            return error(413, "PayloadTooLarge")
        try:
            payload = json.loads(request.body)
        except ValueError:
            return error(400, "BadPayload")
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return error(400, "PayloadEmpty")
        return Response(200, b"", headers)
