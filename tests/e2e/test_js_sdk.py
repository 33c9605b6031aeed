"""The JavaScript SDK (clients/js): its version is the server's, the bundle committed under
src/flare_im/static/js/ is what a fresh build makes, and its own test suite (node's test runner, against real
`flare serve` processes it starts) passes.

Node.js and npm are needed: without them the tests fail under CI=true and are skipped elsewhere. `npm ci` runs
when clients/js/node_modules is missing or older than the lockfile (scripts/services.sh does not install npm
packages; this test does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.services import fail_or_skip

from flare_im import __version__

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
STATIC = ROOT / "src" / "flare_im" / "static" / "js"
BUNDLE = ("flare.js", "flare.d.ts")
MIN_NODE = (20, 10)  # --experimental-websocket


def run(*args: str, timeout: float, env: dict[str, str] | None = None, check: bool = True) -> tuple[int, str]:
    """Runs a command in clients/js; returns its exit code and output, and fails the test with the output when it
    fails (unless ``check`` is false) or runs over ``timeout``."""
    try:
        done = subprocess.run(args, cwd=JS, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} took over {timeout} s:\n{exc.stdout!r}\n{exc.stderr!r}", pytrace=False)
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-20000:]}\n{done.stderr[-5000:]}", pytrace=False
        )
    return done.returncode, done.stdout + done.stderr


def require_node() -> None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            fail_or_skip(f"{tool} is not installed: the JavaScript SDK needs Node.js >= 20.10 and npm")
    version = run("node", "--version", timeout=30)[1].strip().lstrip("v")
    major, minor = (int(part) for part in version.split(".")[:2])
    if (major, minor) < MIN_NODE:
        fail_or_skip(f"Node.js {version} is too old for the JavaScript SDK's tests (>= 20.10)")


@pytest.fixture(scope="module")
def built() -> None:
    """node_modules as locked (npm ci when missing or stale), then a fresh build into clients/js/dist."""
    require_node()
    installed = JS / "node_modules" / ".package-lock.json"
    lock = JS / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        run("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", timeout=300)
    run("npm", "run", "build", "--silent", timeout=300)


def test_versions_agree_with_the_server() -> None:
    package = json.loads((JS / "package.json").read_text())
    lock = json.loads((JS / "package-lock.json").read_text())
    source = re.search(r'VERSION = "([^"]+)"', (JS / "src" / "version.ts").read_text())
    assert source is not None
    assert (package["version"], lock["version"], lock["packages"][""]["version"], source[1]) == (__version__,) * 4
    assert not package.get("dependencies"), "the SDK has no runtime dependencies"
    for name in BUNDLE:
        head = (STATIC / name).read_text().splitlines()[0]
        assert f"Flare JavaScript SDK {__version__}." in head, (name, head)


@pytest.mark.timeout(360)
def test_committed_bundle_is_a_fresh_build(built: None) -> None:
    for name in BUNDLE:
        fresh, committed = (JS / "dist" / name).read_bytes(), (STATIC / name).read_bytes()
        assert fresh == committed, (
            f"src/flare_im/static/js/{name} is not what the sources build: run `npm run build:static` in clients/js "
            "and commit the result"
        )


@pytest.mark.timeout(240)
def test_node_suite(built: None) -> None:
    env = {**os.environ, "FLARE_PYTHON": sys.executable, "NODE_NO_WARNINGS": "1"}
    code, out = run("npm", "test", "--silent", timeout=200, env=env, check=False)
    # The failing tests with their errors (TAP), else the end of the output.
    failures = "\n".join(re.findall(r"^\s*not ok .*(?:\n\s+.*){0,40}", out, re.M)) or out[-5000:]
    assert code == 0, failures[:30000]
    summary = dict(re.findall(r"^# (tests|pass|fail|skipped|cancelled|todo) (\d+)$", out, re.M))
    assert summary.get("fail") == "0", failures[:30000]
    assert summary.get("cancelled") == "0", out[-5000:]
    assert int(summary.get("pass", "0")) >= 30, out[-5000:]
    assert summary.get("skipped") == "0", out[-5000:]
    assert summary.get("todo") == "0", out[-5000:]
