"""Fuzzing the WebSocket protocol (issue 16): Hypothesis generates client frames, well-formed, half-formed and
garbage, JSON text and MessagePack binary, before and after `auth`, and a real `flare serve` must answer each
with a reply or an error of the 4xx family (never 5xx), close only with a documented code, log no error, and
leave the bystanders alone: two users chatting beside the fuzzer keep their connections and get every one of
their messages, in order, once.

The CI run sends at least ``CI_FRAMES`` frames; ``FLARE_FUZZ_FRAMES`` sets another total (bench/ws_fuzz.sh runs a
million). The rate limit is raised for the fuzzer: the point is what each frame does, not how fast it comes.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from picows import WSMsgType

from flare_im.protocol.errors import CloseCode
from flare_im.sdk.client import FlareClient, direct_conv

from .conftest import RawWs, ServerProcess, raw_connect

CI_FRAMES = 100_000
TARGET = int(os.environ.get("FLARE_FUZZ_FRAMES", CI_FRAMES))
FRAMES_PER_EXAMPLE = 80  # at most; at least half. Hypothesis stops a list early when its buffer fills
EXAMPLES = -(-TARGET // 55)  # Hypothesis's lists here hold 56-57 frames on average (141,619 in 2,500 examples)
# Close codes a client's own frames may earn it (docs/protocol.md, close codes); 1000 echoes our own close.
CLIENT_FAULT_CLOSES = {1000, 1009, CloseCode.AUTH_FAILED, CloseCode.PROTOCOL_VIOLATION, CloseCode.RATE_LIMITED}
SENTINEL = 2**62  # the id of the ping that ends each batch

TYPES = ["auth", "send", "delivered", "read", "sync", "pull", "ping", "typing", "readers", "presence"]
TYPES += ["settings", "op", "forward"]

ints = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([0, 1, 2**31, 2**53 - 1, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63), -1]),
    st.integers(),
)
# Characters that matter to a server, drawn from a list (far cheaper than any code point, and the frame count is
# what the CI budget buys): ASCII, controls, a lone surrogate (JSON can write one), zero-width and bidi marks,
# line separators, CJK, emoji and its joiner, a combining mark, the replacement character, a noncharacter.
ALPHABET = (
    [chr(c) for c in range(0x20, 0x7F)]
    + [chr(c) for c in range(0x00, 0x20)]
    + list(
        "\x7f\ud800\udfff\u200b\u200c\u200d\u200e\u202e\u2028\u2029\ufeff\u4e2d\u6587\u3042\U0001f600\u0301\ufffd\uffff\xa0\xe9"
    )
)
texts = st.text(st.sampled_from(ALPHABET), max_size=12)
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False), texts)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6
)


def field_values(convs: list[str], users: list[str]) -> dict[str, st.SearchStrategy[Any]]:
    conv = st.one_of(st.sampled_from(convs), texts, st.just("g:" + "f" * 16), st.just("d:alice:nobody"))
    user = st.one_of(st.sampled_from(users), texts)
    body = st.one_of(
        st.fixed_dictionaries({"text": texts}),
        st.dictionaries(texts, values, max_size=4),
        st.fixed_dictionaries({"text": texts, "reply_to": st.fixed_dictionaries({"seq": ints})}),
        values,
    )
    return {
        "conv": conv,
        "to": conv,
        "seq": ints,
        "target": ints,
        "since": ints,
        "after": st.one_of(st.none(), ints),
        "before": st.one_of(st.none(), ints),
        "limit": ints,
        "recent": ints,
        "base_version": st.one_of(st.none(), ints),
        "clear_to": st.one_of(st.none(), ints),
        "cmid": st.one_of(texts, st.uuids().map(str)),
        "opid": texts,
        "kind": st.one_of(st.sampled_from(["text", "image", "file", "system", "merged", "location"]), texts),
        "body": body,
        "op": st.one_of(st.sampled_from(["edit", "recall", "delete", "react", "unreact", "nope"]), texts),
        "emoji": st.one_of(st.none(), texts),
        "seqs": st.lists(ints, max_size=5) | values,
        "users": st.lists(user, max_size=4) | values,
        "strategy": st.one_of(st.sampled_from(["incremental", "full", "fast"]), texts),
        "token": texts,
        "device": texts,
        "platform": texts,
        "title": texts,
        "draft": st.one_of(st.none(), texts),
        "pinned": st.one_of(st.none(), st.booleans(), ints),
        "muted": st.one_of(st.none(), st.booleans(), ints),
        "hidden": st.one_of(st.none(), st.booleans()),
    }


def frames(convs: list[str], users: list[str]) -> st.SearchStrategy[Any]:
    fields = field_values(convs, users)
    names = sorted(fields)

    @st.composite
    def structured(draw: st.DrawFn) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": draw(st.one_of(st.sampled_from(TYPES), texts, ints)), "id": draw(ints)}
        for name in draw(st.lists(st.sampled_from(names), max_size=6, unique=True)):
            frame[name] = draw(fields[name])
        if draw(st.booleans()):
            frame.pop(draw(st.sampled_from(sorted(frame))))  # a required field missing
        return frame

    small = st.integers(0, 30)
    conv = st.sampled_from(convs)
    text_body = st.fixed_dictionaries({"text": texts.filter(str.strip)})
    wellformed = st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("send"), "id": small, "conv": conv, "cmid": st.uuids().map(str), "body": text_body}
        ),
        st.fixed_dictionaries({"type": st.just("read"), "id": small, "conv": conv, "seq": small}),
        st.fixed_dictionaries({"type": st.just("delivered"), "id": small, "conv": conv, "seq": small}),
        st.fixed_dictionaries({"type": st.just("pull"), "id": small, "conv": conv, "after": small, "limit": small}),
        st.fixed_dictionaries({"type": st.just("typing"), "id": small, "conv": conv}),
        st.fixed_dictionaries({"type": st.just("readers"), "id": small, "conv": conv, "seq": small}),
        st.fixed_dictionaries({"type": st.just("sync"), "id": small, "since": small}),
        st.fixed_dictionaries({"type": st.just("presence"), "id": small, "users": st.lists(st.sampled_from(users))}),
        st.fixed_dictionaries(
            {
                "type": st.just("op"),
                "id": small,
                "conv": conv,
                "target": small,
                "opid": st.uuids().map(str),
                "op": st.sampled_from(["recall", "delete", "react", "unreact", "edit"]),
                "emoji": st.just("👍"),
                "body": text_body,
                "base_version": st.integers(1, 3),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("forward"),
                "id": small,
                "conv": conv,
                "to": conv,
                "seqs": st.lists(st.integers(1, 30), min_size=1, max_size=3),
                "cmid": st.uuids().map(str),
            }
        ),
        st.fixed_dictionaries(
            {"type": st.just("settings"), "id": small, "conv": conv, "pinned": st.booleans(), "draft": texts}
        ),
    )
    return st.one_of(wellformed, wellformed, structured(), structured(), values, st.binary(max_size=40), texts)


def encode(frame: Any, binary: bool) -> tuple[bool, bytes]:
    """(binary?, payload): a frame as MessagePack or JSON; raw bytes and text go as they are, in either kind."""
    if isinstance(frame, bytes):
        return binary, frame
    if isinstance(frame, str):
        return binary, frame.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes that are not UTF-8
    if binary:
        try:
            return True, msgspec.msgpack.encode(frame)
        except (OverflowError, UnicodeEncodeError):  # what MessagePack cannot write: the frame as JSON text
            pass
    return False, json.dumps(frame).encode()


def send(ws: RawWs, frame: Any, binary: bool) -> None:
    as_binary, payload = encode(frame, binary)
    assert ws.transport is not None
    ws.transport.send(WSMsgType.BINARY if as_binary else WSMsgType.TEXT, payload)


class Fuzzer:
    """The fuzzing connection(s) of mallory: reopened when the server closes one, every close recorded."""

    def __init__(self, srv: ServerProcess, token: str) -> None:
        self.srv, self.token = srv, token
        self.sent = 0
        self.replies: Counter[str] = Counter()
        self.closes: Counter[int | None] = Counter()
        self.bad: list[str] = []
        self.authed: dict[bool, RawWs] = {}  # the open authenticated connection per encoding, reused

    async def open(self, binary: bool, authed: bool) -> RawWs:
        encoding = "msgpack" if binary else "json"
        ws = await raw_connect(self.srv.ws_url, extra_headers={"Sec-WebSocket-Protocol": f"flare.v1.{encoding}"})
        if authed:
            send(ws, {"type": "auth", "id": 1, "token": self.token, "device": f"fuzz-{encoding}"}, binary)
            reply = self.decode(await asyncio.wait_for(ws.frames.get(), 10), binary)
            assert reply["type"] == "auth_ok", reply
        return ws

    @staticmethod
    def decode(payload: bytes, binary: bool) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.msgpack.decode(payload) if binary else json.loads(payload)
        return out

    def check(self, reply: dict[str, Any]) -> None:
        kind = str(reply.get("type"))
        self.replies[kind] += 1
        if kind == "error" and not 400 <= int(reply.get("code", 0)) < 500:
            self.bad.append(f"error outside 4xx: {reply}")

    async def batch(self, batch: list[Any], binary: bool, authed: bool) -> None:
        ws = self.authed.get(binary) if authed else None
        if ws is None or ws.disconnected.is_set():
            ws = await self.open(binary, authed)
            if authed:
                self.authed[binary] = ws
        for frame in batch:
            if ws.disconnected.is_set():
                break
            send(ws, frame, binary)
            self.sent += 1
        if not ws.disconnected.is_set():
            # after auth: its pong follows every earlier reply; before: a valid frame that is not auth ends it
            send(ws, {"type": "ping", "id": SENTINEL}, binary)
        # read until the sentinel's pong (every earlier frame is answered before it) or the close
        while True:
            get = asyncio.ensure_future(ws.frames.get())
            closed = asyncio.ensure_future(ws.disconnected.wait())
            done, _ = await asyncio.wait({get, closed}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            if get in done:
                closed.cancel()
                reply = self.decode(get.result(), binary)
                self.check(reply)
                if reply.get("type") == "pong" and reply.get("id") == SENTINEL:
                    break
                continue
            get.cancel()
            if closed not in done:
                self.bad.append(f"neither the sentinel's pong nor a close within 20 s (authed: {authed})")
            break
        while not ws.frames.empty():  # replies that came before the close
            self.check(self.decode(ws.frames.get_nowait(), binary))
        if ws.disconnected.is_set():
            self.closes[ws.close_code] += 1
            if ws.close_code not in CLIENT_FAULT_CLOSES:
                self.bad.append(f"closed with {ws.close_code}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("fuzz")) / "data",
        env_overrides={"FLARE_RATE_LIMIT_PER_S": "1000000", "FLARE_RATE_LIMIT_BURST": "1000000"},
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.timeout(900)
async def test_fuzzed_frames_hurt_no_one(server: ServerProcess) -> None:
    admin = {"X-Admin-Key": server.admin_key}
    tokens = {}
    async with httpx.AsyncClient(base_url=server.api_url, headers=admin) as http:
        for uid in ("alice", "bob", "mallory"):
            (await http.post("/v1/admin/users", json={"user_id": uid})).raise_for_status()
            tokens[uid] = (await http.post(f"/v1/admin/users/{uid}/tokens")).json()["access_token"]
        group = await http.post(
            "/v1/groups",
            json={"name": "fuzz", "members": ["alice", "bob"]},
            headers={"Authorization": f"Bearer {tokens['mallory']}"},
        )
        group.raise_for_status()
    convs = [group.json()["conv"], direct_conv("alice", "mallory"), direct_conv("alice", "bob")]
    fuzzer = Fuzzer(server, tokens["mallory"])
    dm = direct_conv("alice", "bob")
    async with (
        FlareClient(server.ws_url, tokens["alice"], "phone", reconnect=False) as alice,
        FlareClient(server.ws_url, tokens["bob"], "phone", reconnect=False) as bob,
    ):
        acked: list[int] = []
        loop = asyncio.get_running_loop()

        def submit(coro: Any) -> Any:  # Hypothesis runs the test below in a thread; the sockets live in our loop
            return asyncio.run_coroutine_threadsafe(coro, loop).result()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            batch=st.lists(
                frames(convs, ["alice", "bob", "mallory", "nobody"]),
                min_size=FRAMES_PER_EXAMPLE // 2,
                max_size=FRAMES_PER_EXAMPLE,
            ),
            binary=st.booleans(),
            authed=st.integers(0, 9).map(bool),  # one batch in ten before auth
        )
        def run(batch: list[Any], binary: bool, authed: bool) -> None:
            submit(fuzzer.batch(batch, binary, authed))
            if len(acked) * 200 < fuzzer.sent:  # the bystanders chat now and then, in the thick of it
                acked.append(submit(alice.send(dm, f"b{len(acked)}")).seq)

        await asyncio.to_thread(run)
        assert fuzzer.sent >= TARGET, fuzzer.sent
        assert not fuzzer.bad, fuzzer.bad[:10]
        # the bystanders: still connected, every message acked in order and received once, in order
        assert alice.connected
        assert bob.connected
        assert acked == sorted(acked)
        assert len(set(acked)) == len(acked)
        got: list[int] = []
        while len(got) < len(acked):  # bob is also in the fuzzer's group: its messages arrive there too
            message = await bob.next_message(timeout=10)
            if message.conv == dm:
                got.append(message.seq)
        assert got == acked
    server.check_log()
    print(f"fuzz: {fuzzer.sent} frames, replies {dict(fuzzer.replies)}, closes {dict(fuzzer.closes)}")
