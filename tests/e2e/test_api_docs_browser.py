"""/docs and /redoc in a real browser, on a machine that can reach nothing but the server.

A real `flare serve` and Debian's chromium driven by Playwright (never a downloaded browser). Every host but
127.0.0.1 is made unresolvable, as on a machine without Internet access. Each page must list every operation of
the OpenAPI document, with every request it makes either answered by the server itself or refused inside the
browser by the page's Content-Security-Policy (so it never left). The pages are opened at 127.0.0.1 and at a
host name mapped to it, as a deployment is reached (Swagger UI and ReDoc treat localhost specs apart in places).
Screenshots go to the test's tmp path, and a copy of the 127.0.0.1 ones to /tmp/flare-docs-<page>.png for people
to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Page, Request, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout
from tests.services import require

from .conftest import ServerProcess

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    # Only the server resolves: a page that needs a CDN fails here as it does on an offline machine.
    "--host-resolver-rules=MAP flare-docs.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
HOSTS = ["127.0.0.1", "flare-docs.test"]
KNOWN_OPERATION = "/v1/conversations/{conv}/messages/{seq}/ops"
COPY_FOR_PEOPLE = "/tmp/flare-docs-{name}.png"
RENDER_TIMEOUT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = require("chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class PageRecord:
    """Every request a page makes, and what went wrong in it."""

    def __init__(self, page: Page) -> None:
        self.requests: list[Request] = []
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        page.on("request", self._on_request)
        page.on("pageerror", self._on_page_error)
        page.on("console", self._on_console)

    def _on_request(self, request: Request) -> None:
        self.requests.append(request)

    def _on_page_error(self, error: Error) -> None:
        self.page_errors.append(str(error))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def left_the_machine(self, server: ServerProcess) -> list[str]:
        """Requests to anywhere but the server that the browser did not refuse itself."""
        return [r.url for r in self.requests if not _on_server(r.url, server) and r.failure != "csp"]

    def refused_by_policy(self) -> list[str]:
        return [r.url for r in self.requests if r.failure == "csp"]

    def paths(self, server: ServerProcess) -> set[str]:
        return {urlsplit(r.url).path for r in self.requests if _on_server(r.url, server)}


def _on_server(url: str, server: ServerProcess) -> bool:
    if url.startswith("data:"):
        return True
    parts = urlsplit(url.removeprefix("blob:"))  # a blob: URL names the origin that made it
    return parts.scheme == "http" and parts.hostname in HOSTS and parts.port == server.api_port


async def _spec_operations(server: ServerProcess) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> operationId of every operation in the server's OpenAPI document."""
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        spec: dict[str, Any] = (await http.get("/openapi.json")).json()
    return {
        (method.upper(), path): op["operationId"] for path, ops in spec["paths"].items() for method, op in ops.items()
    }


async def _open(browser: Browser, url: str) -> tuple[Page, PageRecord]:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    record = PageRecord(page)
    await page.goto(url, wait_until="networkidle")
    return page, record


async def _wait_rendered(page: Page, record: PageRecord, server: ServerProcess, selector: str) -> None:
    try:
        await page.locator(selector).first.wait_for(timeout=RENDER_TIMEOUT_MS)
    except PlaywrightTimeout:
        pytest.fail(
            f"no {selector} on {page.url} after {RENDER_TIMEOUT_MS} ms; page errors {record.page_errors}, "
            f"requests that went elsewhere {record.left_the_machine(server)}"
        )


async def _screenshot(page: Page, tmp_path: Path, name: str, host: str) -> Path:
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    path = shots / f"{name}-{host}.png"
    await page.screenshot(path=path)
    assert path.stat().st_size > 10_000, "an almost empty screenshot: the page did not render"
    if host == HOSTS[0]:
        shutil.copyfile(path, COPY_FOR_PEOPLE.format(name=name))
    return path


def _assert_self_contained(record: PageRecord, server: ServerProcess, assets: set[str]) -> None:
    assert record.page_errors == []  # e.g. "SwaggerUIBundle is not defined" when the bundle did not load
    assert record.left_the_machine(server) == []
    assert assets <= record.paths(server), "the page did not load its assets from the server"
    refused = set(record.refused_by_policy())
    assert [m for m in record.console_errors if not any(url in m for url in refused)] == []


@pytest.mark.parametrize("host", HOSTS)
async def test_swagger_ui_lists_every_operation_from_the_server_alone(
    browser: Browser, server: ServerProcess, tmp_path: Path, host: str
) -> None:
    page, record = await _open(browser, f"http://{host}:{server.api_port}/docs")
    try:
        await _wait_rendered(page, record, server, ".opblock")
        shown = await page.eval_on_selector_all(
            ".opblock",
            "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').textContent,"
            " b.querySelector('.opblock-summary-path').dataset.path])",
        )
        assert sorted(map(tuple, shown)) == sorted(await _spec_operations(server))
        assert await page.locator(f'.opblock-summary-path[data-path="{KNOWN_OPERATION}"]').is_visible()
        assert await page.title() == "Flare IM API - Swagger UI"
        await _screenshot(page, tmp_path, "swagger-ui", host)
        assets = {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/openapi.json"}
        _assert_self_contained(record, server, assets)
        assert record.refused_by_policy() == []  # nothing even tried to leave
    finally:
        await page.close()


@pytest.mark.parametrize("host", HOSTS)
async def test_redoc_lists_every_operation_from_the_server_alone(
    browser: Browser, server: ServerProcess, tmp_path: Path, host: str
) -> None:
    page, record = await _open(browser, f"http://{host}:{server.api_port}/redoc")
    try:
        await _wait_rendered(page, record, server, "[data-section-id*='/operation/']")
        shown = await page.eval_on_selector_all(
            "[data-section-id*='/operation/']", "sections => sections.map(s => s.dataset.sectionId.split('/').pop())"
        )
        assert sorted(shown) == sorted((await _spec_operations(server)).values())
        assert await page.get_by_text(KNOWN_OPERATION, exact=True).is_visible()
        assert await page.title() == "Flare IM API - ReDoc"
        await _screenshot(page, tmp_path, "redoc", host)
        _assert_self_contained(record, server, {"/docs-assets/redoc.standalone.js", "/openapi.json"})
    finally:
        await page.close()
