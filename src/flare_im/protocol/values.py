"""What a message body may hold, checked once on the way in, for every transport (docs/protocol.md §3 "Body
values"). A body is a JSON object whose values every client can hold exactly:

* integers within ±(2^53 - 1), what a JavaScript number holds exactly;
* finite floats (no NaN, no Infinity: JSON cannot carry them), also within ±(2^53 - 1): a float beyond is a whole
  number, which JSON Schema (the OpenAPI document) cannot tell from an integer out of range;
* strings and keys of valid Unicode (no lone surrogates: they have no UTF-8 form);
* at most ``MAX_DEPTH`` nested objects and arrays, the body itself included.

One check, ``check_body``, runs once where a body comes in: in the WebSocket codec, after it decodes a
``send`` or an ``op``, and in the REST handlers. It is a single walk over the decoded value, which for the usual
body (a few strings) is a handful of type checks; only when it finds a bad value does it walk again to name
its path. (msgspec cannot check this while decoding: its types cannot bound the depth of an arbitrary value
without a type that grows exponentially with the depth.)

Bodies stored before the rule existed are read back with ``decode_stored_body``, which makes them obey it
(a number out of range becomes its decimal string, NaN and Infinity null, a lone surrogate U+FFFD, a value
nested too deeply null), so one such body can never stop the encoder of a pull, a sync or a push.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec

from flare_im.protocol.errors import ErrorCode, FlareError

MAX_SAFE_INT = 2**53 - 1
MAX_DEPTH = 32  # nested objects and arrays in a body sent by a client, the body itself counted
# What the server may store and send: a client's body wrapped by the server (an edit event carries the new
# body, a merged forward carries the forwarded bodies) is a few levels deeper than what the client sent.
MAX_STORED_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_decode_json = msgspec.json.Decoder().decode


def _key_path(path: str, key: object) -> str:
    if isinstance(key, str) and _NAME.match(key):
        return f"{path}.{key}"
    text = _SURROGATE.sub("\ufffd", key) if isinstance(key, str) else repr(key)
    return f"{path}[{json.dumps(text, ensure_ascii=False)}]"


def obeys_rule(value: Any, depth: int = 1, max_depth: int = MAX_DEPTH) -> bool:
    """Does ``value`` (at ``depth``; the body is at 1) obey the rule. The fast walk: no paths, and no call per
    scalar (the usual body is a dict of a few ASCII strings)."""
    t = type(value)
    if t is dict or t is list:
        if depth > max_depth:
            return False
        if t is dict:
            for key in value:
                if type(key) is not str or not (key.isascii() or _SURROGATE.search(key) is None):
                    return False
            items = value.values()
        else:
            items = value
        for item in items:
            t = type(item)
            if t is str:
                if not (item.isascii() or _SURROGATE.search(item) is None):
                    return False
            elif t is int:
                if not -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
                    return False
            elif t is float:
                if not -MAX_SAFE_INT <= item <= MAX_SAFE_INT:  # also false for NaN and Infinity
                    return False
            elif not (item is None or t is bool or obeys_rule(item, depth + 1, max_depth)):
                return False
        return True
    if t is str:
        return value.isascii() or _SURROGATE.search(value) is None
    if t is int:
        return bool(-MAX_SAFE_INT <= value <= MAX_SAFE_INT)
    if t is float:
        return bool(-MAX_SAFE_INT <= value <= MAX_SAFE_INT)
    return value is None or t is bool  # not a subclass, bytes, a tuple ...: none comes out of a decoder


def body_problem(value: Any, path: str = "$.body", max_depth: int = MAX_DEPTH) -> FlareError | None:
    """The first value of ``value`` (a decoded body) that breaks the rule, as the error to answer, or None:
    422 naming its path, or 400 for a lone surrogate (a JSON decoder refuses one as malformed, before this)."""
    if obeys_rule(value, 1, max_depth):
        return None
    return _problem(value, path, 1, max_depth) or FlareError(ErrorCode.INVALID, f"not a JSON value - at `{path}`")


def _problem(value: Any, path: str, depth: int, max_depth: int) -> FlareError | None:
    if isinstance(value, str):
        if _SURROGATE.search(value) is not None:
            return FlareError(ErrorCode.BAD_REQUEST, f"string with a lone surrogate (not valid Unicode) - at `{path}`")
        return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return None
        return FlareError(
            ErrorCode.INVALID, f"integer out of range: must be within ±{MAX_SAFE_INT} (2^53-1) - at `{path}`"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            return FlareError(ErrorCode.INVALID, f"{value} is not a finite number - at `{path}`")
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return None
        return FlareError(
            ErrorCode.INVALID, f"number out of range: must be within ±{MAX_SAFE_INT} (2^53-1) - at `{path}`"
        )
    if type(value) is dict or type(value) is list:
        if depth > max_depth:
            return FlareError(ErrorCode.INVALID, f"nested deeper than {max_depth} objects and arrays - at `{path}`")
        if isinstance(value, list):
            for i, item in enumerate(value):
                if (found := _problem(item, f"{path}[{i}]", depth + 1, max_depth)) is not None:
                    return found
            return None
        for key, item in value.items():
            at = _key_path(path, key)
            if not isinstance(key, str):
                return FlareError(ErrorCode.INVALID, f"object keys must be strings - at `{at}`")
            if _SURROGATE.search(key) is not None:
                return FlareError(ErrorCode.BAD_REQUEST, f"key with a lone surrogate (not valid Unicode) - at `{at}`")
            if (found := _problem(item, at, depth + 1, max_depth)) is not None:
                return found
        return None
    return FlareError(ErrorCode.INVALID, f"{type(value).__name__} is not a JSON value - at `{path}`")


def check_body(body: Any, path: str = "$.body", max_depth: int = MAX_DEPTH) -> None:
    """Raise ``body_problem``'s error when ``body`` breaks the rule."""
    if not obeys_rule(body, 1, max_depth):
        raise _problem(body, path, 1, max_depth) or FlareError(ErrorCode.INVALID, f"not a JSON value - at `{path}`")


# ---------------------------------------------------------------------------- bodies stored before the rule


def decode_stored_body(raw: bytes | str) -> dict[str, Any]:
    """A stored body (JSON) as the server may send it: as it is when it obeys the rule (to
    ``MAX_STORED_DEPTH``), which every body stored since the rule does; else with its values made to obey it
    (see the module docstring). Never raises."""
    try:
        body = _decode_json(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return _salvage(raw)
    if type(body) is dict and obeys_rule(body, 1, MAX_STORED_DEPTH):
        return body
    return _salvage(raw)


def _salvage(raw: bytes | str) -> dict[str, Any]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        # The standard library reads what msgspec refuses: lone surrogates, NaN, Infinity.
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    clean: dict[str, Any] = _sanitise(value, 1)
    return clean


def _sanitise(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else repr(value)
    if depth > MAX_STORED_DEPTH:
        return None
    if isinstance(value, list):
        return [_sanitise(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_SURROGATE.sub("\ufffd", str(k)): _sanitise(v, depth + 1) for k, v in value.items()}
    return None
