"""flare_im.api.errors on a bare app: what no route of the real API can be made to do on purpose."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from starlette.exceptions import HTTPException

from flare_im.api.errors import install_error_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, headers={"X-Why": "tea"})

    @app.get("/gone-elsewhere")
    async def moved() -> None:
        raise HTTPException(404, detail="that user moved away")

    return app


async def _get(path: str) -> httpx.Response:
    # raise_app_exceptions=False: Starlette sends the 500 reply, then re-raises for the server's log.
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.get(path)


async def test_an_unexpected_exception_is_a_retryable_500_in_the_error_shape() -> None:
    resp = await _get("/boom")
    assert resp.status_code == 500
    assert resp.json() == {"error": {"code": 500, "name": "internal", "message": "internal error", "retryable": True}}


async def test_a_status_outside_the_error_tree_becomes_the_nearest_code_with_its_reason_and_headers() -> None:
    resp = await _get("/teapot")
    assert resp.status_code == 400
    assert resp.headers["x-why"] == "tea"
    assert resp.json()["error"] == {
        "code": 400,
        "name": "bad_request",
        "message": "GET /teapot: I'm a Teapot",
        "retryable": False,
    }


async def test_a_framework_error_with_its_own_detail_keeps_it() -> None:
    resp = await _get("/gone-elsewhere")
    assert resp.json()["error"]["message"] == "GET /gone-elsewhere: that user moved away"
