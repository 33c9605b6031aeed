"""The web chat client, served by the API at ``/app/`` from files built ahead (clients/web, committed under
``flare_im/static/app``), so running the server needs no Node.

- ``/app/``: ``index.html``, never cached (it names the current assets), under a Content-Security-Policy that
  lets the page load scripts, styles and images from this server only and connect only to it and to its
  WebSocket gateways: no inline script or style, no ``eval``, no frames.
- ``/app/assets/<name>-<hash>.<ext>``: content-hashed, so cached for a year as immutable.
- ``/app/sw.js``: the Web Push service worker (a fixed name, so revalidated on every load).

The files are read once, when the routes are installed; an unknown name is the API's 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from flare_im.protocol.errors import ErrorCode, FlareError

APP_DIR = Path(__file__).resolve().parent.parent / "static" / "app"
PREFIX = "/app"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}
# Hosts a gateway URL may name when the server listens on every address: the browser reaches it by the page's host.
ANY_HOST = {"0.0.0.0", "::", ""}
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str


def load_assets(directory: Path = APP_DIR) -> dict[str, Asset]:
    """Every file of the built client by its path under ``directory`` (``index.html``, ``assets/app-….js``)."""
    out: dict[str, Asset] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in TYPES:
            out[path.relative_to(directory).as_posix()] = Asset(path.read_bytes(), TYPES[path.suffix])
    return out


def content_security_policy(ws_urls: list[str], page_host: str) -> str:
    """The page's policy: this server only, plus the origins of its WebSocket gateways (another port is another
    origin, which ``'self'`` does not cover)."""
    sockets: list[str] = []
    for url in ws_urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = page_host if host in ANY_HOST else host
        host = f"[{host}]" if ":" in host else host
        origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        if origin not in sockets:
            sockets.append(origin)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "connect-src " + " ".join(["'self'", *sockets]),
            "worker-src 'self'",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def install_webapp_routes(app: FastAPI, ws_urls: list[str], directory: Path = APP_DIR) -> None:
    """Adds ``/app`` (a redirect to ``/app/``), ``/app/`` and the client's assets to ``app``."""
    assets = load_assets(directory)

    def missing(path: str) -> FlareError:
        return FlareError(ErrorCode.NOT_FOUND, f"GET {path}: no such file of the web client")

    @app.get(PREFIX, include_in_schema=False)
    async def app_root(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}{PREFIX}/", status_code=308)

    @app.get(PREFIX + "/", include_in_schema=False)
    async def index(request: Request) -> Response:
        page = assets.get("index.html")
        if page is None:
            raise FlareError(
                ErrorCode.NOT_FOUND, "the web client is not built: run `npm run build:static` in clients/web"
            )
        policy = content_security_policy(ws_urls, request.url.hostname or "")
        headers = {**COMMON_HEADERS, "Cache-Control": REVALIDATE, "Content-Security-Policy": policy}
        return Response(page.body, media_type=page.media_type, headers=headers)

    @app.get(PREFIX + "/sw.js", include_in_schema=False)
    async def service_worker(request: Request) -> Response:
        asset = assets.get("sw.js")
        if asset is None:
            raise missing(request.url.path)
        return Response(
            asset.body, media_type=asset.media_type, headers={**COMMON_HEADERS, "Cache-Control": REVALIDATE}
        )

    @app.get(PREFIX + "/assets/{name}", include_in_schema=False)
    async def asset(name: str, request: Request) -> Response:
        found = assets.get(f"assets/{name}")
        if found is None:
            raise missing(request.url.path)
        return Response(found.body, media_type=found.media_type, headers={**COMMON_HEADERS, "Cache-Control": IMMUTABLE})
