"""Admin keys and their scopes, and the gate that refuses banned and deleted accounts (issue U8).

**Keys.** The configured admin key (``admin_key``, ``X-Admin-Key``) is the ``root`` key, scope ``full``. A full key
creates further keys, each with one scope; a key is ``fak_<key id>.<secret>``, shown once, stored as its SHA-256.
Scopes nest: ``read`` < ``moderation`` < ``full``. What each admin endpoint needs is ``required_scope`` below
(docs/operations.md has the table): every GET is ``read``; banning, kicking, revoking tokens and the content
filter are ``moderation``; everything else (users, tokens, invites, deleting users, broadcasts, keys, push
administration) is ``full``. An endpoint not listed needs ``full``, so a new one is never open by mistake.

**Gate.** ``AccountGate`` is ``AuthService.gate``: every token check (REST, the WebSocket's ``auth``) and every
token issue (login, refresh, admin-issued tokens) calls it with the user id. It holds every ban in memory, so the
check is one dict lookup, no storage read. A ban made on this node applies at once; one made on another node
when this node next polls the bans' revision (``admin_refresh_s``), and then its local connections of the newly
refused users are closed too (the node that banned also tells every node over the bus at once). The gate also
notes which users authenticated, for daily-active statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flare_im.backends.admin.base import BANNED, DELETED, FULL, MODERATION, READ, SCOPES, AdminKey, AdminStore, Ban
from flare_im.identity import check_text
from flare_im.ids import now_ms
from flare_im.protocol.errors import AccountRefused, CloseCode, ErrorCode, FlareError, invalid, not_found, unauthorized

log = logging.getLogger(__name__)

ROOT = "root"  # the key id of the configured admin key
_KEY = re.compile(r"fak_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,64})")

# Mutating endpoints a moderation key may call (path templates as routed; every GET is read).
MODERATION_PATHS: tuple[str, ...] = (
    "/v1/admin/users/{user_id}/ban",
    "/v1/admin/users/{user_id}/kick",
    "/v1/admin/users/{user_id}/devices/{device}/kick",
    "/v1/admin/users/{user_id}/revoke",
    "/v1/admin/filter/",  # and below: the content filter's rules and checks
    "/v1/admin/moderation/",  # and below: moderation endpoints added later (reports, message removal)
    "/v1/admin/reports",
    "/v1/admin/media/{media_id}:block",  # blocking an uploaded file
)


def required_scope(method: str, path: str) -> str:
    """The scope an admin request needs: ``path`` is the route's template (``/v1/admin/users/{user_id}/ban``)."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return READ
    for allowed in MODERATION_PATHS:
        if path == allowed or (allowed.endswith("/") and path.startswith(allowed)):
            return MODERATION
    return FULL


def covers(scope: str, needed: str) -> bool:
    return SCOPES.index(scope) >= SCOPES.index(needed)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    scope: str


class AdminKeys:
    def __init__(self, store: AdminStore, root_key: str) -> None:
        self._store = store
        self._root = root_key.encode()

    async def identify(self, key: str | None) -> Principal:
        """The key's id and scope; 401 when it is missing, unknown or revoked."""
        if not key:
            raise unauthorized("missing or wrong admin API key")
        if hmac.compare_digest(key.encode(), self._root):
            return Principal(ROOT, FULL)
        match = _KEY.fullmatch(key)
        if match is not None:
            stored = await self._store.get_key(match.group(1))
            if stored is not None and not stored.revoked_at and hmac.compare_digest(stored.key_hash, _digest(key)):
                return Principal(stored.key_id, stored.scope)
        raise unauthorized("missing or wrong admin API key")

    async def create(self, scope: str, note: str, by: str) -> tuple[AdminKey, str]:
        """A new key of ``scope`` and the key itself (shown once)."""
        if scope not in SCOPES:
            raise invalid(f"scope must be one of {', '.join(SCOPES)}")
        if len(note) > 256:
            raise invalid("note must be at most 256 characters")
        check_text(note, "note")
        key_id = secrets.token_hex(6)
        secret = f"fak_{key_id}.{secrets.token_urlsafe(32)}"
        key = AdminKey(key_id, _digest(secret), scope, note, now_ms(), by)
        await self._store.create_key(key)
        return key, secret

    async def keys(self) -> list[AdminKey]:
        return await self._store.keys()

    async def revoke(self, key_id: str) -> None:
        if not await self._store.revoke_key(key_id, now_ms()):
            raise not_found(f"no valid admin key {key_id!r}")


def refusal(ban: Ban) -> AccountRefused:
    if ban.kind == DELETED:
        return AccountRefused("the account was deleted", CloseCode.ACCOUNT_DELETED, {"deleted": True})
    return AccountRefused(
        f"the account is banned: {ban.reason}" if ban.reason else "the account is banned",
        CloseCode.BANNED,
        {"banned": True, "reason": ban.reason, "since": ban.created_at},
    )


Kick = Callable[[str, str | None, int, str], Awaitable[int]]  # (uid, device or None, close code, reason) -> closed


class AccountGate:
    """AuthService's gate: refuses banned and deleted accounts, notes active users (see the module docstring)."""

    def __init__(self, store: AdminStore, *, refresh_s: float = 1.0, activity_flush_s: float = 5.0) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._flush_s = activity_flush_s
        self._refused: dict[str, Ban] = {}
        self._revision = -1
        self.active: set[str] = set()  # users that authenticated since the last flush
        self.on_refused: Callable[[Ban], None] | None = None  # a ban learned from the store: close local devices
        self._tasks: list[asyncio.Task[None]] = []

    def __call__(self, uid: str, active: bool) -> None:
        refused = self._refused
        if refused:
            ban = refused.get(uid)
            if ban is not None:
                raise refusal(ban)
        if active:
            self.active.add(uid)

    def ban_of(self, uid: str) -> Ban | None:
        return self._refused.get(uid)

    def refuse(self, ban: Ban) -> None:
        self._refused[ban.uid] = ban

    def allow(self, uid: str) -> None:
        ban = self._refused.get(uid)
        if ban is not None and ban.kind != DELETED:
            del self._refused[uid]

    async def reload(self) -> None:
        revision = await self._store.bans_revision()
        if revision == self._revision:
            return
        bans = {b.uid: b for b in await self._store.bans()}
        new = [b for uid, b in bans.items() if uid not in self._refused and self._revision >= 0]
        self._refused, self._revision = bans, revision
        if self.on_refused is not None:
            for ban in new:
                self.on_refused(ban)

    async def flush_activity(self) -> None:
        if self.active:
            users, self.active = self.active, set()
            await self._store.record_active(day_of(time.time()), sorted(users))

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._poll()), asyncio.ensure_future(self._flush())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.flush_activity()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.reload()
            except Exception as exc:  # the next poll tries again; bans known so far stay in force
                log.warning("cannot reload bans: %r", exc)

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush_activity()
            except Exception as exc:
                log.warning("cannot record daily activity: %r", exc)


def day_of(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s))


def check_reason(reason: str) -> str:
    if len(reason) > 512:
        raise invalid("reason must be at most 512 characters")
    return reason


def banned_already(ban: Ban | None) -> FlareError | None:
    if ban is not None and ban.kind == DELETED:
        return FlareError(ErrorCode.GONE, "the account was deleted")
    return None


__all__ = ["BANNED", "DELETED", "AccountGate", "AdminKeys", "Principal", "required_scope"]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
