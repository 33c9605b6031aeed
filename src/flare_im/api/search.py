"""REST route of message search (U9): ``GET /v1/search`` (docs/protocol.md, REST: search)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, Field

from flare_im.api.openapi import reply
from flare_im.api.schemas import CONV_PATTERN, Message
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.search import CURSOR_PATTERN, MAX_LIMIT, MAX_QUERY_CHARS, QUERY_PATTERN

if TYPE_CHECKING:
    from flare_im.api.http import ApiContext

MAX_INT = 2**63 - 1
_OFF = (ErrorCode.UNAVAILABLE, "search is off on this server (search_url = off)")


class SearchItem(BaseModel):
    message: Message
    snippet: str = Field(description="an excerpt of the message's text around the first match; … where cut")
    highlights: list[list[int]] = Field(
        description="[start, end) of each match in snippet, in Unicode code points (not UTF-16 units)"
    )


class SearchResults(BaseModel):
    items: list[SearchItem]
    next: str | None = Field(description="cursor of the next page (pass it as cursor); null on the last page")


def install_search_routes(app: FastAPI, ctx: ApiContext, user: Any) -> None:
    """Adds the route; ``user`` is the dependency that yields the caller's user id. With search off
    (``ctx.search`` None) it answers 503."""
    caller = Depends(user)

    @app.get(
        "/v1/search",
        tags=["conversations"],
        **reply(SearchResults, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, _OFF),
    )
    async def search(
        q: Annotated[
            str,
            Query(
                min_length=1, max_length=MAX_QUERY_CHARS, pattern=QUERY_PATTERN, description="terms separated by spaces"
            ),
        ],
        conv: Annotated[str | None, Query(max_length=160, json_schema_extra={"pattern": CONV_PATTERN})] = None,
        sender: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        kind: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
        since: Annotated[int | None, Query(ge=0, le=MAX_INT, description="ts >= since (epoch ms)")] = None,
        until: Annotated[int | None, Query(ge=0, le=MAX_INT, description="ts < until (epoch ms)")] = None,
        cursor: Annotated[str | None, Query(max_length=19, pattern=CURSOR_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
        uid: str = caller,
    ) -> dict[str, Any]:
        """The caller's messages whose text holds every term of ``q`` (case-folded, as substrings: Chinese
        and Japanese need no spaces), newest first, in the conversations it may read and only what its
        history shows there; ``conv``, ``sender``, ``kind``, ``since``/``until`` narrow it."""
        service = ctx.search
        if service is None:
            raise FlareError(ErrorCode.UNAVAILABLE, "search is off on this server (search_url = off)")
        page = await service.search(
            uid, q, conv=conv, sender=sender, kind=kind, since=since, until=until, cursor=cursor, limit=limit
        )
        items = [
            {
                "message": msgspec.to_builtins(f.message),
                "snippet": f.snippet,
                "highlights": [list(h) for h in f.highlights],
            }
            for f in page.items
        ]
        return {"items": items, "next": page.next}
