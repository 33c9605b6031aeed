"""The idempotency store port: ``(sender, client message id)`` claims and results shared by every node.

A retried send may land on another node than the original; the store lets that node find the original's
result (or see that it is still in progress) without a search of the message log. Entries expire: the
guarantee holds within ``ttl_s`` of the claim or the result.

The store may lose everything (a Redis that restarted empty). It then stops vouching for fresh claims: every
claim answers RECLAIMED (look in the durable log) until a node ``restore``s it from the log's recent sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

HELD, CLAIMED, RECLAIMED = 0, 1, 2


class IdempotencyStore(Protocol):
    async def reserve(self, sender: str, cmid: str, ttl_s: float) -> int:
        """Atomically claim ``(sender, cmid)`` for ``ttl_s``: truthy for exactly one caller among all nodes,
        0 (HELD) while someone holds the claim or a result is stored. CLAIMED (1) for a first claim;
        RECLAIMED (2) when an earlier claim of the key ran out without a result within the store's memory
        of claims (its holder may have stored the message before it died), or while the store does not vouch
        for its memory (see ``restore``): look in the durable log."""
        ...

    async def complete(self, sender: str, cmid: str, result: bytes, ttl_s: float) -> None:
        """Store the result of ``(sender, cmid)`` for ``ttl_s`` (replacing the claim)."""
        ...

    async def get(self, sender: str, cmid: str) -> bytes | None:
        """The stored result; None while it is only claimed, or when absent or expired."""
        ...

    async def release(self, sender: str, cmid: str) -> None:
        """Drop a claim whose send failed, so a retry may claim it again. A stored result is kept."""
        ...

    async def vouched(self) -> bool:
        """Whether a CLAIMED answer can be trusted: False from the start of a store (or after it lost its
        data) until ``restore``."""
        ...

    async def restore(self, keys: Sequence[tuple[str, str]], *, complete: bool, window_s: float) -> bool:
        """Remember ``keys`` (the sends the durable log holds from the last ``window_s``) as claimed once,
        then vouch: at once when ``keys`` is complete, else once ``window_s`` has passed. One node at a time:
        False when it did not vouch (another node is restoring, or the store lost its data again meanwhile)."""
        ...
