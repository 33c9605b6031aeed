"""Hostile input (issue 10, items 4-6): message bodies a client cannot hold, numbers past what a seq can be, lone
surrogates and deep nesting get a clear 4xx on both transports, change nothing and hurt no other user; bodies
stored before the rule still pull and sync on JSON and MessagePack (docs/protocol.md §3 "Body values")."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import msgspec
import pytest

from flare_im.protocol.codec import Encoding
from flare_im.protocol.errors import ErrorCode
from flare_im.sdk.rest import RestClient

from .conftest import Harness, RawWs, ServerProcess, raw_authed, raw_connect

DM = "d:alice:bob"
HUGE = 99999999999999999999999  # past 2**63 - 1: SQLite cannot bind it


def _nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` arrays around ``leaf``."""
    return "[" * depth + leaf + "]" * depth


async def _users(harness: Harness, *uids: str) -> None:
    for uid in uids:
        await harness.user(uid)


async def _rest(harness: Harness, method: str, path: str, content: str | bytes | None = None, **kw: Any) -> Any:
    """A REST call with a raw JSON text (``content``) as alice; returns the response."""
    headers = {"Authorization": f"Bearer {harness.tokens['alice']}", "Content-Type": "application/json"}
    headers |= kw.pop("headers", {})
    async with httpx.AsyncClient(base_url=harness.srv.api_url) as http:
        return await http.request(method, path, content=content, headers=headers, **kw)


def _assert_error(resp: httpx.Response, code: int, *, mentions: str = "") -> dict[str, Any]:
    assert resp.status_code == code, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code
    assert error["retryable"] is False
    assert mentions in error["message"], error
    return error


async def _max_seq(harness: Harness, conv: str = DM) -> int:
    page = await harness.rest("alice").history(conv)
    return int(page["max_seq"])


async def _ws_reply(ws: RawWs, frame: str | bytes, binary: bool = False) -> dict[str, Any]:
    if binary:
        assert isinstance(frame, bytes)
        ws.send_binary(frame)
        raw = await ws.frames.get()
        reply: dict[str, Any] = msgspec.msgpack.decode(raw)
        return reply
    ws.send_text(frame)
    return await ws.recv_json()


async def _still_open(ws: RawWs, binary: bool = False) -> None:
    ping = msgspec.msgpack.encode({"type": "ping", "id": 99}) if binary else '{"type": "ping", "id": 99}'
    assert (await _ws_reply(ws, ping, binary))["type"] == "pong"


# ---------------------------------------------------------------- item 4: body values


BAD_JSON_BODIES = [
    ('{"text": "x", "n": 123456789012345678901234567890}', 422, "$.body.n"),
    ('{"text": "x", "n": 9007199254740992}', 422, "$.body.n"),
    ('{"text": "x", "n": -9007199254740992}', 422, "$.body.n"),
    ('{"text": "x", "meta": {"odd key": [1, {"id": 18446744073709551615}]}}', 422, '$.body.meta["odd key"][1].id'),
    ('{"text": "x", "f": 1e400}', 422, "out of range"),
    ('{"text": "x", "f": 1.5e308}', 422, "number out of range"),  # a whole number, as 2**53 is
    ('{"text": "x", "f": 9007199254740992.0}', 422, "$.body.f"),
    ('{"text": "x", "f": NaN}', 400, "malformed"),
    ('{"text": "x", "f": -Infinity}', 400, "malformed"),
    ('{"text": "x\\ud800"}', 400, "malformed"),
    ('{"text": "x", "\\udc00": 1}', 400, "malformed"),
    ('{"text": "x", "deep": ' + _nested(32) + "}", 422, "nested deeper than 32"),
]


@pytest.mark.parametrize(("body", "code", "mentions"), BAD_JSON_BODIES)
async def test_bad_body_values_are_refused_over_rest_and_websocket(
    harness: Harness, body: str, code: int, mentions: str
) -> None:
    await _users(harness, "alice", "bob")
    bob = await harness.device("bob", encoding=Encoding.MSGPACK)  # the recipient a bad body used to break
    await harness.rest("alice").send(DM, "first", {"text": "first"})
    assert (await bob.next_message()).seq == 1

    resp = await _rest(harness, "POST", f"/v1/conversations/{DM}/messages", f'{{"cmid": "c1", "body": {body}}}')
    _assert_error(resp, code, mentions=mentions)

    ws = await raw_authed(harness.srv, harness.tokens["alice"])
    reply = await _ws_reply(ws, f'{{"type": "send", "id": 5, "conv": "{DM}", "cmid": "c2", "body": {body}}}')
    assert (reply["type"], reply["code"]) == ("error", code), reply
    assert mentions in reply["message"]
    assert not reply.get("retryable")
    await _still_open(ws)

    # Nothing stored, the recipient unharmed: it pulls, syncs, and gets the next message.
    assert await _max_seq(harness) == 1
    page = await bob.pull(DM)
    assert [m.seq for m in page.items] == [1]
    assert [c.max_seq for c in await bob.sync(0)] == [1]
    await harness.rest("alice").send(DM, "after", {"text": "after"})
    assert (await bob.next_message()).body == {"text": "after"}


BAD_MSGPACK_BODIES = [
    ({"text": "x", "n": 2**64 - 1}, "$.body.n"),
    ({"text": "x", "n": -(2**63)}, "$.body.n"),
    ({"text": "x", "f": float("nan")}, "$.body.f"),
    ({"text": "x", "list": [1.0, float("-inf")]}, "$.body.list[1]"),
]


@pytest.mark.parametrize(("body", "mentions"), BAD_MSGPACK_BODIES)
async def test_bad_body_values_are_refused_over_msgpack(harness: Harness, body: dict[str, Any], mentions: str) -> None:
    await _users(harness, "alice", "bob")
    ws = await raw_connect(harness.srv.ws_url + "?encoding=msgpack")
    auth = {"type": "auth", "id": 1, "token": harness.tokens["alice"], "device": "mp"}
    assert (await _ws_reply(ws, msgspec.msgpack.encode(auth), True))["type"] == "auth_ok"
    send = {"type": "send", "id": 5, "conv": DM, "cmid": "c1", "body": body}
    reply = await _ws_reply(ws, msgspec.msgpack.encode(send), True)
    assert (reply["type"], reply["code"], reply.get("id")) == ("error", 422, 5), reply
    assert mentions in reply["message"]
    edit = {"type": "op", "id": 6, "conv": DM, "op": "edit", "target": 1, "opid": "o1", "body": body, "base_version": 1}
    reply = await _ws_reply(ws, msgspec.msgpack.encode(edit), True)
    assert (reply["type"], reply["code"]) == ("error", 422), reply
    await _still_open(ws, binary=True)
    assert await _max_seq(harness) == 0


async def test_body_at_the_limits_is_accepted_and_reads_back_the_same_everywhere(harness: Harness) -> None:
    await _users(harness, "alice", "bob")
    bob_mp = await harness.device("bob", "mp", encoding=Encoding.MSGPACK)
    bob_json = await harness.device("bob", "js")
    body = {
        "text": "x",
        "max": 2**53 - 1,
        "min": -(2**53 - 1),
        "f": -1.5e15,
        "g": 2.5e-300,
        "deep": json.loads(_nested(31)),
    }
    ack = await harness.rest("alice").send(DM, "c1", body)
    for client in (bob_mp, bob_json):
        assert (await client.next_message()).body == body
        assert (await client.pull(DM)).items[0].body == body
    assert (await harness.rest("bob").history(DM))["items"][0]["body"] == body
    assert ack["seq"] == 1


async def test_group_fan_out_reaches_everyone_after_a_refused_body(harness: Harness) -> None:
    await _users(harness, "alice", "bob", "carol", "dave")
    group = await harness.rest("alice").create_group("team", ["bob", "carol", "dave"])
    conv = group["conv"]
    members = [
        await harness.device("bob", encoding=Encoding.MSGPACK),
        await harness.device("carol"),
        await harness.device("dave", encoding=Encoding.MSGPACK),
    ]
    bad = '{"cmid": "c1", "body": {"text": "x", "n": 123456789012345678901234567890}}'
    _assert_error(await _rest(harness, "POST", f"/v1/conversations/{conv}/messages", bad), 422, mentions="$.body.n")
    await harness.rest("alice").send(conv, "c2", {"text": "hello", "n": 2**53 - 1})
    for member in members:
        assert (await member.next_message()).kind == "system"  # the group was created: seq 1
        message = await member.next_message()
        assert (message.seq, message.body) == (2, {"text": "hello", "n": 2**53 - 1})


# ---------------------------------------------------------------- item 4: bodies stored before the rule


def _store_raw_message(srv: ServerProcess, conv: str, seq: int, sender: str, body: bytes) -> None:
    """Write a message row straight into the embedded store, as an older server could have written it."""
    db = sqlite3.connect(srv.data_dir / "flare.db")
    with db:
        msg_id = db.execute("SELECT max(msg_id) FROM messages").fetchone()[0] + seq
        ts = db.execute("SELECT max(ts) FROM messages").fetchone()[0] + 1
        db.execute(
            "INSERT INTO messages (conv, seq, msg_id, sender, cmid, kind, body, ts) VALUES (?,?,?,?,?,?,?,?)",
            (conv, seq, msg_id, sender, f"old-{seq}", "text", body, ts),
        )
        db.execute("UPDATE conv_heads SET max_seq = ? WHERE conv = ?", (seq, conv))
    db.close()


STORED = (
    b'{"text": "old", "big": 123456789012345678901234567890, "mid": 1152921504606846976, "neg": -18446744073709551617,'
    b' "s": "a\\ud800b", "\\udc00k": 1, "pair": "\\ud83d\\ude00", "ok": [1, 2.5, null, true, "t"], "deep": '
    + _nested(70).encode()
    + b"}"
)


def _sanitised_deep() -> Any:
    """The 70 nested arrays of ``STORED`` as read back: 63 of them (the body is the first of the 64 levels
    allowed), the innermost holding null in place of the rest."""
    value: Any = None
    for _ in range(63):
        value = [value]
    return value


EXPECTED = {
    "text": "old",
    "big": "123456789012345678901234567890",
    "mid": "1152921504606846976",
    "neg": "-18446744073709551617",
    "s": "a\ufffdb",
    "\ufffdk": 1,
    "pair": "\U0001f600",
    "ok": [1, 2.5, None, True, "t"],
    "deep": _sanitised_deep(),
}


async def test_bodies_stored_before_the_rule_still_pull_and_sync(harness: Harness) -> None:
    await _users(harness, "alice", "bob")
    await harness.rest("alice").send(DM, "c1", {"text": "first"})
    srv = harness.srv
    srv.stop()
    _store_raw_message(srv, DM, 2, "alice", STORED)
    srv.start()
    for client in (harness.admin, *harness._rest.values()):
        await client.aclose()
    harness.admin = RestClient(srv.api_url, admin_key=srv.admin_key)
    harness._rest.clear()

    for encoding in (Encoding.MSGPACK, Encoding.JSON):
        bob = await harness.device("bob", encoding.value, encoding=encoding)
        page = await bob.pull(DM)
        assert [m.seq for m in page.items] == [1, 2]
        assert page.items[1].body == EXPECTED
        (entry,) = await bob.sync(0, recent=5)
        assert entry.last is not None
        assert entry.last.body == EXPECTED
        assert entry.recent[-1].body == EXPECTED
    assert (await harness.rest("bob").history(DM))["items"][1]["body"] == EXPECTED
    listed = (await harness.rest("bob").conversations())["items"][0]
    assert listed["last"]["body"] == EXPECTED
    # The conversation goes on: the next message gets the next seq and reaches both encodings.
    await harness.rest("alice").send(DM, "c3", {"text": "new"})
    for client in harness.clients:
        while (message := await client.next_message()).seq != 3:  # the stream may first yield what it pulled
            assert message.seq < 3
        assert message.body == {"text": "new"}


# ---------------------------------------------------------------- item 5: integers and strings on REST


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", f"/v1/conversations/{DM}/messages/{HUGE}/ops", '{"op": "react", "opid": "o1", "emoji": "ok"}'),
        ("POST", f"/v1/conversations/{DM}/messages/{HUGE}/ops", '{"op": "delete_for_me", "opid": "o1"}'),
        ("GET", f"/v1/conversations/{DM}/messages/{HUGE}/revisions", None),
        ("GET", f"/v1/conversations/{DM}/messages/{HUGE}/readers", None),
        ("POST", f"/v1/conversations/{DM}/forward", f'{{"seqs": [1, {HUGE}], "to": "{DM}", "cmid": "f1"}}'),
        (
            "POST",
            f"/v1/conversations/{DM}/messages",
            f'{{"cmid": "r1", "body": {{"text": "x", "reply_to": {{"seq": {HUGE}}}}}}}',
        ),
        ("GET", f"/v1/conversations/{DM}/messages?after={HUGE}", None),
        ("GET", f"/v1/conversations/{DM}/messages?before={HUGE}", None),
        ("GET", f"/v1/conversations?since={HUGE}", None),
        ("POST", f"/v1/conversations/{DM}/read", f'{{"seq": {HUGE}}}'),
        ("PATCH", f"/v1/conversations/{DM}/settings", f'{{"clear_to": {HUGE}}}'),
        (
            "POST",
            f"/v1/conversations/{DM}/messages/1/ops",
            f'{{"op": "edit", "opid": "o2", "body": {{"text": "y"}}, "base_version": {HUGE}}}',
        ),
    ],
)
async def test_integers_past_their_range_are_422_over_rest(
    harness: Harness, method: str, path: str, content: str | None
) -> None:
    await _users(harness, "alice", "bob")
    await harness.rest("alice").send(DM, "c1", {"text": "first"})
    before = await harness.rest("alice").conversations()
    _assert_error(await _rest(harness, method, path, content), 422)
    assert await harness.rest("alice").conversations() == before
    assert await _max_seq(harness) == 1


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/v1/admin/tokens", f'{{"user_ids": ["alice"], "ttl_s": {HUGE}}}'),
        ("/v1/admin/users/alice/tokens", '{"ttl_s": 1}'),
    ],
)
async def test_token_ttl_out_of_range_is_422(harness: Harness, path: str, content: str) -> None:
    await _users(harness, "alice")
    resp = await _rest(harness, "POST", path, content, headers={"X-Admin-Key": harness.srv.admin_key})
    _assert_error(resp, 422, mentions="ttl_s")


async def test_websocket_refuses_the_same_integers(harness: Harness) -> None:
    await _users(harness, "alice", "bob")
    ws = await raw_authed(harness.srv, harness.tokens["alice"])
    for frame in (
        f'{{"type": "forward", "id": 3, "conv": "{DM}", "seqs": [{HUGE}], "to": "{DM}", "cmid": "f1"}}',
        f'{{"type": "forward", "id": 3, "conv": "{DM}", "seqs": [{2**63}], "to": "{DM}", "cmid": "f1"}}',
        f'{{"type": "op", "id": 3, "conv": "{DM}", "op": "edit", "target": 1, "opid": "o", "body": {{"text": "y"}},'
        f' "base_version": {2**63}}}',
        f'{{"type": "send", "id": 3, "conv": "{DM}", "cmid": "r",'
        f' "body": {{"text": "x", "reply_to": {{"seq": {HUGE}}}}}}}',
    ):
        reply = await _ws_reply(ws, frame)
        assert (reply["type"], reply["code"], reply.get("id")) == ("error", 422, 3), reply
    await _still_open(ws)
    assert await _max_seq(harness) == 0


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", f"/v1/conversations/{DM}/messages", '{"cmid": "c\\ud800", "body": {"text": "x"}}'),
        ("POST", f"/v1/conversations/{DM}/messages", '{"cmid": "c1", "body": {"text": "\\udfff"}}'),
        ("POST", "/v1/groups", '{"name": "team \\ud800"}'),
        ("PATCH", "/v1/me", '{"display_name": "\\ud800"}'),
        ("PATCH", f"/v1/conversations/{DM}/settings", '{"draft": "\\ud83d"}'),
        ("POST", f"/v1/conversations/{DM}/messages", '{"cmid": "c1", "body": {"text": "x", "n": NaN}}'),
    ],
)
async def test_lone_surrogates_in_rest_strings_are_400_as_on_the_websocket(
    harness: Harness, method: str, path: str, content: str
) -> None:
    await _users(harness, "alice", "bob")
    before = await harness.rest("alice").me()
    _assert_error(await _rest(harness, method, path, content), 400, mentions="malformed JSON")
    assert await harness.rest("alice").me() == before
    assert await _max_seq(harness) == 0
    ws = await raw_authed(harness.srv, harness.tokens["alice"])
    reply = await _ws_reply(
        ws, f'{{"type": "send", "id": 3, "conv": "{DM}", "cmid": "c\\ud800", "body": {{"text": "x"}}}}'
    )
    assert (reply["type"], reply["code"]) == ("error", 400), reply


# ---------------------------------------------------------------- item 6: deep nesting


@pytest.mark.parametrize("binary", [False, True])
async def test_deeply_nested_auth_gets_an_error_and_the_connection_waits(harness: Harness, binary: bool) -> None:
    await _users(harness, "alice")
    ws = await raw_connect(harness.srv.ws_url + ("?encoding=msgpack" if binary else ""))
    token = harness.tokens["alice"]
    for _ in range(3):  # each time, and nothing in the log (the fixture fails the test on an ERROR line)
        if binary:
            head = msgspec.msgpack.encode({"type": "auth", "id": 1, "token": token, "device": "d"})
            frame: str | bytes = (
                bytes([head[0] + 1]) + head[1:] + msgspec.msgpack.encode("x") + b"\x91" * 5000 + b"\x01"
            )
        else:
            frame = f'{{"type": "auth", "id": 1, "token": "{token}", "device": "d", "x": {_nested(5000)}}}'
        reply = await _ws_reply(ws, frame, binary)
        assert (reply["type"], reply["code"]) == ("error", ErrorCode.BAD_REQUEST), reply
        assert "nested too deeply" in reply["message"]
    auth = {"type": "auth", "id": 2, "token": token, "device": "d"}
    raw_auth = msgspec.msgpack.encode(auth) if binary else json.dumps(auth)
    assert (await _ws_reply(ws, raw_auth, binary))["type"] == "auth_ok"
    await _still_open(ws, binary)


async def test_deeply_nested_send_and_rest_bodies_are_4xx(harness: Harness) -> None:
    await _users(harness, "alice", "bob")
    ws = await raw_authed(harness.srv, harness.tokens["alice"])
    for depth, code in ((5000, 400), (200, 422)):
        frame = (
            f'{{"type": "send", "id": 3, "conv": "{DM}", "cmid": "c", "body": {{"text": "x", "d": {_nested(depth)}}}}}'
        )
        reply = await _ws_reply(ws, frame)
        assert (reply["type"], reply["code"]) == ("error", code), reply
        content = f'{{"cmid": "c", "body": {{"text": "x", "d": {_nested(depth)}}}}}'
        _assert_error(await _rest(harness, "POST", f"/v1/conversations/{DM}/messages", content), code)
    content = f'{{"username": "alice", "password": "secret", "x": {_nested(5000)}}}'
    _assert_error(await _rest(harness, "POST", "/v1/auth/login", content), 400, mentions="nested too deeply")
    await _still_open(ws)
    assert await _max_seq(harness) == 0
