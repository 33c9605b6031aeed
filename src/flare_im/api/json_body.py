"""REST request bodies are read by the decoder that reads WebSocket frames (msgspec), so the same JSON gets the
same answer on both transports (docs/protocol.md §11): a lone surrogate, ``NaN`` or ``Infinity`` is malformed
JSON (400), a number too large for a float is invalid (422), and a body nested too deeply to read is 400. The
standard library's reader, which FastAPI uses, takes all of them and lets them fail later as a 500.

Message bodies are then checked by ``flare_im.protocol.values.check_body`` in the handlers, as the WebSocket
codec checks them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from flare_im.protocol.errors import ErrorCode

_decode = msgspec.json.Decoder().decode


def decode_json_body(data: bytes) -> Any:
    """The JSON value of a request body, or an HTTPException (400 or 422) that says what is wrong with it."""
    try:
        return _decode(data)
    except msgspec.ValidationError as exc:  # a number out of range ("1e400")
        raise HTTPException(int(ErrorCode.INVALID), f"body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise HTTPException(int(ErrorCode.BAD_REQUEST), f"body: malformed JSON: {exc}") from None
    except RecursionError:
        raise HTTPException(int(ErrorCode.BAD_REQUEST), "body: unreadable JSON: nested too deeply") from None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json_body(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose handler reads its JSON body with ``decode_json_body``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_json
