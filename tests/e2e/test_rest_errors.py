"""Errors the framework answers by itself (no route, wrong method, invalid request) have the documented shape.

Over real HTTP against a running `flare serve`: ``{"error": {"code", "name", "message", "retryable"}}`` with the
status equal to ``code``, never FastAPI's ``{"detail": "Not Found"}``; a 405 keeps its ``Allow`` header.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.sdk.rest import RestClient

from .conftest import Harness, ServerProcess


def assert_error(resp: httpx.Response, code: ErrorCode) -> dict[str, Any]:
    """The documented error body for ``code`` (no ``detail``: none of these errors has one)."""
    assert resp.status_code == int(code), resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "name", "message", "retryable"}, error
    assert (error["code"], error["name"], error["retryable"]) == (int(code), code.name.lower(), False)
    assert isinstance(error["message"], str), error
    assert error["message"], error
    return error


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/v1/nope"),
        ("GET", "/v1/conversations/d:alice:bob/nope"),
        ("GET", "/docs-assets/nope.js"),  # inside the docs assets' mount
    ],
)
async def test_unknown_path_is_404_in_the_error_shape(server: ServerProcess, method: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        error = assert_error(await http.request(method, path), ErrorCode.NOT_FOUND)
        assert error["message"] == f"{method} {path}: no such path"
        head = await http.head(path)
        assert (head.status_code, head.content) == (404, b"")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/healthz", "GET"),
        ("GET", "/v1/auth/login", "POST"),
        ("DELETE", "/v1/me", "GET, PATCH"),  # every method of the path, not only the first route's
        ("POST", "/v1/me/devices/phone/push", "DELETE, PUT"),
        ("POST", "/docs-assets/swagger-ui.css", "GET, HEAD"),
    ],
)
async def test_wrong_method_is_405_with_allow_in_the_error_shape(
    server: ServerProcess, method: str, path: str, allow: str
) -> None:
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        resp = await http.request(method, path)
    error = assert_error(resp, ErrorCode.METHOD_NOT_ALLOWED)
    assert resp.headers["allow"] == allow
    assert error["message"] == f"{method} {path}: method not allowed; this path takes {allow}"


@pytest.mark.parametrize(("path", "allow"), [("/v1/me", "GET, PATCH, OPTIONS"), ("/healthz", "GET, OPTIONS")])
async def test_options_is_204_with_allow(server: ServerProcess, path: str, allow: str) -> None:
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        resp = await http.options(path)
        assert (resp.status_code, resp.headers["allow"], resp.content) == (204, allow, b"")
        assert_error(await http.options("/v1/nope"), ErrorCode.NOT_FOUND)


async def test_invalid_requests_are_400_and_422_in_the_error_shape(harness: Harness) -> None:
    token = await harness.user("alice")
    async with httpx.AsyncClient(base_url=harness.srv.api_url) as http:
        login = "/v1/auth/login"
        json_type = {"content-type": "application/json"}
        error = assert_error(await http.post(login, content=b"{nope", headers=json_type), ErrorCode.BAD_REQUEST)
        assert "JSON" in error["message"]
        assert_error(await http.post(login, content=b"\xff\xfe", headers=json_type), ErrorCode.BAD_REQUEST)
        error = assert_error(await http.post(login, json={"username": 5, "password": "x"}), ErrorCode.INVALID)
        assert error["message"].startswith("body.username: ")
        error = assert_error(await http.post(login), ErrorCode.INVALID)  # no body at all
        assert error["message"] == "body: Field required"
        assert_error(await http.post(login, json=[1, 2]), ErrorCode.INVALID)
        authed = {"authorization": f"Bearer {token}"}
        error = assert_error(await http.get("/v1/conversations?limit=abc", headers=authed), ErrorCode.INVALID)
        assert error["message"].startswith("query.limit: ")
        error = assert_error(await http.get("/v1/conversations?limit=0", headers=authed), ErrorCode.INVALID)
        assert error["message"].startswith("query.limit: ")
        path_param = "/v1/conversations/d:alice:bob/messages/seven/readers"
        error = assert_error(await http.get(path_param, headers=authed), ErrorCode.INVALID)
        assert error["message"].startswith("path.seq: ")


async def test_sdk_reads_framework_errors_as_flare_errors(server: ServerProcess) -> None:
    async with RestClient(server.api_url) as rest:
        with pytest.raises(FlareError) as err:
            await rest.request("DELETE", "/healthz")
        assert (err.value.code, err.value.retryable) == (ErrorCode.METHOD_NOT_ALLOWED, False)
        with pytest.raises(FlareError) as err:
            await rest.request("GET", "/v1/nope")
        assert err.value.code == ErrorCode.NOT_FOUND
