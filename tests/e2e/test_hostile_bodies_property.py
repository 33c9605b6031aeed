"""Property: any message body, however hostile (huge integers, NaN and Infinity, deep nesting, lone surrogates,
odd keys), sent over REST, WebSocket JSON or WebSocket MessagePack to a running server, is either accepted, and
then reaches the other members on JSON and on MessagePack and pulls back the same on both, or refused with a 4xx
and nothing stored. Never a 5xx, never a closed connection, and never a line in the server's error log."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flare_im.protocol.codec import Encoding
from flare_im.sdk.client import FlareClient
from flare_im.sdk.rest import RestClient

from .conftest import RawWs, ServerProcess, raw_connect

MAX_DEPTH = 32  # docs/protocol.md §3 "Body values"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.sampled_from([2**53 - 1, 2**53, -(2**53 - 1), -(2**53), 2**63, 2**64 - 1, 2**64, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=6),
)
keys = st.text(st.characters(codec=None, exclude_categories=()), max_size=4)  # shorter than any reserved key
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=10
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = draw(st.dictionaries(keys, values, max_size=3))
    depth = draw(st.integers(0, 40))
    if depth:
        deep: Any = draw(scalars)
        for _ in range(depth):
            deep = [deep] if draw(st.booleans()) else {"k": deep}
        body["deep"] = deep
    return {**body, "text": "x"}


def _within_rule(value: Any, depth: int = 1) -> bool:
    """The rule read literally: numbers within ±(2^53 - 1) (floats finite too), no lone surrogates, depth <= 32."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return abs(value) <= 2**53 - 1
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= 2**53 - 1
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    items = list(value.items()) if isinstance(value, dict) else [("", v) for v in value]
    return depth <= MAX_DEPTH and all(_within_rule(k) and _within_rule(v, depth + 1) for k, v in items)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose per-connection frame rate limit does not answer 429 to a fast run: what is checked is each
    body's fate, not the pace (the limit has its own tests)."""
    srv = ServerProcess(
        tmp_path / "data", env_overrides={"FLARE_RATE_LIMIT_PER_S": "100000", "FLARE_RATE_LIMIT_BURST": "100000"}
    )
    srv.start()
    yield srv
    srv.stop()


class Room:
    """A group of alice (the sender: REST, a raw JSON and a raw MessagePack connection), bob (JSON) and carol
    (MessagePack), the two members who must receive every accepted message."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.ids = itertools.count(10)
        self.seq = 0

    async def open(self) -> None:
        srv = self.srv
        admin = RestClient(srv.api_url, admin_key=srv.admin_key)
        tokens = {}
        for uid in ("alice", "bob", "carol"):
            await admin.admin_create_user(uid)
            tokens[uid] = await admin.admin_issue_token(uid)
        await admin.aclose()
        self.bob = FlareClient(srv.ws_url, tokens["bob"], "phone")
        self.carol = FlareClient(srv.ws_url, tokens["carol"], "phone", encoding=Encoding.MSGPACK)
        for member in (self.bob, self.carol):
            await member.connect()
        self.alice = RestClient(srv.api_url, token=tokens["alice"])
        self.conv = (await self.alice.create_group("room", ["bob", "carol"]))["conv"]
        for member in (self.bob, self.carol):
            assert (await member.next_message()).kind == "system"  # the group was created: seq 1
        self.seq = 1
        headers = {"Authorization": f"Bearer {tokens['alice']}", "Content-Type": "application/json"}
        self.http = httpx.AsyncClient(base_url=srv.api_url, headers=headers)
        self.ws_json = await raw_connect(srv.ws_url)
        self.ws_msgpack = await raw_connect(srv.ws_url + "?encoding=msgpack")
        for ws, binary in ((self.ws_json, False), (self.ws_msgpack, True)):
            auth = {"type": "auth", "id": next(self.ids), "token": tokens["alice"], "device": f"raw-{binary}"}
            assert (await self._ws(ws, auth, binary))["type"] == "auth_ok"

    async def close(self) -> None:
        for member in (self.bob, self.carol):
            await member.close()
        await self.http.aclose()
        await self.alice.aclose()

    async def _ws(self, ws: RawWs, frame: dict[str, Any], binary: bool) -> dict[str, Any]:
        """Send a frame (JSON: NaN, Infinity and \ud800 escapes as a client may write them) and return the reply
        to it; pushes to alice's own devices are skipped."""
        if binary:
            ws.send_binary(msgspec.msgpack.encode(frame))
        else:
            ws.send_text(json.dumps(frame))
        while True:
            raw = await asyncio.wait_for(ws.frames.get(), 10)
            reply: dict[str, Any] = msgspec.msgpack.decode(raw) if binary else json.loads(raw)
            if reply["type"] != "msg" and reply.get("id") in (frame["id"], None):
                return reply

    async def send(self, body: dict[str, Any], transport: str) -> tuple[int, int]:
        """(status, seq): 200 and the seq of the stored message, or the error code and 0."""
        cmid = f"c{next(self.ids)}"
        if transport == "rest":
            content = json.dumps({"cmid": cmid, "body": body})  # NaN, Infinity, \ud800 escapes: as a client may
            resp = await self.http.post(f"/v1/conversations/{self.conv}/messages", content=content)
            if resp.status_code >= 400:
                error = resp.json()["error"]
                assert error["code"] == resp.status_code
                assert error["message"]
                return resp.status_code, 0
            return 200, int(resp.json()["seq"])
        frame = {"type": "send", "id": next(self.ids), "conv": self.conv, "cmid": cmid, "body": body}
        binary = transport == "msgpack"
        reply = await self._ws(self.ws_msgpack if binary else self.ws_json, frame, binary)
        if reply["type"] == "error":
            assert reply["message"]
            return reply["code"], 0
        assert reply["type"] == "ack", reply
        return 200, int(reply["seq"])

    async def check(self, body: dict[str, Any], transport: str) -> None:
        if transport == "msgpack":
            try:
                msgspec.msgpack.encode(body)
            except (OverflowError, UnicodeEncodeError):
                transport = "json"  # MessagePack cannot carry it: the client could not even send it
        status, seq = await self.send(body, transport)
        assert status < 500, (status, body)
        if status == 200:
            assert _within_rule(body), body
            self.seq += 1
            assert seq == self.seq
            for member in (self.bob, self.carol):
                pushed = await member.next_message()
                assert (pushed.seq, pushed.body) == (seq, body)
                pulled = (await member.pull(self.conv, after=seq - 1, limit=1)).items
                assert [(m.seq, m.body) for m in pulled] == [(seq, body)]
        else:
            assert status in (400, 413, 422), (status, body)
            assert not _within_rule(body) or status == 413, (status, body)
        # Nothing else was stored, and every connection is still open.
        assert (await self.alice.history(self.conv, limit=1))["max_seq"] == self.seq
        for member in (self.bob, self.carol):
            await member.ping()
        for ws, binary in ((self.ws_msgpack, True), (self.ws_json, False)):
            assert (await self._ws(ws, {"type": "ping", "id": next(self.ids)}, binary))["type"] == "pong"


async def test_hostile_bodies_are_accepted_whole_or_refused_whole(server: ServerProcess) -> None:
    room = Room(server)
    await room.open()
    loop = asyncio.get_running_loop()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies(), transport=st.sampled_from(["rest", "json", "msgpack"]))
    def run(body: dict[str, Any], transport: str) -> None:
        # Hypothesis drives from a thread; each example runs on the test's event loop, beside the connections.
        asyncio.run_coroutine_threadsafe(room.check(body, transport), loop).result(timeout=60)

    try:
        await asyncio.to_thread(run)
    finally:
        await room.close()
