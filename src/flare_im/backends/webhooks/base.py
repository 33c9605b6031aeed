"""The webhook store port: integration endpoints (admin-configured) and the deliveries of after-events to them.

An *endpoint* is a URL that receives signed POSTs of the event types it lists (docs/integration.md). Every change
to the endpoint list moves ``endpoints_revision``, which each node polls to refresh its cached copy.

A *delivery* is one event for one endpoint, identified by ``delivery_id`` (endpoint id and event id: the same
event queued twice makes one delivery). Its row moves through states:

- ``pending``: to be sent at ``next_at`` (first try, or a retry after a failure); ``lease_until`` holds it for
  the worker sending it, after which another worker (or the same one) may take it again.
- ``delivered``: the endpoint answered 2xx.
- ``dead``: out of tries (the dead-letter list, with its payload and last error). ``replay`` makes it pending.

Final rows are kept for a bounded time (``purge_deliveries``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATES = (PENDING, DELIVERED, DEAD)
BEFORE_SEND = "before_send"
AFTER_EVENTS = ("after_send", "after_op", "membership", "presence", "push_dropped")
EVENTS = (BEFORE_SEND, *AFTER_EVENTS)
FAIL_OPEN, FAIL_CLOSED = "open", "closed"
POLICIES = (FAIL_OPEN, FAIL_CLOSED)


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: str
    url: str
    secret: str  # the HMAC key shared with the receiver
    events: tuple[str, ...]  # of EVENTS
    timeout_ms: int = 2_000  # per request (before_send: how long a send may wait for the answer)
    policy: str = FAIL_OPEN  # before_send on timeout or error: open (send unchanged) or closed (refuse)
    enabled: bool = True
    description: str = ""
    created_at: int = 0  # epoch ms
    updated_at: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    endpoint_id: str
    event: str  # the event type (AFTER_EVENTS)
    event_id: str
    payload: str  # the JSON body POSTed
    state: str = PENDING
    tries: int = 0
    next_at: int = 0  # epoch ms: when a pending delivery is due
    last_error: str = ""  # the last failed try: status and the start of the answer, or the transport error
    created_at: int = 0  # epoch ms: when the event happened
    updated_at: int = 0


def endpoint_values(e: Endpoint) -> tuple[Any, ...]:
    """``e``'s fields in the column order of the webhook_endpoints table (both adapters)."""
    return (
        e.endpoint_id,
        e.url,
        e.secret,
        ",".join(e.events),
        e.timeout_ms,
        e.policy,
        e.enabled,
        e.description,
        e.created_at,
        e.updated_at,
    )


def endpoint_of(row: Sequence[Any]) -> Endpoint:
    return Endpoint(
        row[0], row[1], row[2], tuple(e for e in row[3].split(",") if e), row[4], row[5], bool(row[6]), *row[7:10]
    )


def delivery_values(d: Delivery) -> tuple[Any, ...]:
    """``d``'s fields in the column order of the webhook_deliveries table (both adapters)."""
    return (
        d.delivery_id,
        d.endpoint_id,
        d.event,
        d.event_id,
        d.payload,
        d.state,
        d.tries,
        d.next_at,
        d.last_error,
        d.created_at,
        d.updated_at,
    )


ENDPOINT_COLS = "endpoint_id, url, secret, events, timeout_ms, policy, enabled, description, created_at, updated_at"
DELIVERY_COLS = (
    "delivery_id, endpoint_id, event, event_id, payload, state, tries, next_at, last_error, created_at, updated_at"
)


class WebhookStore(Protocol):
    async def endpoints(self) -> list[Endpoint]:
        """Every endpoint, enabled or not, by ``endpoint_id``."""
        ...

    async def endpoints_revision(self) -> int:
        """A number that changes (grows) with every ``put_endpoint`` and ``delete_endpoint`` that changed
        something: one cheap read tells a node its cached endpoint list is stale."""
        ...

    async def put_endpoint(self, endpoint: Endpoint) -> None:
        """Create or replace the endpoint with ``endpoint.endpoint_id``; moves the revision (one transaction)."""
        ...

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Delete the endpoint and all its deliveries; False (and nothing changed) when there is none."""
        ...

    async def add_deliveries(self, deliveries: Sequence[Delivery], now: int, lease_ms: int) -> set[str]:
        """Store the deliveries not stored yet (by ``delivery_id``) as pending, leased to the caller until
        ``now + lease_ms``; returns the ids stored by this call (the caller sends those). An id already stored,
        in whatever state, is left as it is: a queue record handled twice makes no second delivery."""
        ...

    async def take_due(self, now: int, lease_ms: int, limit: int) -> list[Delivery]:
        """Up to ``limit`` pending deliveries due at ``now`` (``next_at`` and lease passed), oldest due first,
        each leased to the caller until ``now + lease_ms``: concurrent callers never get the same one."""
        ...

    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Store each delivery's new state, tries, ``next_at``, last error and ``updated_at``; releases the lease.
        A delivery whose row is gone (its endpoint deleted) is ignored."""
        ...

    async def deliveries(
        self, *, endpoint_id: str = "", state: str = "", since: int = 0, limit: int = 100
    ) -> list[Delivery]:
        """Deliveries updated at or after ``since`` (epoch ms), newest update first, optionally of one endpoint
        and one state."""
        ...

    async def replay(self, now: int, *, endpoint_id: str = "", delivery_ids: Sequence[str] = ()) -> int:
        """Make dead deliveries pending again, due at ``now`` with their tries reset: the ones named (if any),
        else every dead one of ``endpoint_id``. Deliveries not dead are left alone. Returns how many."""
        ...

    async def purge_deliveries(self, before: int) -> int:
        """Delete delivered and dead deliveries last updated before ``before`` (epoch ms); returns how many."""
        ...
