"""Integration webhooks (R6) on a real `flare serve`, with a real HTTP server in the test that receives the events
and verifies their signatures: before_send (allow, reject, replace; timeouts under both failure policies), after-
events delivered at least once (retries, dead letters, replay), and the admin API's refusals."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.server import FakeProvider, Request, Response, running

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness, ServerProcess

SECRET = "integration-secret-0123456789"
DM = "d:alice:bob"


class Receiver(FakeProvider):
    """The business backend: checks ``Flare-Signature`` (written from docs/integration.md, not with Flare's
    helper), answers before_send with ``verdict(data)`` (None: allow with 204) after ``delay_s``, and records the
    after-events it accepted (``fail_next`` makes it answer errors first)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.failing: dict[str, int] = {}  # event type -> how many of its requests to answer 503 first
        self.delay_s = 0.0
        self.verdict: Callable[[dict[str, Any]], dict[str, Any] | None] = lambda _data: None

    def _signed(self, request: Request) -> bool:
        parts = dict(p.split("=", 1) for p in request.headers.get("flare-signature", "").split(",") if "=" in p)
        if not parts.get("t", "").isdigit() or abs(time.time() - int(parts["t"])) > 300:
            return False
        mac = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + request.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(mac, parts.get("v1", ""))

    async def handle(self, request: Request) -> Response:
        if not self._signed(request):
            self.bad_signatures += 1
            return Response(401, b"bad signature")
        payload = request.json()
        assert request.headers["flare-event"] == payload["type"]
        if payload["type"] == "before_send":
            self.checks.append(payload)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            verdict = self.verdict(payload["data"])
            return Response(204) if verdict is None else Response.of_json(200, verdict)
        assert request.headers["idempotency-key"] == payload["id"]
        if self.failing.get(payload["type"], 0) > 0:
            self.failing[payload["type"]] -= 1
            return Response(503, b"busy")
        if failure := self.take_failure():
            return Response(failure.status, failure.reason.encode())
        self.events.append(payload)
        return Response(200)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"not met in {timeout} s; events: {self.events[-5:]}"
            await asyncio.sleep(0.02)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "FLARE_WEBHOOK_BACKOFF_S": "0.1",
        "FLARE_WEBHOOK_MAX_TRIES": "3",
        "FLARE_PRESENCE_DEBOUNCE_S": "0.2",
        "FLARE_WEBHOOK_LEASE_S": "5",
    }
    srv = ServerProcess(tmp_path / "data", env_overrides=env)
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    fake = Receiver()
    async with running(fake) as url:
        yield fake, url


async def add_endpoint(harness: Harness, url: str, events: list[str], **fields: Any) -> dict[str, Any]:
    body = {"url": f"{url}/hooks", "secret": SECRET, "events": events, **fields}
    created: dict[str, Any] = await harness.admin.request("POST", "/v1/admin/webhooks", json=body, admin=True)
    return created


async def texts(harness: Harness, uid: str, conv: str) -> list[str]:
    page = await harness.rest(uid).history(conv)
    return [m["body"].get("text", "") for m in page["items"] if m["kind"] == "text"]


async def test_before_send_allows_rejects_and_replaces(harness: Harness, receiver: tuple[Receiver, str]) -> None:
    fake, url = receiver
    await harness.user("alice")
    await harness.user("bob")
    endpoint = await add_endpoint(harness, url, ["before_send"], policy="closed")
    assert endpoint["secret"] == SECRET
    assert endpoint["endpoint_id"].startswith("wh_")

    def verdict(data: dict[str, Any]) -> dict[str, Any] | None:
        text = data["body"].get("text", "")
        if "spam" in text:
            return {"action": "reject", "code": "no_spam", "reason": "Links to casinos are not allowed here"}
        if "swap" in text:
            return {"action": "replace", "body": {"text": text.replace("swap", "[checked]")}}
        return None

    fake.verdict = verdict
    alice = await harness.device("alice", "phone")
    ack = await alice.send(DM, "hello bob")
    with pytest.raises(FlareError) as refused:
        await alice.send(DM, "cheap spam here", attempts=1)
    assert (refused.value.code, refused.value.retryable) == (ErrorCode.REJECTED, False)
    assert refused.value.detail == {"code": "no_spam", "reason": "Links to casinos are not allowed here"}
    assert refused.value.message == "Links to casinos are not allowed here"
    replaced = await harness.rest("alice").send(DM, "c-swap", {"text": "please swap this"})
    assert replaced["body"] == {"text": "please [checked] this"}  # the ack shows what was stored
    with pytest.raises(FlareError) as over_rest:
        await harness.rest("alice").send(DM, "c-spam", {"text": "spam again"})
    assert over_rest.value.code == ErrorCode.REJECTED
    # The refused messages were not stored; the replaced one was stored replaced; the endpoint saw each send.
    assert await texts(harness, "bob", DM) == ["hello bob", "please [checked] this"]
    assert ack.seq == 1
    assert replaced["seq"] == 2
    assert [c["data"]["body"]["text"] for c in fake.checks] == [
        "hello bob",
        "cheap spam here",
        "please swap this",
        "spam again",
    ]
    first = fake.checks[0]["data"]
    assert (first["sender"], first["conv"], first["device"], first["kind"]) == ("alice", DM, "phone", "text")
    assert fake.bad_signatures == 0


async def test_before_send_timeout_fails_open_or_closed_by_policy(
    harness: Harness, receiver: tuple[Receiver, str]
) -> None:
    fake, url = receiver
    await harness.user("alice")
    await harness.user("bob")
    endpoint = await add_endpoint(harness, url, ["before_send"], timeout_ms=300, policy="open")
    fake.delay_s = 3.0
    alice = harness.rest("alice")
    started = time.monotonic()
    ack = await alice.send(DM, "c-open", {"text": "sent although unchecked"})
    assert time.monotonic() - started < 2.5  # waited for the timeout, not for the answer
    assert ack["seq"] == 1

    path = f"/v1/admin/webhooks/{endpoint['endpoint_id']}"
    changed = await harness.admin.request("PATCH", path, json={"policy": "closed"}, admin=True)
    assert changed["policy"] == "closed"
    assert "secret" not in changed
    with pytest.raises(FlareError) as refused:
        await alice.send(DM, "c-closed", {"text": "refused when unchecked"})
    assert (refused.value.code, refused.value.retryable) == (ErrorCode.REJECTED, True)
    assert refused.value.detail == {"code": "unavailable", "reason": ""}
    # An endpoint that cannot be reached at all is the same error.
    await harness.admin.request("PATCH", path, json={"url": "http://127.0.0.1:9/nothing-here"}, admin=True)
    with pytest.raises(FlareError) as unreachable:
        await alice.send(DM, "c-closed-2", {"text": "refused when unreachable"})
    assert unreachable.value.code == ErrorCode.REJECTED
    assert await texts(harness, "alice", DM) == ["sent although unchecked"]

    # Fail open again, then disabled: sends pass without asking.
    await harness.admin.request("PATCH", path, json={"policy": "open"}, admin=True)
    assert (await alice.send(DM, "c-open-2", {"text": "open again"}))["seq"] == 2
    await harness.admin.request("PATCH", path, json={"enabled": False, "policy": "closed"}, admin=True)
    asked = len(fake.checks)
    assert (await alice.send(DM, "c-disabled", {"text": "not asked"}))["seq"] == 3
    assert len(fake.checks) == asked


async def test_after_events_are_delivered_at_least_once_with_retries(
    harness: Harness, receiver: tuple[Receiver, str]
) -> None:
    fake, url = receiver
    await harness.user("alice")
    await harness.user("bob")
    endpoint = await add_endpoint(harness, url, ["after_send", "after_op", "membership"])
    fake.failing["after_send"] = 2  # the message's event is answered 503 twice, then accepted
    alice = await harness.device("alice")
    ack = await alice.send(DM, "hi bob")
    await alice.react(DM, ack.seq, "👍")
    await alice.edit(DM, ack.seq, "hi bob!", base_version=1)
    await harness.rest("alice").create_group("team", ["bob"], group_id="team")
    await fake.until(lambda: len(fake.events) >= 4)
    [sent] = fake.of_type("after_send")
    assert sent["data"]["conv"] == DM
    assert sent["data"]["seq"] == ack.seq
    assert sent["data"]["body"] == {"text": "hi bob"}
    assert sent["data"]["msg_id"] == ack.msg_id
    assert sent["id"] == f"m_{ack.msg_id}"
    assert sorted(e["data"]["kind"] for e in fake.of_type("after_op")) == ["edit", "react"]
    [group] = fake.of_type("membership")
    assert group["data"]["body"]["event"] == "group_created"
    assert group["data"]["conv"] == "g:team"
    # The first delivery took three tries; the admin sees it delivered, with every try counted.
    path = f"/v1/admin/webhooks/{endpoint['endpoint_id']}/deliveries"
    deadline = time.monotonic() + 5
    while True:  # an outcome is recorded just after the receiver answered
        delivered = await harness.admin.request("GET", path, params={"state": "delivered"}, admin=True)
        tries = {d["event_id"]: d["tries"] for d in delivered["items"]}
        if len(tries) == 4 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert tries[sent["id"]] == 3
    assert len(tries) == 4
    assert [r.json()["id"] for r in fake.requests].count(sent["id"]) == 3
    assert fake.bad_signatures == 0


async def test_dead_letters_after_max_tries_then_replay(harness: Harness, receiver: tuple[Receiver, str]) -> None:
    fake, url = receiver
    await harness.user("alice")
    await harness.user("bob")
    endpoint = await add_endpoint(harness, url, ["after_send"])
    fake.fail_next(3, 500, "down")  # FLARE_WEBHOOK_MAX_TRIES=3: every try fails
    ack = await harness.rest("alice").send(DM, "c-1", {"text": "lost for now"})
    deliveries = f"/v1/admin/webhooks/{endpoint['endpoint_id']}/deliveries"

    async def dead() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (
            await harness.admin.request("GET", deliveries, params={"state": "dead"}, admin=True)
        )["items"]
        return found

    deadline = time.monotonic() + 10
    while not (letters := await dead()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    [letter] = letters
    assert (letter["tries"], letter["event_id"]) == (3, f"m_{ack['msg_id']}")
    assert letter["last_error"].startswith("500")
    assert letter["payload"]["data"]["body"] == {"text": "lost for now"}
    assert fake.events == []
    assert len(fake.requests) == 3
    await asyncio.sleep(0.5)
    assert len(fake.requests) == 3  # dead: no more tries

    # Replay a delivery that is not dead: nothing. Then replay the dead letter: delivered once.
    replay = f"/v1/admin/webhooks/{endpoint['endpoint_id']}/replay"
    none = await harness.admin.request("POST", replay, json={"delivery_ids": ["wh_x|nothing"]}, admin=True)
    assert none == {"replayed": 0}
    assert await harness.admin.request("POST", replay, json={}, admin=True) == {"replayed": 1}
    await fake.until(lambda: len(fake.events) == 1)
    assert fake.events[0]["id"] == f"m_{ack['msg_id']}"
    assert await dead() == []
    deadline = time.monotonic() + 5
    while not (delivered := await harness.admin.request("GET", deliveries, params={"state": "delivered"}, admin=True))[
        "items"
    ]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert [d["tries"] for d in delivered["items"]] == [1]


async def test_presence_and_push_dropped_events(harness: Harness, receiver: tuple[Receiver, str]) -> None:
    fake, url = receiver
    await harness.user("alice")
    await harness.user("bob")
    await add_endpoint(harness, url, ["presence", "push_dropped"])
    # Bob registers a device with a provider this server has not configured: his notifications are dropped.
    await harness.rest("bob").register_push("phone", "fcm", "fcm-token:" + "x" * 40)
    alice = await harness.device("alice")
    await fake.until(lambda: any(e["data"] == {"user": "alice", "state": "online", "last_seen": 0}
                                 for e in fake.of_type("presence")))  # fmt: skip
    await alice.send(DM, "are you there?")
    await fake.until(lambda: bool(fake.of_type("push_dropped")))
    [drop] = fake.of_type("push_dropped")
    assert (drop["data"]["user"], drop["data"]["device"], drop["data"]["conv"]) == ("bob", "phone", DM)
    assert drop["data"]["reason"].startswith("provider_disabled")
    await alice.close()
    harness.clients.remove(alice)
    await fake.until(lambda: any(e["data"]["state"] == "offline" for e in fake.of_type("presence")))
    assert fake.bad_signatures == 0


async def test_admin_refuses_bad_endpoints_and_changes_nothing(harness: Harness) -> None:
    admin = harness.admin

    async def refused(method: str, path: str, body: Any) -> FlareError:
        with pytest.raises(FlareError) as err:
            await admin.request(method, path, json=body, admin=True)
        return err.value

    good = {"url": "https://hooks.example.com/flare", "events": ["after_send"]}
    for bad in (
        {**good, "url": "ftp://hooks.example.com/x"},
        {**good, "url": "https://user:pw@hooks.example.com/x"},
        {**good, "url": "http://[::1/x"},
        {**good, "url": "http://hooks.example.com:99999/x"},
        {**good, "events": []},
        {**good, "events": ["after_everything"]},
        {**good, "timeout_ms": 10},
        {**good, "policy": "maybe"},
        {**good, "secret": "short"},
        {**good, "unknown": 1},
    ):
        assert (await refused("POST", "/v1/admin/webhooks", bad)).code == ErrorCode.INVALID, bad
    assert (await admin.request("GET", "/v1/admin/webhooks", admin=True))["items"] == []
    created = await admin.request("POST", "/v1/admin/webhooks", json=good, admin=True)
    assert len(created["secret"]) >= 32
    assert created["timeout_ms"] == 2000
    assert created["policy"] == "open"
    path = f"/v1/admin/webhooks/{created['endpoint_id']}"
    assert (await refused("PATCH", path, {"events": ["nope"]})).code == ErrorCode.INVALID
    assert (await refused("PATCH", path, {"url": "https://a:b@example.com/"})).code == ErrorCode.INVALID
    assert (await admin.request("GET", path, admin=True))["events"] == ["after_send"]
    assert "secret" not in await admin.request("GET", path, admin=True)
    assert (await refused("PATCH", "/v1/admin/webhooks/wh_0000", {"enabled": False})).code == ErrorCode.NOT_FOUND
    assert (await refused("DELETE", "/v1/admin/webhooks/wh_0000", None)).code == ErrorCode.NOT_FOUND
    assert (await refused("GET", f"{path}/deliveries?state=lost", None)).code == ErrorCode.INVALID
    with pytest.raises(FlareError) as no_key:
        await admin.request("GET", "/v1/admin/webhooks")  # without the admin key
    assert no_key.value.code == ErrorCode.UNAUTHORIZED
    await admin.request("DELETE", path, admin=True)
    assert (await admin.request("GET", "/v1/admin/webhooks", admin=True))["items"] == []
