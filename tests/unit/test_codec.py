"""Sans-I/O codec (src/flare_im/protocol/{frames,codec,errors}.py): bytes in, frames out; no sockets."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest

from flare_im.protocol.codec import DEFAULT_MAX_FRAME_BYTES, ClientCodec, Encoding, ServerCodec
from flare_im.protocol.errors import RETRYABLE, ErrorCode, FlareError
from flare_im.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    Auth,
    AuthOk,
    BlockList,
    ClientFrame,
    Convs,
    ConvSettings,
    ConvSummary,
    Delivered,
    Error,
    Forward,
    Hidden,
    JoinRequestFrame,
    Kick,
    Message,
    Messages,
    NotifySettingsFrame,
    Ok,
    Op,
    Ping,
    Pong,
    Presence,
    PresenceList,
    PresenceState,
    PresenceSub,
    Pull,
    Read,
    Readers,
    ReadersList,
    Receipt,
    Send,
    ServerFrame,
    Sync,
    Typing,
    TypingNotice,
    UpdateSettings,
    msg_from_message,
)

MAX_I64 = 2**63 - 1

MESSAGE = Message(
    conv="g:team",
    seq=42,
    msg_id="123456789012345678",
    sender="alice",
    cmid="c-42",
    kind="text",
    body={"text": "héllo ✓", "mentions": ["bob"], "meta": {"n": 1, "f": 1.5, "none": None}},
    ts=1_700_000_000_000,
)

CLIENT_FRAMES: list[Any] = [
    Auth(id=1, token="jwt.token.sig", device="phone-1"),
    Auth(id=2, token="t", device="d", platform="ios"),
    Send(id=3, conv="d:alice:bob", cmid="c-1", body={"text": "hi"}),
    Send(id=4, conv="g:team", cmid="x" * 64, body={"url": "https://x/y.png", "w": 10}, kind="image"),
    Send(id=5, conv="g:team", cmid="c", body={}),
    Delivered(id=6, conv="g:team", seq=0),
    Read(id=7, conv="g:team", seq=MAX_I64),
    Sync(id=8),
    Sync(id=9, since=1_700_000_000_000_000, limit=500),
    Sync(id=10, since=0, limit=1),
    Sync(id=22, limit=20, strategy="fast", recent=20),
    Pull(id=11, conv="g:team"),
    Pull(id=12, conv="g:team", after=10, limit=20),
    Pull(id=13, conv="g:team", before=99, limit=500),
    Pull(id=14, conv="g:team", after=0, before=5),
    Ping(id=0),
    Ping(id=MAX_I64),
    Typing(id=16, conv="d:alice:bob"),
    Readers(id=17, conv="g:team", seq=5),
    PresenceSub(id=18, users=["alice", "bob"]),
    PresenceSub(id=19, users=[]),
    UpdateSettings(id=20, conv="g:team", pinned=True, draft="half a thought"),
    UpdateSettings(id=21, conv="d:alice:bob", muted=False, hidden=True, clear_to=42),
    Op(id=22, conv="g:team", op="edit", target=7, opid="op-1", body={"text": "fixed"}, base_version=1),
    Op(id=23, conv="g:team", op="react", target=7, opid="op-2", emoji="👍"),
    Op(id=24, conv="d:alice:bob", op="recall", target=3, opid="op-3"),
    Forward(id=25, conv="g:team", seqs=[3, 4], to="d:alice:bob", cmid="fw-1", title="notes"),
]

SERVER_FRAMES: list[Any] = [
    BlockList(users=["mallory", "spammer"], version=7),
    JoinRequestFrame(group_id="team", user="carol", state="pending", created_at=1_700_000_000_000, note="hi"),
    AuthOk(id=1, user="alice", device="phone-1", session="s-1", server_ts=1_700_000_000_000, heartbeat_s=25.0),
    AuthOk(id=1, user="alice", device="d", session="s", server_ts=1, heartbeat_s=0.5, protocol=2),
    Ack(id=3, conv="g:team", seq=42, msg_id="123", ts=1_700_000_000_000),
    Ack(id=3, conv="g:team", seq=42, msg_id="123", ts=1_700_000_000_000, duplicate=True),
    Ok(id=6),
    msg_from_message(MESSAGE),
    Receipt(conv="g:team", user="bob", kind="read", seq=41),
    Receipt(conv="d:alice:bob", user="bob", kind="delivered", seq=3, device="tablet"),
    Convs(id=8, items=[], version=0),
    Convs(
        id=9,
        items=[
            ConvSummary(
                conv="g:team",
                kind="group",
                version=5,
                max_seq=42,
                read_seq=40,
                unread=2,
                member_count=3,
                name="Team",
                avatar="t.png",
                role="owner",
                join_seq=0,
                last=MESSAGE,
            ),
            ConvSummary(
                conv="d:alice:bob",
                kind="direct",
                version=4,
                max_seq=0,
                read_seq=0,
                unread=0,
                member_count=2,
                peer="bob",
            ),
            ConvSummary(
                conv="g:old",
                kind="group",
                version=3,
                max_seq=9,
                read_seq=9,
                unread=0,
                member_count=0,
                role="member",
                join_seq=2,
                left=True,
            ),
        ],
        version=5,
        more=True,
    ),
    Messages(id=11, conv="g:team", items=[MESSAGE], max_seq=42, min_seq=1),
    Messages(id=12, conv="g:team", items=[], max_seq=0, min_seq=1, more=True),
    Pong(id=15, ts=1_700_000_000_000),
    Error(code=422, message="bad field"),
    Error(code=429, message="slow down", retryable=True, id=3),
    Kick(code=4100, reason="restart"),
    Kick(code=4004, reason="replaced", reconnect=False, retry_after_ms=1500),
    TypingNotice(conv="g:team", user="alice", device="phone"),
    ReadersList(id=17, conv="g:team", seq=5, read=["bob"], unread=["carol", "dave"]),
    PresenceList(id=18, items=[PresenceState(user="alice", online=True), PresenceState("bob", False, 1_800_000)]),
    Presence(user="bob", online=False, last_seen=1_800_000),
    ConvSettings(conv="g:team", version=1_800_000_000_000_000, pinned=True, draft="x", cleared_seq=3),
    ConvSettings(conv="g:team", version=7, muted=True, id=20),
    Hidden(conv="g:team", seqs=[3, 9], version=77, id=24),
    NotifySettingsFrame(
        mode="mentions",
        mentions_break_mute=True,
        preview=False,
        quiet_start="22:00",
        quiet_end="07:00",
        timezone="Asia/Shanghai",
        version=5,
    ),
    Error(id=22, code=409, message="stale", detail={"version": 3, "body": {"text": "newer"}}),
    Ack(id=22, conv="g:team", seq=43, msg_id="124", ts=1, target=7, version=2),
]

CLIENT_TAGS = {cls.__struct_config__.tag: cls for cls in typing.get_args(ClientFrame)}

ENCODINGS = [Encoding.JSON, Encoding.MSGPACK]


@pytest.fixture(params=ENCODINGS, ids=lambda e: e.value)
def encoding(request: pytest.FixtureRequest) -> Encoding:
    enc: Encoding = request.param
    return enc


def raw(encoding: Encoding, value: Any) -> bytes:
    """``value`` (plain dicts, lists, scalars) encoded as the peer would put it on the wire."""
    return msgspec.msgpack.encode(value) if encoding is Encoding.MSGPACK else msgspec.json.encode(value)


def wire_dict(encoding: Encoding, data: bytes) -> Any:
    return msgspec.msgpack.decode(data) if encoding is Encoding.MSGPACK else msgspec.json.decode(data)


def decode_error(codec: ServerCodec | ClientCodec, data: bytes) -> FlareError:
    with pytest.raises(FlareError) as info:
        codec.decode(data)
    return info.value


# ---------------------------------------------------------------- round trips


def test_sample_frames_cover_every_frame_type() -> None:
    assert {type(f) for f in CLIENT_FRAMES} == set(typing.get_args(ClientFrame))
    assert {type(f) for f in SERVER_FRAMES} == set(typing.get_args(ServerFrame))


@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=repr)
def test_client_frame_round_trip(encoding: Encoding, frame: Any) -> None:
    data = ClientCodec(encoding).encode(frame)
    assert isinstance(data, bytes)
    assert ServerCodec(encoding).decode(data) == frame


@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=repr)
def test_server_frame_round_trip(encoding: Encoding, frame: Any) -> None:
    data = ServerCodec(encoding).encode(frame)
    assert isinstance(data, bytes)
    decoded = ClientCodec(encoding).decode(data)
    assert decoded == frame
    assert type(decoded) is type(frame)


def test_decode_accepts_a_memoryview(encoding: Encoding) -> None:
    frame = Send(id=1, conv="g:team", cmid="c", body={"text": "hi"})
    data = ClientCodec(encoding).encode(frame)
    assert ServerCodec(encoding).decode(memoryview(data)) == frame


def test_json_wire_form() -> None:
    assert ClientCodec().encode(Ping(id=1)) == b'{"type":"ping","id":1}'
    assert ServerCodec().decode(b'{"type":"ping","id":1}') == Ping(id=1)
    assert ServerCodec().decode(b'  {"id": 7, "type": "ping"}\n') == Ping(id=7)  # any key order, whitespace


def test_codecs_default_to_json() -> None:
    assert ServerCodec().encoding is Encoding.JSON
    assert ClientCodec().encoding is Encoding.JSON
    assert ServerCodec().max_frame_bytes == DEFAULT_MAX_FRAME_BYTES


def test_unknown_fields_are_ignored(encoding: Encoding) -> None:
    # forward compatibility: a newer client may send fields this server does not know
    data = raw(encoding, {"type": "ping", "id": 5, "trace": "abc", "flags": [1, 2]})
    assert ServerCodec(encoding).decode(data) == Ping(id=5)
    data = raw(encoding, {"type": "pong", "id": 5, "ts": 9, "new_field": {"x": 1}})
    assert ClientCodec(encoding).decode(data) == Pong(id=5, ts=9)


def test_defaults_fill_in_missing_optional_fields(encoding: Encoding) -> None:
    codec = ServerCodec(encoding)
    assert codec.decode(raw(encoding, {"type": "sync", "id": 1})) == Sync(id=1, since=0, limit=100)
    assert codec.decode(raw(encoding, {"type": "pull", "id": 1, "conv": "g:abc"})) == Pull(
        id=1, conv="g:abc", after=None, before=None, limit=50
    )
    send = codec.decode(raw(encoding, {"type": "send", "id": 1, "conv": "g:abc", "cmid": "c", "body": {}}))
    assert isinstance(send, Send)
    assert send.kind == "text"
    assert codec.decode(raw(encoding, {"type": "pull", "id": 1, "conv": "g:abc", "after": None})) == Pull(
        id=1, conv="g:abc"
    )


# ---------------------------------------------------------------- omit_defaults


def test_ack_without_duplicate_omits_the_field(encoding: Encoding) -> None:
    codec = ServerCodec(encoding)
    plain = wire_dict(encoding, codec.encode(Ack(id=1, conv="g:abc", seq=2, msg_id="9", ts=3)))
    assert plain == {"type": "ack", "id": 1, "conv": "g:abc", "seq": 2, "msg_id": "9", "ts": 3}
    dup = wire_dict(encoding, codec.encode(Ack(id=1, conv="g:abc", seq=2, msg_id="9", ts=3, duplicate=True)))
    assert dup["duplicate"] is True


def test_default_valued_fields_are_omitted_and_the_tag_kept(encoding: Encoding) -> None:
    server = ServerCodec(encoding)
    client = ClientCodec(encoding)
    assert wire_dict(encoding, server.encode(Error(code=400, message="m"))) == {
        "type": "error",
        "code": 400,
        "message": "m",
    }
    assert wire_dict(encoding, server.encode(Error(code=400, message="m", id=0))) == {
        "type": "error",
        "code": 400,
        "message": "m",
        "id": 0,
    }
    assert wire_dict(encoding, client.encode(Pull(id=1, conv="g:abc"))) == {"type": "pull", "id": 1, "conv": "g:abc"}
    assert wire_dict(encoding, client.encode(Send(id=1, conv="g:abc", cmid="c", body={}))) == {
        "type": "send",
        "id": 1,
        "conv": "g:abc",
        "cmid": "c",
        "body": {},
    }
    summary = ConvSummary(conv="d:a:b", kind="direct", version=1, max_seq=0, read_seq=0, unread=0, member_count=2)
    convs = wire_dict(encoding, server.encode(Convs(id=1, items=[summary], version=1)))
    assert convs == {
        "type": "convs",
        "id": 1,
        "version": 1,
        "items": [
            {
                "conv": "d:a:b",
                "kind": "direct",
                "version": 1,
                "max_seq": 0,
                "read_seq": 0,
                "unread": 0,
                "member_count": 2,
            }
        ],
    }


def test_auth_ok_protocol_default(encoding: Encoding) -> None:
    frame = AuthOk(id=1, user="u", device="d", session="s", server_ts=1, heartbeat_s=25.0)
    assert frame.protocol == PROTOCOL_VERSION == 1
    decoded = ClientCodec(encoding).decode(ServerCodec(encoding).encode(frame))
    assert isinstance(decoded, AuthOk)
    assert decoded.protocol == PROTOCOL_VERSION


def test_msg_from_message_copies_every_field() -> None:
    msg = msg_from_message(MESSAGE)
    assert {f: getattr(msg, f) for f in Message.__struct_fields__} == msgspec.structs.asdict(MESSAGE)


# ---------------------------------------------------------------- malformed input: 400


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"not json", b'{"type":"ping","id":1} trailing', b"\xff\xfe", b'{"type":"ping",}', b"{'type':1}"],
    ids=["empty", "truncated", "text", "trailing", "binary", "trailing-comma", "single-quotes"],
)
def test_malformed_json_is_400(data: bytes) -> None:
    err = decode_error(ServerCodec(Encoding.JSON), data)
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.message.startswith("malformed json")
    assert err.retryable is False


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x82\xa4type", b"\x81\xa4type\xa4pi", b"\xdf\xff\xff\xff\xff"],
    ids=["empty", "reserved-opcode", "truncated-map", "truncated-str", "huge-map-header"],
)
def test_malformed_msgpack_is_400(data: bytes) -> None:
    err = decode_error(ServerCodec(Encoding.MSGPACK), data)
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.message.startswith("malformed msgpack")


def test_client_codec_malformed_is_400(encoding: Encoding) -> None:
    assert decode_error(ClientCodec(encoding), b"\xc1{").code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "value",
    [
        {"type": "nope", "id": 1},
        {"type": "", "id": 1},
        {"type": "PING", "id": 1},
        {"type": "pong", "id": 1, "ts": 2},  # a server frame sent to the server
        {"id": 1},  # missing type
        {},
        {"type": 5, "id": 1},
        {"type": None, "id": 1},
    ],
    ids=["unknown", "empty", "wrong-case", "server-frame", "missing", "empty-object", "int", "null"],
)
def test_unknown_or_missing_type_is_400(encoding: Encoding, value: dict[str, Any]) -> None:
    err = decode_error(ServerCodec(encoding), raw(encoding, value))
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.message.startswith("unknown or missing frame type")


def test_client_frame_sent_to_the_client_is_400(encoding: Encoding) -> None:
    err = decode_error(ClientCodec(encoding), raw(encoding, {"type": "ping", "id": 1}))
    assert err.code is ErrorCode.BAD_REQUEST
    err = decode_error(ClientCodec(encoding), raw(encoding, {"id": 1, "ts": 2}))
    assert err.code is ErrorCode.BAD_REQUEST


# ---------------------------------------------------------------- well-formed but invalid: 422


@pytest.mark.parametrize("value", [[1, 2], [], 5, "ping", None, True, 1.5], ids=repr)
def test_non_object_is_422(encoding: Encoding, value: Any) -> None:
    # well-formed JSON/MessagePack, but not a frame: codec.py reports it as 422 (docs/protocol.md, error codes)
    err = decode_error(ServerCodec(encoding), raw(encoding, value))
    assert err.code is ErrorCode.INVALID


SEND = {"type": "send", "id": 1, "conv": "g:team", "cmid": "c-1", "body": {"text": "hi"}}
AUTH = {"type": "auth", "id": 1, "token": "t", "device": "d"}
READ = {"type": "read", "id": 1, "conv": "g:team", "seq": 3}


def without(frame: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in frame.items() if k != key}


def sync(**fields: Any) -> dict[str, Any]:
    return {"type": "sync", "id": 1, **fields}


def pull(**fields: Any) -> dict[str, Any]:
    return {"type": "pull", "id": 1, "conv": "g:team", **fields}


INVALID_FRAMES = {
    # missing required fields
    "send-no-cmid": without(SEND, "cmid"),
    "send-no-body": without(SEND, "body"),
    "send-no-conv": without(SEND, "conv"),
    "send-no-id": without(SEND, "id"),
    "auth-no-token": without(AUTH, "token"),
    "auth-no-device": without(AUTH, "device"),
    "read-no-seq": without(READ, "seq"),
    "ping-no-id": {"type": "ping"},
    "delivered-no-conv": {"type": "delivered", "id": 1, "seq": 2},
    # wrong types
    "id-str": {"type": "ping", "id": "1"},
    "id-bool": {"type": "ping", "id": True},
    "id-float": {"type": "ping", "id": 1.5},
    "id-null": {"type": "ping", "id": None},
    "conv-int": {**SEND, "conv": 5},
    "body-list": {**SEND, "body": ["hi"]},
    "body-str": {**SEND, "body": "hi"},
    "body-null": {**SEND, "body": None},
    "kind-int": {**SEND, "kind": 1},
    "seq-str": {**READ, "seq": "3"},
    "after-str": pull(after="x"),
    "limit-float": sync(limit=10.5),
    "token-int": {**AUTH, "token": 123},
    # out of bounds
    "sync-limit-0": sync(limit=0),
    "sync-limit-501": sync(limit=501),
    "pull-limit-0": pull(limit=0),
    "pull-limit-501": pull(limit=501),
    "read-seq-negative": {**READ, "seq": -1},
    "delivered-seq-negative": {"type": "delivered", "id": 1, "conv": "g:team", "seq": -5},
    "pull-after-negative": pull(after=-1),
    "pull-before-negative": pull(before=-1),
    "sync-since-negative": sync(since=-1),
    "id-negative": {"type": "ping", "id": -1},
    "cmid-65": {**SEND, "cmid": "x" * 65},
    "cmid-empty": {**SEND, "cmid": ""},
    "conv-too-short": {**SEND, "conv": "g:"},
    "conv-too-long": {**SEND, "conv": "g:" + "x" * 159},
    "kind-empty": {**SEND, "kind": ""},
    "kind-33": {**SEND, "kind": "k" * 33},
    "device-empty": {**AUTH, "device": ""},
    "device-65": {**AUTH, "device": "d" * 65},
    "platform-33": {**AUTH, "platform": "p" * 33},
    "token-4097": {**AUTH, "token": "t" * 4097},
}


@pytest.mark.parametrize("value", list(INVALID_FRAMES.values()), ids=list(INVALID_FRAMES))
def test_invalid_fields_are_422(encoding: Encoding, value: dict[str, Any]) -> None:
    err = decode_error(ServerCodec(encoding), raw(encoding, value))
    assert err.code is ErrorCode.INVALID
    assert err.retryable is False


def test_invalid_message_names_the_field(encoding: Encoding) -> None:
    codec = ServerCodec(encoding)
    assert "`$.limit`" in decode_error(codec, raw(encoding, sync(limit=0))).message
    assert "`$.cmid`" in decode_error(codec, raw(encoding, {**SEND, "cmid": "x" * 65})).message
    assert "`cmid`" in decode_error(codec, raw(encoding, without(SEND, "cmid"))).message


VALID_BOUNDARIES = {
    "limit-1": sync(limit=1),
    "limit-500": sync(limit=500),
    "pull-limit-500": pull(limit=500),
    "seq-0": {**READ, "seq": 0},
    "seq-max": {**READ, "seq": MAX_I64},
    "cmid-64": {**SEND, "cmid": "x" * 64},
    "cmid-1": {**SEND, "cmid": "x"},
    "conv-3": {**SEND, "conv": "g:x"},
    "conv-160": {**SEND, "conv": "g:" + "x" * 158},
    "kind-32": {**SEND, "kind": "k" * 32},
    "device-64": {**AUTH, "device": "d" * 64},
    "device-1": {**AUTH, "device": "d"},
    "platform-32": {**AUTH, "platform": "p" * 32},
    "token-4096": {**AUTH, "token": "t" * 4096},
    "token-empty": {**AUTH, "token": ""},
    "id-0": {"type": "ping", "id": 0},
}


@pytest.mark.parametrize("value", list(VALID_BOUNDARIES.values()), ids=list(VALID_BOUNDARIES))
def test_values_on_the_bounds_are_accepted(encoding: Encoding, value: dict[str, Any]) -> None:
    frame_type = CLIENT_TAGS[value["type"]]
    assert ServerCodec(encoding).decode(raw(encoding, value)) == frame_type(**without(value, "type"))


# ---------------------------------------------------------------- size limit: 413


def test_oversize_frame_is_413(encoding: Encoding) -> None:
    frame = Send(id=1, conv="g:team", cmid="c", body={"text": "x" * DEFAULT_MAX_FRAME_BYTES})
    data = ClientCodec(encoding).encode(frame)
    assert len(data) > DEFAULT_MAX_FRAME_BYTES
    err = decode_error(ServerCodec(encoding), data)
    assert err.code is ErrorCode.TOO_LARGE
    assert err.retryable is False


def test_frame_size_limit_is_inclusive(encoding: Encoding) -> None:
    data = ClientCodec(encoding).encode(Send(id=1, conv="g:team", cmid="c", body={"text": "hello"}))
    at_limit = ServerCodec(encoding, max_frame_bytes=len(data))
    assert isinstance(at_limit.decode(data), Send)
    assert decode_error(ServerCodec(encoding, max_frame_bytes=len(data) - 1), data).code is ErrorCode.TOO_LARGE


def test_size_is_checked_before_parsing(encoding: Encoding) -> None:
    # garbage over the limit is "too large", not "malformed": the decoder never sees it
    codec = ServerCodec(encoding, max_frame_bytes=10)
    assert decode_error(codec, b"\xc1" * 11).code is ErrorCode.TOO_LARGE
    assert decode_error(codec, memoryview(b"{" * 11)).code is ErrorCode.TOO_LARGE
    assert decode_error(codec, b"\xc1" * 10).code is ErrorCode.BAD_REQUEST


def test_client_codec_has_its_own_limit(encoding: Encoding) -> None:
    big = Messages(id=1, conv="g:team", items=[MESSAGE] * 2000, max_seq=42, min_seq=1)
    data = ServerCodec(encoding).encode(big)
    assert len(data) > DEFAULT_MAX_FRAME_BYTES
    assert ClientCodec(encoding).decode(data) == big  # default client limit is 16 MiB
    assert decode_error(ClientCodec(encoding, max_frame_bytes=1024), data).code is ErrorCode.TOO_LARGE


# ---------------------------------------------------------------- Encoding and FlareError


def test_encoding_from_name() -> None:
    assert Encoding.from_name("json") is Encoding.JSON
    assert Encoding.from_name("MsgPack") is Encoding.MSGPACK
    assert Encoding.MSGPACK.binary is True
    assert Encoding.JSON.binary is False
    with pytest.raises(FlareError) as info:
        Encoding.from_name("xml")
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_flare_error_retryable_follows_the_code() -> None:
    assert {ErrorCode.REQUEST_TIMEOUT, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL, ErrorCode.UNAVAILABLE} == RETRYABLE
    for code in ErrorCode:
        assert FlareError(code, "m").retryable is (code in RETRYABLE)
    assert FlareError(ErrorCode.BAD_REQUEST, "m", retryable=True).retryable is True
    assert FlareError(ErrorCode.INTERNAL, "m", retryable=False).retryable is False
    err = FlareError(ErrorCode.NOT_FOUND, "no such user")
    assert str(err) == err.message == "no such user"
    assert repr(err) == "FlareError(NOT_FOUND, 'no such user')"
