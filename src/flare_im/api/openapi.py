"""The OpenAPI document at ``/openapi.json`` says what the server does (docs/protocol.md §11).

Two places make it so:

* ``errors(*codes)`` builds a route's ``responses=`` from the error codes it can answer besides the common
  ones: each is the shared ``Error`` component, the body of every REST error (api/errors.py).
* ``install_openapi(app)`` post-processes the document FastAPI generates. It adds the ``Error`` component and
  the errors every operation can answer (400 and 413 with a body, 401 with credentials, 404 with path
  parameters, 422, 429, 500), replaces FastAPI's ``{"detail": [...]}`` 422 (``HTTPValidationError``), which the
  server never sends, and writes the bound 2**63-1 so that tools reading numbers as doubles keep it.

``OPTIONS`` is the HTTP layer's, as in every framework: not an operation of the document; api/errors.py answers
it 204 with the path's ``Allow``.

Credentials are security schemes (``bearer``: the access token; ``adminKey``: the ``X-Admin-Key`` header),
declared by the dependencies that check them (``BEARER``, ``ADMIN_KEY``), so each operation names its own.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.security import APIKeyHeader, HTTPBearer

from flare_im.api.schemas import body_schemas
from flare_im.protocol.errors import RETRYABLE, ErrorCode

ERROR_REF = "#/components/schemas/Error"
BEARER = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    scheme_name="bearer",
    description="An access token: from login, registration or refresh, or issued by the admin API.",
)
ADMIN_KEY = APIKeyHeader(
    name="X-Admin-Key",
    auto_error=False,
    scheme_name="adminKey",
    description="The server's admin key (data_dir/admin.key, or the admin_key setting): server-to-server only.",
)

# What each status means when an endpoint answers it for a reason of its own (the tables of protocol.md §11).
_REASONS: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "The body is not JSON, or the request is not well-formed HTTP.",
    ErrorCode.UNAUTHORIZED: "Credentials missing, invalid, expired or revoked.",
    ErrorCode.FORBIDDEN: "Not allowed.",
    ErrorCode.NOT_FOUND: "Not found (or no such path).",
    ErrorCode.CONFLICT: "Conflict.",
    ErrorCode.GONE: "Recalled or deleted, or a range no longer served (`detail` says which).",
    ErrorCode.TOO_LARGE: "The request body, or a message body, is over its limit.",
    ErrorCode.OUT_OF_RANGE: "A seq beyond what the conversation holds.",
    ErrorCode.INVALID: "A body, path or query parameter failed validation; `message` names the field.",
    ErrorCode.RATE_LIMITED: "Over a rate or connection limit; retry after `Retry-After` seconds when given.",
    ErrorCode.BLOCKED: "The content filter refused the text.",
    ErrorCode.REJECTED: "An integration (before_send webhook) refused the message; `detail` has its code and reason.",
    ErrorCode.INTERNAL: "Unexpected server error.",
    ErrorCode.UNAVAILABLE: "Busy or shutting down; retry after `Retry-After` seconds.",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (429 of login, registration and connections; 503).",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "description": "Every REST error (docs/protocol.md §5): the HTTP status equals `error.code`.",
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "name", "message", "retryable"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "integer", "enum": [int(c) for c in ErrorCode]},
                "name": {"type": "string", "enum": [c.name.lower() for c in ErrorCode]},
                "message": {"type": "string", "description": "For people; branch on `code` or `name`."},
                "retryable": {"type": "boolean", "description": "Whether sending it again may succeed."},
                "detail": {"type": "object", "description": "Machine-readable context of some errors."},
            },
        }
    },
}


def error_response(code: ErrorCode, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI response object of an error ``code``."""
    out: dict[str, Any] = {
        "description": f"`{code.name.lower()}`{' (retryable)' if code in RETRYABLE else ''}: "
        + (description or _REASONS.get(code, code.name.lower())),
        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
    }
    if code in (ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE):
        out["headers"] = _RETRY_AFTER
    return out


def errors(*codes: ErrorCode | tuple[ErrorCode, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the errors it answers besides those of every operation, each a code or a
    (code, why) pair."""
    out: dict[int | str, dict[str, Any]] = {}
    for item in codes:
        code, why = item if isinstance(item, tuple) else (item, None)
        out[int(code)] = error_response(code, why)
    return out


def _common_errors(operation: dict[str, Any]) -> list[ErrorCode]:
    """The errors an operation can answer whatever it does (protocol.md §11, "Errors every endpoint can answer")."""
    params = operation.get("parameters", [])
    codes = [ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL]
    if operation.get("security"):
        codes.append(ErrorCode.UNAUTHORIZED)
    if "requestBody" in operation:
        codes += [ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE]
    if any(p.get("in") == "path" for p in params):
        codes.append(ErrorCode.NOT_FOUND)  # a path parameter holding "/" or "%2F" names another path
    if params or "requestBody" in operation:
        codes.append(ErrorCode.INVALID)
    return codes


_SCOPE_REFUSAL = "the admin key's scope does not cover this endpoint (a `read` key covers no write)"


def _add_scope_refusal(responses: dict[str, Any]) -> None:
    """An admin endpoint that is not a GET needs a key of scope moderation or full (protocol.md §11, "Admin
    operations"): 403 to a narrower key, besides any 403 of the endpoint's own."""
    own = responses.get("403")
    if own is None:
        responses["403"] = error_response(ErrorCode.FORBIDDEN, _SCOPE_REFUSAL[0].upper() + _SCOPE_REFUSAL[1:] + ".")
    elif _SCOPE_REFUSAL not in own["description"]:
        own["description"] = own["description"].rstrip(".") + "; or " + _SCOPE_REFUSAL + "."


_INT64_MAX = 2**63 - 1


def _exact_bounds(node: Any) -> None:
    """``maximum: 2**63-1`` becomes ``exclusiveMaximum: 2**63``, the same bound for integers: most JSON tools
    read numbers as doubles, and 2**63-1 is not one (it reads as 2**63, so 2**63 + 191 would pass)."""
    if isinstance(node, dict):
        if node.get("maximum") == _INT64_MAX:
            del node["maximum"]
            node["exclusiveMaximum"] = _INT64_MAX + 1
        for value in node.values():
            _exact_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exact_bounds(value)


def _fix_document(doc: dict[str, Any]) -> dict[str, Any]:
    _exact_bounds(doc)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    schemas.update(body_schemas())
    for item in doc.get("paths", {}).values():
        for method, operation in item.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for code in _common_errors(operation):
                key = str(int(code))
                if key not in responses or "HTTPValidationError" in str(responses[key]):
                    responses[key] = error_response(code)
            if method != "get" and any("adminKey" in req for req in operation.get("security", [])):
                _add_scope_refusal(responses)
            operation["responses"] = dict(sorted(responses.items()))
    return doc


def install_openapi(app: FastAPI) -> None:
    """Makes ``app.openapi()`` (served at ``/openapi.json``) the document this module describes."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = _fix_document(doc)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def reply(model: Any = None, *codes: ErrorCode | tuple[ErrorCode, str]) -> dict[str, Any]:
    """A route's documented replies: its success body's ``model`` (FastAPI checks the returned dict against
    it and sends only the keys the dict has) and its own ``errors``. Spread into the route decorator."""
    out: dict[str, Any] = {"responses": errors(*codes)}
    if model is not None:
        out |= {"response_model": model, "response_model_exclude_unset": True}
    return out
