"""Message kinds (src/flare_im/services/message_kinds.py): each kind's body shape and the size limit."""

from __future__ import annotations

from typing import Any

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.message_kinds import KINDS, validate_body

LIMIT = 16 * 1024

VALID: list[tuple[str, dict[str, Any]]] = [
    ("text", {"text": "hi"}),
    ("text", {"text": "hi @bob", "mentions": ["bob"]}),
    ("text", {"text": "hi all", "mentions": ["all"], "app_field": 1}),  # extra fields are kept
    ("image", {"url": "https://cdn/a.png", "width": 640, "height": 480, "size": 1234, "mime": "image/png"}),
    ("file", {"url": "https://cdn/a.pdf", "name": "a.pdf", "size": 0}),
    ("voice", {"url": "https://cdn/a.ogg", "duration_ms": 1500}),
    ("video", {"url": "https://cdn/a.mp4", "duration_ms": 9000, "thumb": "https://cdn/a.jpg"}),
    ("location", {"lat": 48.85, "lng": 2.35, "name": "Paris"}),
    ("custom", {"data": {"card": {"title": "x"}}}),
]

INVALID: list[tuple[str, dict[str, Any]]] = [
    ("text", {}),
    ("text", {"text": ""}),
    ("text", {"text": 5}),
    ("text", {"text": "hi", "mentions": "bob"}),
    ("text", {"text": "hi", "mentions": [f"u{i}" for i in range(101)]}),
    ("image", {"width": 10}),
    ("image", {"url": "", "width": 10}),
    ("image", {"url": "u", "width": 0}),
    ("file", {"url": "u", "name": "a"}),  # no size
    ("file", {"url": "u", "name": "a", "size": -1}),
    ("voice", {"url": "u", "duration_ms": 0}),
    ("video", {"url": "u"}),
    ("location", {"lat": 91, "lng": 0}),
    ("location", {"lat": 0, "lng": -181}),
    ("custom", {"data": "not an object"}),
    ("poll", {"question": "?"}),
    ("system", {"event": "forged"}),
]


@pytest.mark.parametrize(("kind", "body"), VALID)
def test_valid_bodies(kind: str, body: dict[str, Any]) -> None:
    validate_body(kind, body, LIMIT)


@pytest.mark.parametrize(("kind", "body"), INVALID)
def test_invalid_bodies(kind: str, body: dict[str, Any]) -> None:
    with pytest.raises(FlareError) as err:
        validate_body(kind, body, LIMIT)
    assert err.value.code == ErrorCode.INVALID


@pytest.mark.parametrize("kind", ["text", "custom"])
def test_size_limit(kind: str) -> None:
    body = {"text": "é" * 9000} if kind == "text" else {"data": {"blob": "x" * 20_000}}
    with pytest.raises(FlareError) as err:
        validate_body(kind, body, LIMIT)
    assert err.value.code == ErrorCode.TOO_LARGE


def test_every_kind_has_a_valid_sample() -> None:
    assert {k for k, _ in VALID} == set(KINDS)
