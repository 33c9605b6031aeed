"""One error tree for the whole server: stable numeric codes, a message, and whether retrying helps.

Codes follow HTTP ranges so the REST API and the WebSocket protocol share them. WebSocket close codes
used by the server are in the 4000-4999 range reserved for applications (see docs/protocol.md).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    BAD_REQUEST = 400  # malformed frame or body (not JSON/MessagePack), unknown or missing frame type
    UNAUTHORIZED = 401  # missing, invalid or expired token; wrong password
    FORBIDDEN = 403  # authenticated but not allowed (not a member, forged sender, wrong role)
    NOT_FOUND = 404  # user, group or conversation does not exist; REST: no such path
    METHOD_NOT_ALLOWED = 405  # REST only: the path exists, not with this method (the Allow header lists them)
    REQUEST_TIMEOUT = 408  # REST only: no complete request head within api_header_timeout_s; reconnect
    CONFLICT = 409  # resource already exists (username taken); an edit based on an old version
    GONE = 410  # the message was recalled/deleted, or a range is no longer served (history cleared): resync
    TOO_LARGE = 413  # frame or field over its size limit
    OUT_OF_RANGE = 416  # seq range outside what the conversation holds for this user
    INVALID = 422  # well-formed but a field is missing, of the wrong type or out of bounds
    REJECTED = 424  # an integration's before_send webhook refused the message (detail: its code and reason)
    RATE_LIMITED = 429  # per-connection or per-user rate limit; retry after a pause
    BLOCKED = 451  # the content filter refused the message; sending it again will not help
    INTERNAL = 500  # unexpected server error; retrying may help
    UNAVAILABLE = 503  # server shutting down or a backend is unavailable; retry elsewhere/later


RETRYABLE = frozenset({ErrorCode.REQUEST_TIMEOUT, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL, ErrorCode.UNAVAILABLE})


class FlareError(Exception):
    """An error a client can see. Raised by services, turned into an error frame or HTTP reply."""

    def __init__(
        self, code: ErrorCode, message: str, *, retryable: bool | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = code in RETRYABLE if retryable is None else retryable
        self.detail = detail  # machine-readable context (e.g. the current version on an edit conflict)

    def __repr__(self) -> str:
        return f"FlareError({self.code.name}, {self.message!r})"


class AccountRefused(FlareError):
    """The account is banned or deleted (401, not retryable: its credentials are refused, whatever they are):
    login, refresh, REST calls and the WebSocket's ``auth`` are refused with the reason in ``detail``; the
    WebSocket then closes with ``close_code``."""

    def __init__(self, message: str, close_code: int, detail: dict[str, Any]) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, message, retryable=False, detail=detail)
        self.close_code = close_code


def bad_request(message: str) -> FlareError:
    return FlareError(ErrorCode.BAD_REQUEST, message)


def invalid(message: str) -> FlareError:
    return FlareError(ErrorCode.INVALID, message)


def forbidden(message: str) -> FlareError:
    return FlareError(ErrorCode.FORBIDDEN, message)


def not_found(message: str) -> FlareError:
    return FlareError(ErrorCode.NOT_FOUND, message)


def unauthorized(message: str) -> FlareError:
    return FlareError(ErrorCode.UNAUTHORIZED, message)


class CloseCode(IntEnum):
    """WebSocket close codes the server sends (4000-4999 are the application's range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009  # a frame over max_frame_size (sent by the transport)
    TRY_AGAIN_LATER = 1013  # this address already holds ws_connections_per_ip connections
    AUTH_FAILED = 4001  # authenticate rejected (bad/expired token); do not retry with the same token
    AUTH_TIMEOUT = 4002  # no authenticate frame within auth_timeout
    PROTOCOL_VIOLATION = 4003  # first frame was not authenticate, or authenticate sent twice
    REPLACED = 4004  # the same user+device connected again elsewhere; this connection is stale
    SLOW_CONSUMER = 4008  # the client did not read its frames fast enough; reconnect and sync
    BANNED = 4010  # an admin banned the user (the reason is in the kick frame and the close); do not reconnect
    KICKED = 4011  # an admin disconnected this device; its tokens still work: reconnect only when the user acts
    TOKENS_REVOKED = 4012  # an admin revoked every token of the user; log in again
    ACCOUNT_DELETED = 4013  # an admin deleted the account; never reconnect
    RATE_LIMITED = 4029  # kept flooding after rate-limit errors
    SERVER_RESTART = 4100  # server shutting down; reconnect (after retry_after_ms) and sync
