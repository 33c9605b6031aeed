"""Every REST error in one shape: ``{"error": {"code", "name", "message", "retryable", "detail"?}}``.

The HTTP status equals ``code``, a code of the protocol's error tree (``flare_im.protocol.errors``). Besides a
``FlareError`` from the services, this covers what the framework answers by itself: a path the API does not
have (404), a method the path does not have (405, with an ``Allow`` header listing all the methods it has;
``OPTIONS`` gets 204 with that header, OPTIONS included), a
body or query that fails validation (422, or 400 when the body is not JSON), and an unexpected exception (500,
retryable). None of them is FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from flare_im.protocol.errors import RETRYABLE, ErrorCode, FlareError

_CODES = frozenset(int(code) for code in ErrorCode)


def error_response(
    code: ErrorCode,
    message: str,
    retryable: bool,
    detail: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The documented error body, with the HTTP status equal to ``code``."""
    error: dict[str, Any] = {"code": int(code), "name": code.name.lower(), "message": message, "retryable": retryable}
    if detail is not None:
        error["detail"] = detail
    return JSONResponse({"error": error}, status_code=int(code), headers=headers)


def _framework_error(request: Request, exc: HTTPException) -> Response:
    """An error Starlette raised by itself (routing, static files) in the documented shape, its headers kept."""
    status = exc.status_code
    # A status not in the tree (Starlette raises none today) becomes the nearest code; the message keeps the reason.
    nearest = ErrorCode.INTERNAL if status >= 500 else ErrorCode.BAD_REQUEST
    code = ErrorCode(status) if status in _CODES else nearest
    headers = dict(exc.headers or {})
    where = f"{request.method} {request.url.path}"
    message = f"{where}: {exc.detail}"
    if code is ErrorCode.NOT_FOUND and exc.detail == _phrase(status):
        message = f"{where}: no such path"
    elif code is ErrorCode.METHOD_NOT_ALLOWED:
        if allowed := _allowed_methods(request):
            headers["Allow"] = ", ".join(allowed)
            if request.method == "OPTIONS":  # what the path takes (RFC 9110 §9.3.7): no body, not an error
                return Response(status_code=204, headers={"Allow": ", ".join([*allowed, "OPTIONS"])})
        message = f"{where}: method not allowed; this path takes {headers.get('Allow', 'no method')}"
    return error_response(code, message, code in RETRYABLE, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method of the routes with this path. FastAPI makes one route per method and Starlette's 405 names
    only the first route's: ``/v1/me`` would say ``Allow: GET`` though it also takes PATCH."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is Match.PARTIAL:
            methods |= route.methods
    return sorted(methods)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def install_error_handlers(app: FastAPI) -> None:
    """Registers on ``app`` the handlers that answer every error in the documented shape."""

    @app.exception_handler(FlareError)
    async def on_flare_error(_: Request, exc: FlareError) -> JSONResponse:
        return error_response(exc.code, exc.message, exc.retryable, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        code = ErrorCode.BAD_REQUEST if first.get("type") == "json_invalid" else ErrorCode.INVALID
        return error_response(code, f"{where}: {first.get('msg', 'invalid request')}", False)

    @app.exception_handler(HTTPException)
    async def on_http_exception(request: Request, exc: HTTPException) -> Response:
        return _framework_error(request, exc)

    # Starlette's outermost middleware sends this reply, then re-raises the exception for the server to log.
    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(ErrorCode.INTERNAL, "internal error", True)
