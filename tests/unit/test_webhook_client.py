"""The webhook HTTP client (backends/webhooks/client.py) against a scripted HTTP/1.1 server on loopback, and the
before_send verdicts of services/webhooks.py (what each answer, or the lack of one, does to a send)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from flare_im.backends.webhooks.base import Endpoint
from flare_im.backends.webhooks.client import HttpError, WebhookHttpClient
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.webhooks import Webhooks
from flare_im.signing import verify_signature

OPENED: list[Webhooks] = []  # closed by the serve fixture
Script = Callable[[bytes], bytes | None]  # request bytes -> raw answer (None: close the connection)


class Scripted:
    """Answers each request with ``script(request)``; counts connections and requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.script(request)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Any]]:
    servers: list[tuple[asyncio.Server, Scripted]] = []

    async def start(script: Script) -> tuple[Scripted, str]:
        scripted = Scripted(script)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        servers.append((server, scripted))
        port = server.sockets[0].getsockname()[1]
        return scripted, f"http://127.0.0.1:{port}/hook?x=1"

    yield start
    while OPENED:
        await OPENED.pop().close_client()
    for server, scripted in servers:
        server.close()
        for writer in scripted.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


def answer(status: int, body: bytes = b"", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_chunked_and_a_closed_connection(serve: Callable[[Script], Any]) -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    replies = iter([answer(204), chunked, answer(200, b'{"a":1}', "connection: close\r\n"), answer(201)])
    server, url = await serve(lambda _request: next(replies))
    client = WebhookHttpClient()
    try:
        first = await client.post(url, b"{}", {"x-test": "1"})
        assert (first.status, first.body) == (204, b"")
        assert (await client.post(url, b"{}", {})).body == b"hello world"
        closing = await client.post(url, b'{"n":3}', {})
        assert (closing.status, closing.body) == (200, b'{"a":1}')
        assert (await client.post(url, b"{}", {})).status == 201
    finally:
        await client.close()
    assert server.connections == 2  # one kept alive for three requests, a new one after "connection: close"
    assert server.requests[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    assert b"x-test: 1\r\n" in server.requests[0]
    assert server.requests[2].endswith(b'{"n":3}')


async def test_a_kept_alive_connection_the_server_dropped_is_retried_once(serve: Callable[[Script], Any]) -> None:
    calls = {"n": 0}

    def script(_request: bytes) -> bytes | None:
        calls["n"] += 1
        return None if calls["n"] == 2 else answer(200, b"ok")  # the second request finds the connection closed

    server, url = await serve(script)
    client = WebhookHttpClient()
    try:
        assert (await client.post(url, b"{}", {})).body == b"ok"
        assert (await client.post(url, b"{}", {})).body == b"ok"
    finally:
        await client.close()
    assert server.connections == 2


async def test_refused_garbage_and_timeouts_are_errors(serve: Callable[[Script], Any]) -> None:
    client = WebhookHttpClient()
    with pytest.raises(HttpError):
        await client.post("http://127.0.0.1:9/", b"{}", {})
    _, url = await serve(lambda _request: b"SMTP ready\r\n\r\n")
    with pytest.raises(HttpError, match="not an HTTP"):
        await client.post(url, b"{}", {})
    _, silent = await serve(lambda _request: b"")  # reads the request, never answers
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.post(silent, b"{}", {})
    await client.close()


class _NoStore:
    async def endpoints_revision(self) -> int:
        return 0


def hooks_for(url: str, policy: str, timeout_ms: int = 500) -> Webhooks:
    hooks = Webhooks(_NoStore(), WebhookHttpClient(), max_body_bytes=1024)  # type: ignore[arg-type]
    OPENED.append(hooks)
    hooks.before_send = (Endpoint("wh_1", url, "s" * 16, ("before_send",), timeout_ms=timeout_ms, policy=policy),)
    return hooks


@pytest.mark.parametrize(
    ("reply", "open_result"),
    [
        (answer(200, b"not json"), "unchanged"),
        (answer(200, b'["a list"]'), "unchanged"),
        (answer(200, b'{"action": "shrug"}'), "unchanged"),
        (answer(200, b'{"action": "replace", "body": {"text": ""}}'), "unchanged"),  # invalid for kind text
        (answer(200, b'{"action": "replace", "body": {"text": "' + b"x" * 2000 + b'"}}'), "unchanged"),  # too large
        (answer(500, b"oops"), "unchanged"),
        (answer(200, b'{"action": "allow"}'), "allowed"),
        (answer(200, b""), "allowed"),
    ],
)
async def test_unusable_answers_follow_the_policy(
    serve: Callable[[Script], Any], reply: bytes, open_result: str
) -> None:
    server, url = await serve(lambda _request: reply)
    body = {"text": "hi"}
    assert await hooks_for(url, "open").screen("a", "d:a:b", "c1", "text", body, device="", trusted=False) is body
    closed = hooks_for(url, "closed")
    if open_result == "allowed":
        assert await closed.screen("a", "d:a:b", "c1", "text", body, device="", trusted=False) is body
        return
    with pytest.raises(FlareError) as refused:
        await closed.screen("a", "d:a:b", "c1", "text", body, device="", trusted=False)
    assert (refused.value.code, refused.value.retryable) == (ErrorCode.REJECTED, True)
    assert refused.value.detail == {"code": "unavailable", "reason": ""}
    signed = server.requests[0]
    head, payload = signed.split(b"\r\n\r\n", 1)
    header = next(line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.startswith(b"Flare-Signature"))
    assert verify_signature("s" * 16, header.decode(), payload, now=__import__("time").time())
    assert json.loads(payload)["data"] == {
        "conv": "d:a:b", "sender": "a", "device": "", "cmid": "c1", "kind": "text", "body": {"text": "hi"}
    }  # fmt: skip


async def test_endpoints_in_turn_each_sees_the_previous_replacement(serve: Callable[[Script], Any]) -> None:
    def upper(request: bytes) -> bytes:
        data = json.loads(request.split(b"\r\n\r\n", 1)[1])["data"]
        text = data["body"]["text"]
        return answer(200, json.dumps({"action": "replace", "body": {"text": text + "!"}}).encode())

    _, first = await serve(upper)
    _, second = await serve(upper)
    hooks = hooks_for(first, "open")
    hooks.before_send = (*hooks.before_send, replace_url(hooks.before_send[0], second))
    out = await hooks.screen("a", "d:a:b", "c1", "text", {"text": "hi"}, device="", trusted=False)
    assert out == {"text": "hi!!"}
    _, rejecting = await serve(lambda _r: answer(200, b'{"action": "reject", "code": "' + b"c" * 100 + b'"}'))
    hooks.before_send = (*hooks.before_send, replace_url(hooks.before_send[0], rejecting))
    with pytest.raises(FlareError) as refused:
        await hooks.screen("a", "d:a:b", "c1", "text", {"text": "hi"}, device="", trusted=False)
    assert refused.value.detail == {"code": "c" * 64, "reason": ""}  # cut to 64; no reason given
    assert (refused.value.message, refused.value.retryable) == ("the message was refused", False)


def replace_url(endpoint: Endpoint, url: str) -> Endpoint:
    import dataclasses

    return dataclasses.replace(endpoint, url=url)


def test_a_lookup_given_up_at_the_timeout_leaves_no_unread_error(caplog: pytest.LogCaptureFixture) -> None:
    """Under uvloop (the server's loop), a name lookup inside open_connection whose caller timed out had its
    failure logged by asyncio as "Future exception was never retrieved"; the client's own lookup reads it."""
    import gc

    import uvloop

    async def main() -> list[str]:
        client = WebhookHttpClient()

        async def post(i: int, timeout_s: float) -> str:
            try:
                async with asyncio.timeout(timeout_s):
                    await client.post(f"http://no-such-host-{i}.invalid/", b"{}", {})
            except (TimeoutError, HttpError) as exc:
                return type(exc).__name__
            return "answered"

        outcomes = await asyncio.gather(*(post(i, 0.0001) for i in range(10)), post(10, 10.0))
        await asyncio.sleep(0.5)  # the lookups given up end meanwhile
        gc.collect()
        return outcomes

    outcomes = uvloop.run(main())
    gc.collect()
    assert outcomes == ["TimeoutError"] * 10 + ["HttpError"]
    assert "never retrieved" not in caplog.text
