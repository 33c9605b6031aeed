"""The body rule (protocol/values.py): what a message body may hold, checked once on the way in (the codec and
REST), bodies stored before it read back within it, and a frame one encoding cannot carry skipped for that
encoding only (gateway/hub.py)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flare_im.gateway.hub import Hub
from flare_im.protocol.codec import Encoding, ServerCodec
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import Message, Op, Send
from flare_im.protocol.values import (
    MAX_DEPTH,
    MAX_SAFE_INT,
    MAX_STORED_DEPTH,
    body_problem,
    check_body,
    decode_stored_body,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize(
    "body",
    [
        {"text": "x"},
        {"n": MAX_SAFE_INT, "m": -MAX_SAFE_INT, "f": 9007199254740991.0, "g": -2.5e-300, "z": -0.0, "b": True},
        {"deep": nested(MAX_DEPTH - 1)},  # the body is the first level
        {"": 1, "odd key ✓": "é\U0001f600", "list": [{"a": [1, 2.5, "s"]}]},
    ],
)
def test_bodies_within_the_rule_pass(body: dict[str, Any]) -> None:
    check_body(body)
    assert body_problem(body) is None


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"n": MAX_SAFE_INT + 1},
            422,
            "integer out of range: must be within ±9007199254740991 (2^53-1) - at `$.body.n`",
        ),
        ({"n": -(10**30)}, 422, "- at `$.body.n`"),
        # a float beyond is a whole number: JSON Schema cannot tell it from an integer out of range
        ({"f": 1.7e308}, 422, "number out of range: must be within ±9007199254740991 (2^53-1) - at `$.body.f`"),
        ({"f": -9007199254740992.0}, 422, "number out of range"),
        ({"a": {"odd key": [0, {"x": 2**64}]}}, 422, '- at `$.body.a["odd key"][1].x`'),
        ({"f": math.nan}, 422, "nan is not a finite number - at `$.body.f`"),
        ({"f": [math.inf]}, 422, "inf is not a finite number - at `$.body.f[0]`"),
        ({"deep": nested(MAX_DEPTH)}, 422, "nested deeper than 32 objects and arrays - at `$.body.deep" + "[0]" * 30),
        ({"s": "a\ud800"}, 400, "string with a lone surrogate (not valid Unicode) - at `$.body.s`"),
        ({"k": {"\udc00": 1}}, 400, 'key with a lone surrogate (not valid Unicode) - at `$.body.k["\ufffd"]`'),
        ({1: "x"}, 422, "object keys must be strings"),
        ({"t": (1, 2)}, 422, "tuple is not a JSON value - at `$.body.t`"),
        ({"b": b"x"}, 422, "bytes is not a JSON value"),
    ],
)
def test_bodies_breaking_the_rule_are_refused_naming_the_path(body: dict[str, Any], code: int, message: str) -> None:
    with pytest.raises(FlareError) as err:
        check_body(body)
    assert err.value.code == code
    assert message in err.value.message
    assert not err.value.retryable


# ---------------------------------------------------------------- the rule, against a plain reading of it


def _reference_ok(value: Any, depth: int = 1) -> bool:
    """docs/protocol.md §3 "Body values", read literally."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return abs(value) <= 2**53 - 1
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= 2**53 - 1
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return depth <= MAX_DEPTH and all(_reference_ok(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return (
            depth <= MAX_DEPTH
            and all(isinstance(k, str) and _reference_ok(k) for k in value)
            and all(_reference_ok(v, depth + 1) for v in value.values())
        )
    return False


hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**53 - 1, 2**53, -(2**53 - 1), -(2**53), 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None, exclude_categories=())),
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


def _deepened(value: Any, extra: int) -> Any:
    return nested(extra, value)


@settings(max_examples=400, deadline=None)
@given(body=st.dictionaries(st.text(max_size=4), hostile_values, max_size=4), extra=st.integers(0, 40))
def test_check_body_is_the_rule_and_stored_bodies_read_back_within_it(body: dict[str, Any], extra: int) -> None:
    body = {**body, "deep": _deepened(body.get("deep"), extra)}
    problem = body_problem(body)
    assert (problem is None) == _reference_ok(body), (body, problem)
    if problem is not None:
        assert problem.code in (ErrorCode.BAD_REQUEST, ErrorCode.INVALID)
        assert " - at `$.body" in problem.message
    # Whatever was stored (as an older server or another writer may have written it), it reads back within the
    # rule (to the stored depth), and both encodings can carry it.
    stored = json.dumps(body).encode()  # lone surrogates as \ud800 escapes, NaN as NaN, big ints as digits
    read = decode_stored_body(stored)
    assert body_problem(read, max_depth=MAX_STORED_DEPTH) is None
    msgspec.msgpack.encode(read)
    assert msgspec.json.decode(msgspec.json.encode(read)) == read
    if problem is None:
        assert read == body


def test_stored_bodies_are_read_back_sanitised() -> None:
    raw = (
        b'{"big": 123456789012345678901234567890, "mid": 9007199254740992, "f": NaN, "g": -Infinity,'
        b' "s": "a\\ud800b", "\\udc00": 1, "pair": "\\ud83d\\ude00", "deep": ' + b"[" * 80 + b"]" * 80 + b"}"
    )
    read = decode_stored_body(raw)
    assert read == {
        "big": "123456789012345678901234567890",
        "mid": "9007199254740992",
        "f": None,
        "g": None,
        "s": "a\ufffdb",
        "\ufffd": 1,
        "pair": "\U0001f600",
        "deep": nested(MAX_STORED_DEPTH - 1, None),
    }
    assert decode_stored_body(b"not json") == {}
    assert decode_stored_body(b"[1]") == {}
    assert decode_stored_body(b"[" * 100_000 + b"]" * 100_000) == {}
    assert decode_stored_body(b'{"text": "x"}') == {"text": "x"}


# ---------------------------------------------------------------- the codec: one check on the way in


def _send(body: Any) -> dict[str, Any]:
    return {"type": "send", "id": 7, "conv": "d:a:b", "cmid": "c", "body": body}


@pytest.mark.parametrize("encoding", list(Encoding))
def test_codec_refuses_bad_bodies_with_the_path(encoding: Encoding) -> None:
    codec = ServerCodec(encoding)
    encode = msgspec.msgpack.encode if encoding is Encoding.MSGPACK else msgspec.json.encode
    bad = [{"text": "x", "n": 2**64 - 1}, {"text": "x", "d": nested(40)}]
    if encoding is Encoding.MSGPACK:
        bad.append({"text": "x", "f": math.nan})
    for body in bad:
        with pytest.raises(FlareError) as err:
            codec.decode(encode(_send(body)))
        assert err.value.code == ErrorCode.INVALID
        assert "- at `$.body." in err.value.message
    op = {"type": "op", "id": 1, "conv": "d:a:b", "op": "edit", "target": 1, "opid": "o", "body": bad[0]}
    with pytest.raises(FlareError):
        codec.decode(encode(op))
    assert isinstance(codec.decode(encode({**op, "body": {"text": "y"}})), Op)
    assert isinstance(codec.decode(encode(_send({"text": "x", "n": 2**53 - 1}))), Send)


def test_codec_json_refuses_surrogates_nan_and_huge_floats() -> None:
    codec = ServerCodec(Encoding.JSON)
    for body, code in (('{"t": "\\ud800"}', 400), ('{"f": NaN}', 400), ('{"f": 1e400}', 422)):
        frame = f'{{"type": "send", "id": 7, "conv": "d:a:b", "cmid": "c", "body": {body}}}'
        with pytest.raises(FlareError) as err:
            codec.decode(frame.encode())
        assert err.value.code == code


@pytest.mark.parametrize("encoding", list(Encoding))
def test_codec_answers_a_frame_nested_too_deeply_to_read(encoding: Encoding) -> None:
    codec = ServerCodec(encoding)
    if encoding is Encoding.JSON:
        data = b'{"type": "auth", "id": 1, "token": "t", "device": "d", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    else:
        head = msgspec.msgpack.encode({"type": "auth", "id": 1, "token": "t", "device": "d"})
        data = bytes([head[0] + 1]) + head[1:] + msgspec.msgpack.encode("x") + b"\x91" * 5000 + b"\x01"
    with pytest.raises(FlareError) as err:
        codec.decode(data)
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert "nested too deeply" in err.value.message


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "forward", "id": 1, "conv": "d:a:b", "seqs": [2**63], "to": "d:a:b", "cmid": "c"},
        {"type": "op", "id": 1, "conv": "d:a:b", "op": "edit", "target": 1, "opid": "o", "base_version": 2**63},
    ],
)
def test_codec_bounds_every_integer(frame: dict[str, Any]) -> None:
    with pytest.raises(FlareError) as err:
        ServerCodec().decode(msgspec.json.encode(frame))
    assert err.value.code == ErrorCode.INVALID


# ---------------------------------------------------------------- fan-out: one encoding's failure is its own


class _Peer:
    def __init__(self, user: str, device: str, encoding: Encoding) -> None:
        self.user, self.device, self.encoding = user, device, encoding
        self.frames: list[bytes] = []

    def push_framed(self, frame: bytes, bulk: bool = False) -> None:
        self.frames.append(frame)

    def kick(self, code: int, reason: str, *, reconnect: bool, retry_after_ms: int = 0) -> None:
        raise AssertionError("not expected")


def test_a_frame_one_encoding_cannot_carry_still_reaches_the_other(caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub()
    peers = [
        _Peer("bob", "mp", Encoding.MSGPACK),
        _Peer("carol", "js", Encoding.JSON),
        _Peer("dave", "mp", Encoding.MSGPACK),
    ]
    for peer in peers:
        hub.register(peer)
    message = Message("g:team", 5, "1", "alice", "c", "text", {"text": "x", "n": 2**70}, 1)
    with caplog.at_level(logging.WARNING, logger="flare_im.gateway.hub"):
        hub.deliver_message(["bob", "carol", "dave"], message, skip=None)
    assert [len(p.frames) for p in peers] == [0, 1, 0]
    assert b'"n":1180591620717411303424' in peers[1].frames[0]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "g:team#5" in record.getMessage()
    hub.deliver_message(["bob", "carol", "dave"], msgspec.structs.replace(message, body={"text": "y"}), skip=None)
    assert [len(p.frames) for p in peers] == [1, 2, 1]
