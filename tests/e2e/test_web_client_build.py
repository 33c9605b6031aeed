"""The web client's files and how /app serves them: the committed build is what clients/web's sources build, the
first load stays within its JavaScript budget, and /app answers with the right policy, caching and errors.

Node.js and npm are needed for the fresh build: without them that test fails under CI=true and is skipped
elsewhere (as the JavaScript SDK's). `npm ci` runs when clients/web/node_modules is missing or older than the
lockfile.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from tests.services import fail_or_skip

from flare_im import __version__
from flare_im.api.webapp import content_security_policy

from .conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "clients" / "web"
STATIC = ROOT / "src" / "flare_im" / "static" / "app"
JS_BUDGET = 200 * 1024  # compressed JavaScript of the first load (gzip -9)


def run(*args: str, timeout: float) -> str:
    try:
        done = subprocess.run(args, cwd=WEB, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} took over {timeout} s:\n{exc.stdout!r}\n{exc.stderr!r}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-20000:]}\n{done.stderr[-5000:]}", pytrace=False
        )
    return done.stdout + done.stderr


def files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def first_load_scripts() -> list[str]:
    """The scripts index.html loads (module scripts; they import nothing else: one bundle)."""
    return re.findall(r'<script type="module" src="([^"]+)"', (STATIC / "index.html").read_text())


def test_versions_agree_with_the_server() -> None:
    package = json.loads((WEB / "package.json").read_text())
    lock = json.loads((WEB / "package-lock.json").read_text())
    assert (package["version"], lock["packages"][""]["version"]) == (__version__,) * 2
    for name in first_load_scripts():
        assert f"Flare web client {__version__}." in (STATIC / name).read_text().splitlines()[0]


def test_first_load_is_within_the_javascript_budget() -> None:
    scripts = first_load_scripts()
    assert len(scripts) == 1, scripts
    body = (STATIC / scripts[0]).read_bytes()
    assert not re.search(rb'from\s*"\./|import\s*\(\s*"\./', body), "one bundle: no chunks loaded after it"
    assert len(gzip.compress(body, compresslevel=9)) <= JS_BUDGET


def ensure_node_modules() -> Path:
    """clients/web/node_modules as locked (`npm ci` when missing or older than the lockfile); returns it."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            fail_or_skip(f"{tool} is not installed: the web client is built with Node.js >= 20.10 and npm")
    installed = WEB / "node_modules" / ".package-lock.json"
    lock = WEB / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        run("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", timeout=300)
    return WEB / "node_modules"


@pytest.mark.timeout(360)
def test_committed_build_is_a_fresh_build(tmp_path: Path) -> None:
    ensure_node_modules()
    out = run("npm", "run", "build", "--silent", timeout=300)
    assert "first load:" in out
    fresh, committed = files(WEB / "dist"), files(STATIC)
    assert sorted(fresh) == sorted(committed), "run `npm run build:static` in clients/web and commit the result"
    for name, body in fresh.items():
        assert body == committed[name], f"src/flare_im/static/app/{name} is not what the sources build"


def test_policy_names_this_server_and_its_gateways() -> None:
    policy = content_security_policy(["ws://0.0.0.0:8081/v1/ws", "wss://chat.example.com/v1/ws"], "10.1.2.3")
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives["connect-src"] == "'self' ws://10.1.2.3:8081 wss://chat.example.com"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert content_security_policy(["ws://[::]:9/v1/ws"], "::1").count("ws://[::1]:9") == 1


async def test_app_is_served_with_policy_and_cache_headers(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        redirect = await http.get("/app")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == "/app/"

        page = await http.get("/app/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        policy = page.headers["content-security-policy"]
        assert f"connect-src 'self' ws://127.0.0.1:{server.ws_port}" in policy
        assert "'unsafe-inline'" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.content == (STATIC / "index.html").read_bytes()

        links = re.findall(r'(?:src|href)="(assets/[^"]+)"', page.text)
        assert {Path(link).suffix for link in links} == {".js", ".css"}
        for link in links:
            asset = await http.get(f"/app/{link}")
            assert asset.status_code == 200
            assert asset.content == (STATIC / link).read_bytes()
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert asset.headers["content-type"].startswith(("text/javascript", "text/css"))

        worker = await http.get("/app/sw.js")
        assert worker.status_code == 200
        assert worker.headers["cache-control"] == "no-cache"
        assert worker.headers["content-type"].startswith("text/javascript")

        for missing in ("/app/assets/app-NOPE.js", "/app/assets/..%2Findex.html", "/app/index.html", "/app/x/y"):
            reply = await http.get(missing)
            assert reply.status_code == 404, missing
            assert reply.json()["error"]["code"] == 404, missing
        schema = (await http.get("/openapi.json")).json()
        assert not [p for p in schema["paths"] if p.startswith("/app")], "the client's files are not API operations"
