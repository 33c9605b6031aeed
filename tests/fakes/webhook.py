"""A local webhook receiver: checks ``Flare-Signature`` over the raw body (HMAC-SHA256 of ``"<t>.<body>"``, ``t``
within five minutes, else 401) and records the JSON it accepted; ``dead`` device tokens get 410."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from tests.fakes.server import FakeProvider, Request, Response


class FakeWebhookReceiver(FakeProvider):
    def __init__(self, secret: str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.secret = secret
        self.clock = clock
        self.dead: set[str] = set()
        self.received: list[Any] = []

    def _signed(self, request: Request) -> bool:
        # Written from the documented scheme, not with the adapter's helper.
        parts = dict(p.split("=", 1) for p in request.headers.get("flare-signature", "").split(",") if "=" in p)
        if not parts.get("t", "").isdigit() or abs(self.clock() - int(parts["t"])) > 300:
            return False
        mac = hmac.new(self.secret.encode(), parts["t"].encode() + b"." + request.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(mac, parts.get("v1", ""))

    async def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(405)
        if not self._signed(request):
            return Response(401, b"bad signature")
        if failure := self.take_failure():
            headers = {"retry-after": failure.retry_after} if failure.retry_after else {}
            return Response(failure.status, failure.reason.encode(), headers)
        message = request.json()
        if message.get("token") in self.dead:
            return Response(410, b"unregistered")
        self.received.append(message)
        return Response.of_json(202, {"ok": True}, {"x-request-id": f"r{len(self.received)}"})
