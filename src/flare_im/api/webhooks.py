"""REST routes of the integration webhooks (admin only, docs/integration.md): endpoints (URL, secret, events,
timeout, failure policy) and their deliveries — pending, delivered and the dead letters, which can be replayed."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from flare_im.api.openapi import reply
from flare_im.backends.webhooks.base import EVENTS, STATES, Delivery, Endpoint
from flare_im.protocol.errors import ErrorCode, FlareError, invalid, not_found

if TYPE_CHECKING:
    from flare_im.api.http import ApiContext
    from flare_im.services.webhooks import Webhooks

_MAX_MS = 2**62
_OFF = (ErrorCode.UNAVAILABLE, "webhooks are not available on this node")
EndpointPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^wh_[0-9a-f]{1,60}$")]
Event = Literal["before_send", "after_send", "after_op", "membership", "presence", "push_dropped"]
assert set(STATES) == {"pending", "delivered", "dead"}
assert set(EVENTS) == {"before_send", "after_send", "after_op", "membership", "presence", "push_dropped"}

_PORT = "6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}"
# A host name or IPv4 address (no credentials, no IPv6 literal), an optional port, then printable ASCII only.
URL_PATTERN = f"^https?://[A-Za-z0-9._~-]+(?::(?:{_PORT}))?(?:[/?#][!-~]*)?$"
_DOCS = {
    "url": "http:// or https:// URL the events are POSTed to",
    "secret": "HMAC-SHA256 key of the signatures (16-256 characters); generated when left out",
    "events": "event types the endpoint receives",
    "timeout_ms": "ms per request; before_send: how long a send waits at most",
    "policy": "before_send on timeout or error: open (send unchanged) or closed (refuse with 424)",
}


def _url(default: Any) -> Any:
    return Field(default, min_length=8, max_length=2048, pattern=URL_PATTERN, description=_DOCS["url"])


def _secret() -> Any:
    return Field(None, min_length=16, max_length=256, description=_DOCS["secret"])


def _events(default: Any) -> Any:
    return Field(default, min_length=1, max_length=len(EVENTS), description=_DOCS["events"])


def _timeout(default: Any) -> Any:
    return Field(default, ge=100, le=30_000, description=_DOCS["timeout_ms"])


class EndpointBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = _url(...)
    secret: str | None = _secret()
    events: list[Event] = _events(...)
    timeout_ms: int = _timeout(2_000)
    policy: Literal["open", "closed"] = Field("open", description=_DOCS["policy"])
    enabled: StrictBool = True
    description: str = Field("", max_length=256)


class EndpointChange(BaseModel):
    """Fields to change; the others keep their values."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = _url(None)
    secret: str | None = _secret()
    events: list[Event] | None = _events(None)
    timeout_ms: int | None = _timeout(None)
    policy: Literal["open", "closed"] | None = Field(None, description=_DOCS["policy"])
    enabled: StrictBool | None = None
    description: str | None = Field(None, max_length=256)


class EndpointReply(BaseModel):
    endpoint_id: str
    url: str
    events: list[str]
    timeout_ms: int
    policy: str
    enabled: bool
    description: str
    created_at: int
    updated_at: int
    secret: str = Field(default="", description="only when created or when the secret was changed")


class EndpointList(BaseModel):
    items: list[EndpointReply]


class DeliveryReply(BaseModel):
    delivery_id: str
    endpoint_id: str
    event: str
    event_id: str
    state: str
    tries: int
    next_at: int
    last_error: str
    created_at: int
    updated_at: int
    payload: dict[str, Any]


class DeliveryList(BaseModel):
    items: list[DeliveryReply]


class ReplayBody(BaseModel):
    delivery_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=1000, description="dead deliveries to replay; empty: every dead one"
    )

    model_config = ConfigDict(extra="forbid")


class Replayed(BaseModel):
    replayed: int


def endpoint_json(e: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "endpoint_id": e.endpoint_id,
        "url": e.url,
        "events": list(e.events),
        "timeout_ms": e.timeout_ms,
        "policy": e.policy,
        "enabled": e.enabled,
        "description": e.description,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    }
    if with_secret:
        out["secret"] = e.secret
    return out


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "delivery_id": d.delivery_id,
        "endpoint_id": d.endpoint_id,
        "event": d.event,
        "event_id": d.event_id,
        "state": d.state,
        "tries": d.tries,
        "next_at": d.next_at,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "payload": json.loads(d.payload) if d.payload else {},
    }


def check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when the port is not a number in 0-65535
    except ValueError as exc:
        raise invalid(f"url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise invalid("url must not carry credentials: the signature authenticates Flare")
    return url


def install_webhook_routes(app: FastAPI, ctx: ApiContext, admin: Any) -> None:
    """Adds the admin routes; a change applies on this node at once and on the others within webhook_refresh_s."""
    guarded = [Depends(admin)]

    def hooks() -> Webhooks:
        if ctx.webhooks is None:
            raise FlareError(ErrorCode.UNAVAILABLE, "webhooks are not available on this node")
        return ctx.webhooks

    async def find(endpoint_id: str) -> Endpoint:
        found = [e for e in await hooks().store.endpoints() if e.endpoint_id == endpoint_id]
        if not found:
            raise not_found(f"no webhook endpoint {endpoint_id}")
        return found[0]

    @app.get("/v1/admin/webhooks", tags=["admin"], dependencies=guarded, **reply(EndpointList, _OFF))
    async def list_webhooks() -> dict[str, Any]:
        """Every endpoint (its secret is shown only when it is set)."""
        return {"items": [endpoint_json(e) for e in await hooks().store.endpoints()]}

    @app.post("/v1/admin/webhooks", tags=["admin"], status_code=201, dependencies=guarded, **reply(EndpointReply, _OFF))
    async def create_webhook(body: EndpointBody) -> dict[str, Any]:
        """A new endpoint. The reply carries its secret (generated unless given): keep it to verify signatures."""
        now = time.time_ns() // 1_000_000
        endpoint = Endpoint(
            endpoint_id=f"wh_{uuid.uuid4().hex[:20]}",
            url=check_url(body.url),
            secret=body.secret or secrets.token_urlsafe(32),
            events=tuple(dict.fromkeys(body.events)),
            timeout_ms=body.timeout_ms,
            policy=body.policy,
            enabled=body.enabled,
            description=body.description,
            created_at=now,
            updated_at=now,
        )
        await hooks().store.put_endpoint(endpoint)
        await hooks().reload(force=True)
        return endpoint_json(endpoint, with_secret=True)

    @app.get(
        "/v1/admin/webhooks/{endpoint_id}",
        tags=["admin"],
        dependencies=guarded,
        **reply(EndpointReply, ErrorCode.NOT_FOUND, _OFF),
    )
    async def get_webhook(endpoint_id: EndpointPath) -> dict[str, Any]:
        return endpoint_json(await find(endpoint_id))

    @app.patch(
        "/v1/admin/webhooks/{endpoint_id}",
        tags=["admin"],
        dependencies=guarded,
        **reply(EndpointReply, ErrorCode.NOT_FOUND, _OFF),
    )
    async def update_webhook(endpoint_id: EndpointPath, body: EndpointChange) -> dict[str, Any]:
        """Change some fields (a new ``secret`` signs every request from then on, retries included)."""
        current = await find(endpoint_id)
        changes = body.model_dump(exclude_none=True)
        if "url" in changes:
            check_url(changes["url"])
        if "events" in changes:
            changes["events"] = tuple(dict.fromkeys(changes["events"]))
        updated = dataclasses.replace(current, **changes, updated_at=time.time_ns() // 1_000_000)
        await hooks().store.put_endpoint(updated)
        await hooks().reload(force=True)
        return endpoint_json(updated, with_secret="secret" in changes)

    @app.delete(
        "/v1/admin/webhooks/{endpoint_id}",
        tags=["admin"],
        status_code=204,
        dependencies=guarded,
        **reply(None, ErrorCode.NOT_FOUND, _OFF),
    )
    async def delete_webhook(endpoint_id: EndpointPath) -> None:
        """Delete the endpoint and its deliveries (pending ones are not sent)."""
        if not await hooks().store.delete_endpoint(endpoint_id):
            raise not_found(f"no webhook endpoint {endpoint_id}")
        await hooks().reload(force=True)

    @app.get(
        "/v1/admin/webhooks/{endpoint_id}/deliveries",
        tags=["admin"],
        dependencies=guarded,
        **reply(DeliveryList, ErrorCode.NOT_FOUND, _OFF),
    )
    async def webhook_deliveries(
        endpoint_id: EndpointPath,
        state: Annotated[
            Literal["pending", "delivered", "dead"] | None, Query(description="dead: the dead letters")
        ] = None,
        since: Annotated[int, Query(ge=0, le=_MAX_MS, description="epoch ms of the last change")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The endpoint's deliveries of after-events, last changed first, with their payload and last error."""
        await find(endpoint_id)
        found = await hooks().store.deliveries(endpoint_id=endpoint_id, state=state or "", since=since, limit=limit)
        return {"items": [delivery_json(d) for d in found]}

    @app.post(
        "/v1/admin/webhooks/{endpoint_id}/replay",
        tags=["admin"],
        dependencies=guarded,
        **reply(Replayed, ErrorCode.NOT_FOUND, _OFF),
    )
    async def replay_webhook_deliveries(endpoint_id: EndpointPath, body: ReplayBody | None = None) -> dict[str, Any]:
        """Send dead deliveries again, from a first try: the ones named, or every dead one of the endpoint.
        Deliveries that are not dead are left alone (``replayed`` counts the others)."""
        await find(endpoint_id)
        ids = body.delivery_ids if body is not None else []
        now = time.time_ns() // 1_000_000
        return {"replayed": await hooks().store.replay(now, endpoint_id=endpoint_id, delivery_ids=ids)}
