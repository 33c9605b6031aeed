"""A local stand-in of FCM HTTP v1 and Google's OAuth 2 token endpoint.

``POST /token``: the service-account flow (grant_type ``urn:ietf:params:oauth:grant-type:jwt-bearer``); the
assertion is verified against the account's public key (RS256, ``iss`` = client_email, ``aud`` = the token URI,
the firebase.messaging scope, at most an hour long); answers ``{"access_token", "expires_in", "token_type"}`` or
``{"error": "invalid_grant", ...}``.

``POST /v1/projects/<project>/messages:send``: the bearer token must be one this endpoint issued and not expired
(else 401 UNAUTHENTICATED); the message is checked as FCM checks it (a token; string data values; no reserved
data keys; android priority and ttl); a token in ``unregistered`` gets 404 with errorCode UNREGISTERED, one that
does not look like a registration token 400 INVALID_ARGUMENT. Errors use FCM's format: ``{"error": {"code",
"message", "status", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode"}]}}``.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import jwt
from tests.fakes.server import FakeProvider, Request, Response

from flare_im.backends.push.fcm import GRANT_TYPE, SCOPE

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_TOKEN = re.compile(r"[A-Za-z0-9_:\-.]{20,4096}")
_RESERVED = ("from", "message_type", "collapse_key", "notification")


def fcm_error(
    status: int, error_code: str, message: str = "", retry_after: str | None = None, *, fcm_detail: bool = True
) -> Response:
    error: dict[str, object] = {"code": status, "message": message or error_code, "status": _STATUS.get(status, "")}
    if fcm_detail:
        error["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]
    headers = {"retry-after": retry_after} if retry_after else {}
    return Response.of_json(status, {"error": error}, headers)


class FakeFcm(FakeProvider):
    def __init__(
        self,
        public_key_pem: bytes,
        client_email: str,
        project_id: str,
        *,
        clock: Callable[[], float] = time.time,
        token_lifetime_s: int = 3599,
    ) -> None:
        super().__init__()
        self.public_key_pem, self.client_email, self.project_id = public_key_pem, client_email, project_id
        self.clock = clock
        self.token_lifetime_s = token_lifetime_s
        self.token_uri = ""  # the audience assertions must name: set to <base url>/token once serving
        self.issued: dict[str, float] = {}  # access token -> expiry
        self.assertions: list[dict[str, object]] = []  # verified assertion claims, in order
        self.unregistered: set[str] = set()
        self.messages: list[dict[str, object]] = []  # accepted messages

    def revoke_all(self) -> None:
        """Every issued access token stops working (what an expiry looks like to ``messages:send``)."""
        self.issued.clear()

    async def handle(self, request: Request) -> Response:
        if request.path == "/token":
            return self._token(request)
        if request.path == f"/v1/projects/{self.project_id}/messages:send" and request.method == "POST":
            return self._send(request)
        return fcm_error(404, "", "Not found", fcm_detail=False)

    def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}

        def refuse(description: str) -> Response:
            return Response.of_json(400, {"error": "invalid_grant", "error_description": description})

        if form.get("grant_type") != GRANT_TYPE:
            return Response.of_json(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                self.public_key_pem,
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "aud", "iat", "exp"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            return refuse(f"Invalid JWT Signature or claims: {exc}")
        if claims["iss"] != self.client_email:
            return refuse("Invalid issuer")
        if SCOPE not in str(claims.get("scope", "")).split():
            return Response.of_json(400, {"error": "invalid_scope"})
        now = self.clock()
        if not (claims["iat"] - 300 <= now <= claims["exp"]) or claims["exp"] - claims["iat"] > 3600:
            return refuse("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe")
        self.assertions.append(claims)
        token = "ya29." + secrets.token_urlsafe(24)
        self.issued[token] = now + self.token_lifetime_s
        return Response.of_json(
            200, {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}
        )

    def _send(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if token not in self.issued or self.clock() >= self.issued[token]:
            message = "Request had invalid authentication credentials. Expected OAuth 2 access token."
            return fcm_error(401, "", message, fcm_detail=False)
        if failure := self.take_failure():
            return fcm_error(failure.status, failure.reason, failure.reason, failure.retry_after)
        try:
            message = request.json()["message"]
        except (ValueError, KeyError, TypeError):
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        device = message.get("token")
        if not isinstance(device, str) or not _TOKEN.fullmatch(device):
            return fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token")
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data': values must be strings")
        if any(k in _RESERVED or k.startswith(("google.", "gcm.")) for k in data):
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid data payload key")
        android = message.get("android", {})
        if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.priority'")
        if "ttl" in android and not re.fullmatch(r"\d+(\.\d+)?s", str(android["ttl"])):
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'")
        if device in self.unregistered:
            return fcm_error(404, "UNREGISTERED", "Requested entity was not found.")
        self.messages.append(message)
        return Response.of_json(200, {"name": f"projects/{self.project_id}/messages/0:{len(self.messages)}"})
