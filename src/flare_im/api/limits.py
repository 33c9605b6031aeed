"""What an HTTP client may cost the API before it has proved anything: request-body size, the time it takes to
send its headers, and how many connections it holds.

- ``BodyLimit`` (ASGI): a request whose ``Content-Length`` is over its limit is answered 413 before a byte of
  the body is read; a chunked body is counted as it arrives and cut off with 413 at the limit. A request
  without valid credentials (a verified access token, the admin key) gets the small ``anonymous`` limit
  whatever its path, so nobody can make the server buffer megabytes without an account.
- ``guarded_h11(...)``: uvicorn's HTTP/1.1 protocol with a header-read deadline (a connection that has not
  sent a complete request head within ``header_timeout_s`` gets 408 and is closed: a slow-loris peer cannot
  hold it) and the per-IP connection cap of ``netlimits.PeerConnections`` (past it: 429 and close).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from flare_im.netlimits import PeerConnections, peer_address
from flare_im.protocol.errors import RETRYABLE, ErrorCode, FlareError
from flare_im.services.auth import AuthService


@dataclass(frozen=True, slots=True)
class BodyLimits:
    anonymous: int = 16 * 1024  # no valid credentials: login, registration, refresh, and every refusal
    default: int = 1024 * 1024  # an authenticated request
    # Larger limits by path prefix for authenticated requests (admin imports of up to 1,000 users).
    by_prefix: tuple[tuple[str, int], ...] = (("/v1/admin/", 4 * 1024 * 1024),)

    def of(self, path: str, authenticated: bool) -> int:
        if not authenticated:
            return self.anonymous
        for prefix, limit in self.by_prefix:
            if path.startswith(prefix):
                return limit
        return self.default


def has_valid_credentials(auth: AuthService) -> Callable[[dict[str, str]], bool]:
    """Whether a request's headers carry the admin key or a correctly signed, unexpired access token. Cheap
    (an HMAC compare, a JWT signature): it only decides how much body the request may send; the route still
    checks the credentials fully (revocation, the user) and answers 401 itself."""

    def check(headers: dict[str, str]) -> bool:
        try:
            if key := headers.get("x-admin-key"):
                auth.check_admin_key(key)
                return True
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                auth.decode_access_token(token.strip())
                return True
        except FlareError:
            return False
        return False

    return check


def error_body(code: ErrorCode, message: str) -> bytes:
    """The documented REST error shape (api/errors.py), for answers given below FastAPI."""
    error = {"code": int(code), "name": code.name.lower(), "message": message, "retryable": code in RETRYABLE}
    return json.dumps({"error": error}, separators=(",", ":")).encode()


class BodyLimit:
    """ASGI middleware: the request-body limits of ``BodyLimits``. ``authenticated(headers)`` says whether a
    request carries credentials that verify (cheap checks only: a JWT signature, an HMAC compare)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, authenticated: Callable[[dict[str, str]], bool]) -> None:
        self.app = app
        self.limits = limits
        self.authenticated = authenticated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        # Most bodies are small: the credentials are looked at only for a body past the anonymous limit.
        limit = self.limits.anonymous
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _answer(send, ErrorCode.BAD_REQUEST, "Content-Length must be a number of bytes")
                return
            if int(declared) > limit:
                limit = self.limits.of(scope["path"], self.authenticated(headers))
                if int(declared) > limit:
                    await _answer(send, ErrorCode.TOO_LARGE, f"request body over {limit} bytes")
                    return
        received, raised = 0, declared is not None

        async def limited_receive() -> Message:
            nonlocal received, limit, raised
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not raised:  # a chunked body past the anonymous limit
                    limit, raised = self.limits.of(scope["path"], self.authenticated(headers)), True
                if received > limit:  # a chunked body, or one longer than it declared
                    # connection: close, so that uvicorn does not go on reading the rest for a next request
                    raise HTTPException(
                        int(ErrorCode.TOO_LARGE), f"request body over {limit} bytes", headers={"connection": "close"}
                    )
            return message

        await self.app(scope, limited_receive, send)


async def _answer(send: Send, code: ErrorCode, message: str) -> None:
    body = error_body(code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The body was not read: the connection cannot carry another request.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": int(code), "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _raw_response(code: ErrorCode, reason: str, message: str, extra: str = "") -> bytes:
    body = error_body(code, message)
    head = (
        f"HTTP/1.1 {int(code)} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


# A response sent while the client is still sending its body (413): how long, and how much more, the server
# reads and drops after its answer, so that the client sees the answer rather than a reset.
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024


class _LingeringTransport:
    """The TCP transport as uvicorn sees it, except ``close``: while the request body is still arriving, close
    sends FIN, drops what the client goes on sending (up to LINGER_BYTES, for LINGER_S), and only then closes.
    Closing at once with unread data would make the kernel send a reset, which destroys the answer in the
    client's receive buffer (nginx's lingering_close, for the same reason)."""

    def __init__(self, transport: asyncio.Transport, protocol: _GuardedH11) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        if self._protocol.lingering or self._transport.is_closing():
            return
        if self._protocol.conn.their_state is not h11.SEND_BODY or not self._transport.can_write_eof():
            self._transport.close()
            return
        self._protocol.linger()
        self._transport.write_eof()
        self._transport.resume_reading()

    def really_close(self) -> None:
        self._transport.close()


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a per-IP connection cap (set by ``guarded_h11``)."""

    peers: PeerConnections
    header_timeout_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self.lingering = False
        self._lingered = 0
        self._linger_timer: asyncio.TimerHandle | None = None

    def linger(self) -> None:
        self.lingering = True
        self._linger_timer = self.loop.call_later(LINGER_S, self._end_linger)

    def _end_linger(self) -> None:
        self._linger_timer = None
        assert isinstance(self.transport, _LingeringTransport)
        self.transport.really_close()

    def eof_received(self) -> None:
        if self.lingering:  # the client has stopped sending: nothing more to drop
            self._end_linger_now()
            return
        super().eof_received()

    def _end_linger_now(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._end_linger()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._address = peer_address(transport.get_extra_info("peername"))
        if not self.peers.acquire(self._address):
            message = f"too many connections from {self._address}; close some and retry"
            transport.write(_raw_response(ErrorCode.RATE_LIMITED, "Too Many Requests", message, "retry-after: 1\r\n"))
            transport.close()
            return
        self._counted = True
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # after our answer: drop what the client still sends, up to a bound
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self._end_linger_now()
            return
        super().data_received(data)
        # h11 leaves the client's state IDLE until a whole request head has arrived.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self._header_timer is None:
                self._arm_header_timer()
        elif self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._counted:
            self._counted = False
            self.peers.release(self._address)
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being written; uvicorn's keep-alive timer takes over after it
        message = f"no complete request head within {self.header_timeout_s:g} s"
        self.transport.write(_raw_response(ErrorCode.REQUEST_TIMEOUT, "Request Timeout", message))
        self.transport.close()


def guarded_h11(peers: PeerConnections, *, header_timeout_s: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for one listener."""
    return type("GuardedH11", (_GuardedH11,), {"peers": peers, "header_timeout_s": header_timeout_s})
