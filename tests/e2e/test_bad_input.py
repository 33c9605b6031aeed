"""Bad input gets a clear error with a stable code, changes nothing, and never affects another connection."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import jwt
import msgspec
import pytest

from flare_im.protocol.codec import Encoding
from flare_im.protocol.errors import CloseCode, ErrorCode, FlareError

from .conftest import Harness, ServerProcess, raw_authed, raw_connect
from .witness import Witness

DM = "d:alice:bob"


async def _pair(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{not json", 400),
        ("[1, 2, 3]", 422),
        ('{"id": 7}', 400),  # no type
        ('{"type": "teleport", "id": 7}', 400),
        ('{"type": "send", "id": 7, "conv": "d:alice:bob", "body": {"text": "x"}}', 422),  # no cmid
        ('{"type": "send", "id": "seven", "conv": "d:alice:bob", "cmid": "c", "body": {"text": "x"}}', 422),
        ('{"type": "send", "id": 7, "conv": "d:alice:bob", "cmid": "c", "body": "text"}', 422),
        ('{"type": "send", "id": 7, "conv": "d:alice:bob", "cmid": "c", "body": {}}', 422),  # text needs body.text
        ('{"type": "send", "id": 7, "conv": "d:alice:bob", "cmid": "c", "kind": "system", "body": {"a": 1}}', 422),
        ('{"type": "send", "id": 7, "conv": "x:y", "cmid": "c", "body": {"text": "x"}}', 422),
        ('{"type": "send", "id": 7, "conv": "d:bob:alice", "cmid": "c", "body": {"text": "x"}}', 422),  # unsorted
        ('{"type": "send", "id": 7, "conv": "d:bob:carol", "cmid": "c", "body": {"text": "x"}}', 403),  # forged
        ('{"type": "send", "id": 7, "conv": "d:alice:nobody", "cmid": "c", "body": {"text": "x"}}', 404),
        ('{"type": "send", "id": 7, "conv": "g:nosuchgroup", "cmid": "c", "body": {"text": "x"}}', 404),
        ('{"type": "pull", "id": 7, "conv": "d:alice:bob", "after": -1}', 422),
        ('{"type": "pull", "id": 7, "conv": "d:alice:bob", "limit": 100000}', 422),
        ('{"type": "pull", "id": 7, "conv": "d:alice:bob", "after": 50}', 416),
        ('{"type": "pull", "id": 7, "conv": "d:alice:bob", "before": 50}', 416),
        ('{"type": "pull", "id": 7, "conv": "d:alice:bob", "after": 1, "before": 1}', 422),
        ('{"type": "read", "id": 7, "conv": "d:alice:bob", "seq": 99}', 416),
        ('{"type": "auth", "id": 7, "token": "again", "device": "d"}', 400),
    ],
)
async def test_bad_frames_get_error_and_change_nothing(harness: Harness, payload: str, code: int) -> None:
    await _pair(harness)
    await harness.user("carol")
    bob = await harness.device("bob")
    await bob.send(DM, "the only message")
    raw = await raw_authed(harness.srv, harness.tokens["alice"])
    # The conversation the frame names (a forged one: bob's and carol's), else alice's and bob's.
    if "d:bob:carol" in payload:
        witness = await Witness.open(harness, "d:bob:carol", ["bob", "carol"], others=["alice"])
    else:
        witness = await Witness.open(harness, DM, ["bob", "alice"])
    before = await witness.snapshot()
    raw.send_text(payload)
    reply = await raw.recv_json()
    assert (reply["type"], reply["code"]) == ("error", code), reply
    assert isinstance(reply["message"], str)
    assert reply["message"]
    if code not in (400,) or '"id": 7' in payload:
        assert reply.get("id") in (7, None)
    # The connection still works, nothing was stored and nothing was pushed.
    raw.send_text('{"type": "ping", "id": 8}')
    assert (await raw.recv_json())["type"] == "pong"
    await witness.unchanged(before)


async def test_malformed_msgpack_and_oversize_frames(harness: Harness) -> None:
    await _pair(harness)
    raw = await raw_authed(harness.srv, harness.tokens["alice"])
    raw.send_binary(b"\xc1\xc1\xc1")  # 0xc1 is never valid MessagePack
    assert (await raw.recv_json())["code"] == ErrorCode.BAD_REQUEST
    big = json.dumps({"type": "send", "id": 9, "conv": DM, "cmid": "big", "body": {"text": "x" * 70_000}})
    raw.send_text(big)
    reply = await raw.recv_json()
    assert (reply["code"], reply["id"]) == (ErrorCode.TOO_LARGE, 9)
    body_too_big = json.dumps({"type": "send", "id": 10, "conv": DM, "cmid": "b2", "body": {"text": "y" * 20_000}})
    raw.send_text(body_too_big)
    assert (await raw.recv_json())["code"] == ErrorCode.TOO_LARGE
    raw.send_text('{"type": "ping", "id": 11}')
    assert (await raw.recv_json())["type"] == "pong"
    # Far beyond the frame limit, the transport itself closes the connection (1009).
    raw.send_text("z" * (64 * 1024 * 17))
    assert await raw.wait_closed() == 1009


async def test_msgpack_client_gets_msgpack_errors(harness: Harness) -> None:
    await _pair(harness)
    alice = await harness.device("alice", encoding=Encoding.MSGPACK)
    with pytest.raises(FlareError) as err:
        await alice.send("d:bob:carol", "forged", attempts=1)
    assert err.value.code == ErrorCode.FORBIDDEN
    assert (await alice.send(DM, "fine")).seq == 1


async def test_auth_failures_close_the_connection(harness: Harness) -> None:
    await _pair(harness)
    secret = (harness.srv.data_dir / "jwt.secret").read_text().strip()
    expired = jwt.encode(
        {"sub": "alice", "iss": "flare", "typ": "access", "iat": 1, "exp": int(time.time()) - 10},
        secret,
        algorithm="HS256",
    )
    forged = jwt.encode(
        {"sub": "alice", "iss": "flare", "typ": "access", "exp": int(time.time()) + 60},
        "not-the-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    for token, fragment in ((expired, "expired"), (forged, "invalid"), ("garbage", "invalid")):
        raw = await raw_connect(harness.srv.ws_url)
        raw.send_text(json.dumps({"type": "auth", "id": 1, "token": token, "device": "d"}))
        reply = await raw.recv_json()
        assert (reply["type"], reply["code"], reply["id"]) == ("error", 401, 1)
        assert fragment in reply["message"]
        assert await raw.wait_closed() == CloseCode.AUTH_FAILED
    # A frame other than auth first closes with 4003.
    raw = await raw_connect(harness.srv.ws_url)
    raw.send_text('{"type": "ping", "id": 1}')
    assert await raw.wait_closed() == CloseCode.PROTOCOL_VIOLATION
    # REST rejects the same tokens.
    for token in (expired, forged):
        rest = harness.rest("alice")
        rest.token = token
        with pytest.raises(FlareError) as err:
            await rest.me()
        assert err.value.code == ErrorCode.UNAUTHORIZED
        rest.token = harness.tokens["alice"]


async def test_a_flooding_client_does_not_affect_others(harness: Harness) -> None:
    await _pair(harness)
    alice = await harness.device("alice")
    bob = await harness.device("bob")
    flooder = await raw_authed(harness.srv, harness.tokens["alice"], device="flood")
    # 240 frames against a burst of 200: about 40 rate-limited, below the 50 that close the connection.
    for i in range(236):
        flooder.send_text(json.dumps({"type": "ping", "id": i}))
        if i % 60 == 0:
            flooder.send_text("{garbage")
    replies = []
    while True:
        try:
            replies.append(await flooder.recv_json(timeout=2))
        except TimeoutError:
            break
    limited = sum(r.get("code") == ErrorCode.RATE_LIMITED for r in replies)
    assert limited > 0
    assert limited + sum(r["type"] == "pong" for r in replies) > 200
    assert flooder.close_code is None
    # Meanwhile the well-behaved connections are unaffected.
    ack = await alice.send(DM, "still here")
    assert (await bob.next_message()).seq == ack.seq
    # A client that keeps flooding is disconnected with 4029, which it sees although it is still writing
    # (test_server_close.py).
    for i in range(1000):
        flooder.send_text(json.dumps({"type": "ping", "id": i}))
    assert await flooder.wait_closed() == CloseCode.RATE_LIMITED
    ack = await alice.send(DM, "and still here")
    assert (await bob.next_message()).seq == ack.seq


async def test_slow_consumer_is_disconnected(tmp_path: object) -> None:
    from .conftest import ServerProcess

    srv = ServerProcess(
        tmp_path / "slow",  # type: ignore[operator]
        env_overrides={
            "FLARE_SEND_BUFFER_BYTES": "65536",
            "FLARE_SLOW_CONSUMER_GRACE_S": "0.5",
            "FLARE_RATE_LIMIT_PER_S": "100000",
            "FLARE_RATE_LIMIT_BURST": "100000",
        },
    )
    srv.start()
    h = Harness(srv)
    try:
        await _pair(h)
        alice = await h.device("alice")
        slow = await raw_authed(srv, h.tokens["bob"], device="slow")
        assert slow.transport is not None
        slow.transport.underlying_transport.pause_reading()  # stop reading: the server's buffer fills
        text = "x" * 8000
        # Far more than the kernel's socket buffers hold, so the server's own buffer must grow.
        for chunk in range(20):
            await asyncio.gather(*(alice.send(DM, text, cmid=f"m{chunk}-{i}") for i in range(100)))
            if slow.disconnected.is_set():
                break
        slow.transport.underlying_transport.resume_reading()
        code = await slow.wait_closed(timeout=20)
        assert code == CloseCode.SLOW_CONSUMER
        # The sender was never affected and every message is in the log for the slow client to sync.
        assert (await alice.pull(DM)).max_seq == (chunk + 1) * 100
    finally:
        await h.close()
        srv.stop()


async def test_idle_connection_without_pongs_is_closed(tmp_path: object) -> None:
    from .conftest import ServerProcess

    srv = ServerProcess(
        tmp_path / "hb",  # type: ignore[operator]
        env_overrides={"FLARE_HEARTBEAT_S": "0.3", "FLARE_HEARTBEAT_TIMEOUT_S": "0.3"},
    )
    srv.start()
    h = Harness(srv)
    try:
        await _pair(h)
        live = await h.device("alice")  # answers pings (picows auto-pong)
        raw = await raw_connect(srv.ws_url, enable_auto_pong=False)
        raw.send_text(json.dumps({"type": "auth", "id": 1, "token": h.tokens["bob"], "device": "mute"}))
        assert (await raw.recv_json())["type"] == "auth_ok"
        started = time.monotonic()
        await raw.wait_closed(timeout=10)
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.5)
        assert (await live.ping()) > 0  # the healthy connection survived the same idle time
    finally:
        await h.close()
        srv.stop()


def test_protocol_doc_lists_every_error_code() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    for code in ErrorCode:
        assert str(int(code)) in doc, code
    for close in CloseCode:
        assert str(int(close)) in doc, close
    assert msgspec  # frames documented are checked in tests/unit


async def test_per_user_send_rate_spans_the_users_devices(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env_overrides={"FLARE_USER_SEND_RATE_PER_S": "5"})
    srv.start()
    harness = Harness(srv)
    try:
        await harness.user("alice")
        await harness.user("bob")
        phone = await harness.device("alice", "phone")
        laptop = await harness.device("alice", "laptop")
        results = await asyncio.gather(
            *(d.send(DM, f"burst {i}", attempts=1) for i in range(6) for d in (phone, laptop)),
            return_exceptions=True,
        )
        limited = [r for r in results if isinstance(r, FlareError)]
        assert len(results) - len(limited) <= 6  # a bucket of 5 for both devices (plus a refill at most)
        assert limited
        assert {e.code for e in limited} == {ErrorCode.RATE_LIMITED}
        assert all(e.retryable for e in limited)
        await asyncio.sleep(1.1)  # the bucket refills
        assert (await phone.send(DM, "later", attempts=1)).seq > 0
        bob = await harness.device("bob")
        assert (await bob.send(DM, "bob has his own bucket", attempts=1)).seq > 0
    finally:
        await harness.close()
        srv.stop()


@pytest.mark.parametrize("req_id", [2**63, 2**64 - 1, -1, 2**70])
@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ping"},
        {"type": "send", "conv": DM, "body": {"text": "x"}},  # also invalid otherwise (no cmid)
    ],
)
async def test_an_out_of_range_request_id_is_not_echoed(
    harness: Harness, req_id: int, frame: dict[str, object]
) -> None:
    await _pair(harness)
    raw = await raw_authed(harness.srv, harness.tokens["alice"])
    raw.send_text(json.dumps({**frame, "id": req_id}))
    reply = await raw.recv_json()
    assert (reply["type"], reply["code"]) == ("error", ErrorCode.INVALID), reply
    assert "id" not in reply  # not the out-of-range id, and not null: omitted (protocol.md §1)
    raw.send_text(json.dumps({"type": "ping", "id": 2**63 - 1}))  # the largest valid id is echoed exactly
    pong = await raw.recv_json()
    assert (pong["type"], pong["id"]) == ("pong", 2**63 - 1)


async def test_a_direct_conversation_with_an_unknown_peer_is_404_everywhere(harness: Harness) -> None:
    """One rule for unknown peers: pull, read, settings and send all answer 404, on WebSocket and REST,
    while a direct conversation with an existing user who was never written to pulls an empty page."""
    await _pair(harness)  # alice and bob exist; nobody does not
    ghost = "d:alice:nobody"
    raw = await raw_authed(harness.srv, harness.tokens["alice"])
    frames = [
        {"type": "pull", "conv": ghost, "after": 0},
        {"type": "pull", "conv": ghost},
        {"type": "read", "conv": ghost, "seq": 0},
        {"type": "delivered", "conv": ghost, "seq": 0},
        {"type": "settings", "conv": ghost, "pinned": True},
        {"type": "send", "conv": ghost, "cmid": "c-ghost", "body": {"text": "x"}},
    ]
    for i, frame in enumerate(frames, start=10):
        raw.send_text(json.dumps({**frame, "id": i}))
        reply = await raw.recv_json()
        assert (reply["type"], reply["code"], reply["id"]) == ("error", ErrorCode.NOT_FOUND, i), (frame, reply)
    rest = harness.rest("alice")
    for call in (
        rest.history(ghost),
        rest.request("POST", f"/v1/conversations/{ghost}/read", json={"seq": 0}),
        rest.request("PATCH", f"/v1/conversations/{ghost}/settings", json={"pinned": True}),
        rest.send(ghost, "c-ghost-rest", {"text": "x"}),
    ):
        with pytest.raises(FlareError) as err:
            await call
        assert err.value.code == ErrorCode.NOT_FOUND
    # Nothing was created by the refused requests.
    raw.send_text(json.dumps({"type": "sync", "id": 30, "since": 0}))
    assert (await raw.recv_json())["items"] == []
    # An existing peer with no messages yet: an empty page on both transports, still no list entry.
    raw.send_text(json.dumps({"type": "pull", "id": 31, "conv": DM, "after": 0}))
    page = await raw.recv_json()
    assert (page["type"], page["id"], page.get("items", []), page["max_seq"]) == ("messages", 31, [], 0)
    rest_page = await rest.history(DM)
    assert (rest_page["items"], rest_page["max_seq"], rest_page["min_seq"]) == ([], 0, 1)
    assert (await rest.conversations())["items"] == []


async def test_an_invalid_auth_gets_an_error_and_the_connection_keeps_waiting(harness: Harness) -> None:
    """protocol.md §2: before authentication an undecodable or invalid frame, an invalid auth included, gets
    an error and the connection waits for a valid auth."""
    await _pair(harness)
    raw = await raw_connect(harness.srv.ws_url)
    for payload, code, req_id in (
        ('{"type": "auth", "id": 1, "token": "x"}', ErrorCode.INVALID, 1),  # no device
        (json.dumps({"type": "auth", "id": 2, "token": "x" * 4097, "device": "d"}), ErrorCode.INVALID, 2),
        (json.dumps({"type": "auth", "id": 2**63, "token": "x", "device": "d"}), ErrorCode.INVALID, None),
        ("{garbage", ErrorCode.BAD_REQUEST, None),
    ):
        raw.send_text(payload)
        reply = await raw.recv_json()
        assert (reply["type"], reply["code"], reply.get("id")) == ("error", code, req_id), reply
    assert raw.close_code is None
    raw.send_text(json.dumps({"type": "auth", "id": 3, "token": harness.tokens["alice"], "device": "d"}))
    assert (await raw.recv_json())["type"] == "auth_ok"
    raw.send_text('{"type": "ping", "id": 4}')
    assert (await raw.recv_json())["type"] == "pong"
