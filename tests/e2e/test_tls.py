"""TLS: Flare itself on https and wss (``--tls-cert``/``--tls-key``), and TLS ended at HAProxy in front of a plain
node, each checked with real TLS clients against a certificate authority the test makes (trustme)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from flare_im.devcluster import free_port
from flare_im.sdk.client import FlareClient, direct_conv
from flare_im.sdk.rest import RestClient

from .conftest import ServerProcess

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The server's certificate chain and key, for 127.0.0.1 and localhost, signed by ``ca``."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    where = tmp_path_factory.mktemp("tls")
    chain, key = where / "chain.pem", where / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return chain, key


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="module")
def tls_server(cert_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    chain, key = cert_files
    srv = ServerProcess(
        tmp_path_factory.mktemp("tls-server") / "data",
        env_overrides={"FLARE_TLS_CERT": str(chain), "FLARE_TLS_KEY": str(key)},
    )
    srv.start()
    yield srv
    srv.stop()


async def _users(api: str, admin_key: str, verify: ssl.SSLContext, *names: str) -> list[str]:
    tokens = []
    async with RestClient(api, admin_key=admin_key, verify=verify) as admin:
        for name in names:
            await admin.admin_create_user(name)
            tokens.append(await admin.admin_issue_token(name))
    return tokens


async def _exchange(api: str, ws: str, admin_key: str, context: ssl.SSLContext, tag: str) -> None:
    """Two users over ``ws``: a message from one is acked and pushed to the other, byte for byte."""
    alice_token, bob_token = await _users(api, admin_key, context, f"alice{tag}", f"bob{tag}")
    async with (
        FlareClient(ws, alice_token, "phone", ssl_context=context) as alice,
        FlareClient(ws, bob_token, "phone", ssl_context=context) as bob,
    ):
        conv = direct_conv(f"alice{tag}", f"bob{tag}")
        ack = await alice.send(conv, "over TLS ✓")
        got = await bob.next_message()
        assert (got.conv, got.seq, got.sender, got.body["text"]) == (conv, ack.seq, f"alice{tag}", "over TLS ✓")


def test_https_and_wss_carry_the_api_and_messages(tls_server: ServerProcess, ca: trustme.CA) -> None:
    api = f"https://127.0.0.1:{tls_server.api_port}"
    with httpx.Client(verify=client_context(ca)) as http:
        health = http.get(f"{api}/healthz")
        assert health.status_code == 200
        assert health.headers["strict-transport-security"] == "max-age=31536000"  # TLS here: browsers keep to it
        gateways = http.get(f"{api}/v1/gateways").json()
    ws = f"wss://127.0.0.1:{tls_server.ws_port}/v1/ws"
    assert ws in str(gateways), gateways  # discovery names the TLS gateway
    asyncio.run(_exchange(api, ws, tls_server.admin_key, client_context(ca), "1"))
    tls_server.check_log()


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_server: ServerProcess) -> None:
    stranger = trustme.CA()  # a different authority: the server's certificate is not signed by it
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{tls_server.api_port}/healthz", verify=client_context(stranger))

    async def wss() -> None:
        client = FlareClient(
            f"wss://127.0.0.1:{tls_server.ws_port}/v1/ws", "x", "d", ssl_context=client_context(stranger)
        )
        await client.connect()

    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(wss())
    tls_server.check_log()  # the refused handshakes are the client's business: nothing logged as an error


def test_plain_text_and_old_tls_get_no_service(tls_server: ServerProcess, ca: trustme.CA) -> None:
    """Plain HTTP to the TLS port, and TLS 1.1, are refused at the handshake; the server stays up for others."""
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.api_port}/healthz", timeout=5)
    old = client_context(ca)
    with warnings.catch_warnings():  # the point is to use what is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    for port in (tls_server.api_port, tls_server.ws_port):
        with pytest.raises((ssl.SSLError, httpx.ConnectError)):
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=old, timeout=5)
    with httpx.Client(verify=client_context(ca)) as http:
        assert http.get(f"https://127.0.0.1:{tls_server.api_port}/healthz").status_code == 200
    tls_server.check_log()


def test_tls_needs_both_files_and_readable_ones(tmp_path: Path, cert_files: tuple[Path, Path]) -> None:
    """A half or broken TLS configuration stops the start with a clear message, before any port opens."""
    chain, _ = cert_files
    runs = {
        "both": {"FLARE_TLS_CERT": str(chain)},
        "no such file": {"FLARE_TLS_CERT": str(chain), "FLARE_TLS_KEY": str(tmp_path / "missing.pem")},
    }
    for expected, env in runs.items():
        srv = ServerProcess(tmp_path / expected.replace(" ", "-"), env_overrides=env, expect_errors=True)
        with pytest.raises(RuntimeError, match=expected):
            srv.start()
        assert srv.proc is None  # the failed start ended the process and closed its pipe and log
        assert expected in (srv.log_path.read_text() if srv.log_path else "")


@pytest.fixture
def haproxy_tls(cert_files: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[ServerProcess, int, int]]:
    """A plain node behind HAProxy, which ends TLS for both the API and the WebSocket (docs/operations.md)."""
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    chain, key = cert_files
    combined = tmp_path / "haproxy.pem"
    combined.write_bytes(chain.read_bytes() + key.read_bytes())
    api_port, ws_port = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
global
    maxconn 256
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend api
    bind 127.0.0.1:{api_port} ssl crt {combined}
    http-request set-header X-Forwarded-Proto https
    default_backend api
frontend ws
    bind 127.0.0.1:{ws_port} ssl crt {combined}
    default_backend ws
backend api
    server n0 127.0.0.1:{srv.api_port}
backend ws
    server n0 127.0.0.1:{srv.ws_port}
""")
    haproxy_log = (tmp_path / "haproxy.log").open("wb")
    proc: subprocess.Popen[bytes] | None = None
    try:  # the node stops even when haproxy cannot start (not installed: run scripts/services.sh start)
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stderr=haproxy_log)
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"https://127.0.0.1:{api_port}/healthz", verify=False, timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
                assert time.monotonic() < deadline, "haproxy did not come up"
                time.sleep(0.1)
        yield srv, api_port, ws_port
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        haproxy_log.close()
        srv.stop()


def test_tls_ended_at_haproxy(haproxy_tls: tuple[ServerProcess, int, int], ca: trustme.CA) -> None:
    srv, api_port, ws_port = haproxy_tls
    api, ws = f"https://127.0.0.1:{api_port}", f"wss://127.0.0.1:{ws_port}/v1/ws"
    asyncio.run(_exchange(api, ws, srv.admin_key, client_context(ca), "2"))
