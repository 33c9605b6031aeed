"""The API's docs, served by the server itself: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

FastAPI's own pages load Swagger UI and ReDoc from cdn.jsdelivr.net, so they are blank on a machine that
cannot reach it. These pages load the copies shipped in the ``fastapi-offline`` package instead, served under
``/docs-assets/``; the favicon is local too. A Content-Security-Policy on both pages lets the browser load nothing
from anywhere else.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs-assets"
# Only this server: ReDoc's sidebar shows a logo from cdn.redoc.ly (the browser refuses it, the text stays), and
# Swagger UI would ask validator.swagger.io for a badge in a layout other than FastAPI's.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "worker-src 'self' blob:",
    ]
)


def install_docs(app: FastAPI) -> None:
    """Adds the docs pages and their assets to ``app``, which must be made with ``docs_url=redoc_url=None``."""
    if app.docs_url is not None or app.redoc_url is not None or app.openapi_url is None:
        raise ValueError("make the app with docs_url=None and redoc_url=None, and keep its openapi_url")
    openapi_url = app.openapi_url
    app.mount(ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=None,
        )
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page
