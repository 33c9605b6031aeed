"""docs/protocol.md is the contract: the defaults it states are the server's (config.py)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from flare_im.config import Settings

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_idempotency_cache_size_is_the_configured_default() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    stated = re.findall(r"cache of the ([\d,]+) most recent keys by default \(`idempotency_cache_size`\)", text)
    assert stated, "protocol.md §7 no longer states the idempotency cache size"
    assert {int(n.replace(",", "")) for n in stated} == {Settings().idempotency_cache_size}
    assert "500 000" not in text


def test_every_rest_endpoint_is_in_the_rest_section() -> None:
    """protocol.md §11 lists every route of the REST API with its method (status, shape and errors beside)."""
    from typing import Any

    from fastapi.routing import APIRoute

    from flare_im.api.http import build_api

    text = PROTOCOL.read_text(encoding="utf-8")
    rest = text[text.index("## 11. REST API") :]
    ctx: Any = SimpleNamespace(ws_urls=["ws://127.0.0.1:8081/v1/ws"])  # the routes use the rest only when called
    routes = [r for r in build_api(ctx).routes if isinstance(r, APIRoute) and r.include_in_schema]
    assert len(routes) > 30
    for route in routes:
        for method in route.methods:
            assert re.search(rf"`{method} {re.escape(route.path)}[`?]", rest), f"{method} {route.path}"
