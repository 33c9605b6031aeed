"""The package as a user gets it: `python -m build` makes an sdist and a wheel; the wheel, installed in a fresh
venv with the runtime lock and nothing else, runs `flare serve` and carries one message between two users.

The build uses the dev venv's locked setuptools (no isolation, so nothing is downloaded), and builds the wheel
from the sdist, so a file missing from the sdist fails here too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from flare_im import __version__
from flare_im.devcluster import free_port, wait_for_line

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def flare(self) -> Path:
        return self.venv / "bin" / "flare"


def run(*args: str | Path, cwd: Path = ROOT, timeout: float = 300) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    run(sys.executable, "-m", "venv", venv)
    pip = (venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps")
    run(*pip, "--require-hashes", "-r", ROOT / "requirements" / "runtime.txt")
    run(*pip, wheel)
    run(venv / "bin" / "python", "-m", "pip", "check")
    return Built(sdist, wheel, venv)


def test_names_carry_the_one_version(built: Built) -> None:
    assert built.wheel.name.startswith(f"flare_im-{__version__}-")
    assert built.sdist.name == f"flare_im-{__version__}.tar.gz"
    assert run(built.flare, "--version").strip() == f"flare {__version__}"


def test_sdist_and_wheel_carry_what_a_user_needs(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for needed in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "src/flare_im/py.typed",
        "src/flare_im/static/js/flare.js",  # the JavaScript SDK, served without Node at run time
        "src/flare_im/static/js/flare.d.ts",
    ):
        assert needed in names, f"{needed} missing from the sdist"
    with zipfile.ZipFile(built.wheel) as wheel:
        files = set(wheel.namelist())
        metadata = wheel.read(f"flare_im-{__version__}.dist-info/METADATA").decode()
    assert "flare_im/py.typed" in files
    assert {"flare_im/static/js/flare.js", "flare_im/static/js/flare.d.ts"} <= files
    assert any(name.endswith("/licenses/LICENSE") or name.endswith("/LICENSE") for name in files)
    assert "License-Expression: Apache-2.0" in metadata or "License: Apache-2.0" in metadata
    # Nothing of the repository's tests, benchmarks or tools ends up installed.
    assert not [name for name in files if name.startswith(("tests/", "bench/", "scripts/", "clients/"))]


def test_the_installed_wheel_serves_and_carries_a_message(built: Built, tmp_path: Path) -> None:
    data, api_port, ws_port = tmp_path / "data", free_port(), free_port()
    log_path = tmp_path / "server.log"
    # Run from an empty directory with a clean environment: only the wheel's venv can be imported.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "FLARE_LOG_LEVEL": "WARNING"}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [built.flare, "serve", "--host", "127.0.0.1", "--api-port", str(api_port), "--ws-port", str(ws_port),
             "--data-dir", str(data)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, env=env,
        )  # fmt: skip
        try:
            ready = wait_for_line(server, b"flare ready", 30)
            assert ready is not None, log_path.read_text()
            script = textwrap.dedent(f"""
                import asyncio, flare_im
                from flare_im.sdk.client import FlareClient
                from flare_im.sdk.rest import RestClient

                async def main():
                    assert "site-packages" in flare_im.__file__, flare_im.__file__
                    api = "http://127.0.0.1:{api_port}"
                    a, b = RestClient(api), RestClient(api)
                    await a.register("ada", "ada-password-1")
                    await b.register("bob", "bob-password-1")
                    ws = (await a.gateways())[0]
                    ada, bob = FlareClient(ws, a.token, device="d1"), FlareClient(ws, b.token, device="d2")
                    async with ada, bob:
                        ack = await ada.send("d:ada:bob", "hello from the wheel")
                        msg = await asyncio.wait_for(bob.next_message(), 10)
                        print(ack.seq, msg.seq, msg.sender, msg.body["text"])
                    await a.aclose()
                    await b.aclose()

                asyncio.run(main())
            """)
            out = run(built.python, "-c", script, cwd=tmp_path, timeout=60)
            assert out.split() == ["1", "1", "ada", "hello", "from", "the", "wheel"]
        finally:
            server.terminate()
            code = server.wait(timeout=30)
            if server.stdout is not None:
                server.stdout.close()
    assert code == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
