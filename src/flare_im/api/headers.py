"""Response headers every API reply carries (security headers), and CORS for the origins an operator allows.

The API answers JSON to programs; a browser that loads a reply as a page, frames it or guesses its type is
refused by the headers below. Pages the server serves itself (``/docs``, ``/redoc``, ``/app``) set their own
Content-Security-Policy, which is kept; JSON replies get one that allows nothing. ``Strict-Transport-Security``
only with TLS in Flare itself (behind a TLS-ending proxy, the proxy sets it). ``Cache-Control: no-store`` on
JSON, which may hold tokens, unless the route set its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_JSON_ONLY = (
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
)
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    """ASGI middleware adding the headers above to each HTTP reply that does not already carry them."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self._app = app
        self._hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                wanted = list(_ALWAYS)
                if any(name == b"content-type" and value.startswith(b"application/json") for name, value in headers):
                    wanted += _JSON_ONLY
                if self._hsts:
                    wanted.append(_HSTS)
                headers += [(name, value) for name, value in wanted if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_with_headers)


def with_cors(app: ASGIApp, origins: Iterable[str]) -> ASGIApp:
    """``app`` answering cross-origin requests from ``origins`` (``*`` for any); unchanged when there are none.

    Credentials travel in the Authorization header, never in cookies, so no origin gets credentialed CORS; the
    admin key is not among the allowed headers (admin calls come from servers, not from browsers)."""
    allowed = [o.strip() for o in origins if o.strip()]
    if not allowed:
        return app
    options: dict[str, Any] = {
        "allow_origins": allowed,
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type"],
        "expose_headers": ["Retry-After"],
        "allow_credentials": False,
        "max_age": 600,
    }
    return CORSMiddleware(app, **options)
