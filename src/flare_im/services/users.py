"""Accounts: self-registration with a password (open, by invite, or closed), login, users created by a business
backend (admin key), profiles and invites.

Every id that comes in is normalised first (flare_im.identity: NFKC, case folding), so ``Alice`` registers,
logs in and is named as ``alice``. Display names and avatars may not hold control characters (422). Login and
registration are limited per client IP and per account (services/abuse.py) before any password is hashed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from flare_im.backends.relational.base import AlreadyExists, Invite, InviteStore, InviteUnusable, User, UserStore
from flare_im.identity import check_id, check_text, normalize_id
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, invalid, not_found, unauthorized
from flare_im.services.abuse import AbuseGuard
from flare_im.services.auth import AuthService, TokenPair

_log = logging.getLogger(__name__)
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_DISPLAY_NAME = 128
MAX_AVATAR = 1024
MAX_IMPORT = 1000
MAX_INVITE_USES = 100_000
MAX_INVITE_TTL_S = 365 * 24 * 3600
REGISTRATION_MODES = ("open", "invite", "closed")


class AccountStore(UserStore, InviteStore, Protocol):
    """What the account service reads and writes."""


class UserService:
    def __init__(
        self,
        users: AccountStore,
        auth: AuthService,
        *,
        registration: str = "open",
        guard: AbuseGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if registration not in REGISTRATION_MODES:
            raise ValueError(f"registration must be one of {', '.join(REGISTRATION_MODES)}")
        self._users = users
        self._auth = auth
        self.registration = registration
        self._guard = guard
        self._clock = clock

    async def register(
        self, username: str, password: str, display_name: str = "", *, invite: str | None = None, ip: str = ""
    ) -> TokenPair:
        """Create a user whose id is ``username`` (normalised) and return its first tokens. Refused: 403 when
        registration is closed, or by invite and ``invite`` is missing, unknown, used up or expired; 429 over
        the per-IP limit; 409 if the id is taken; 422 on a bad field. A refused registration changes nothing."""
        if self.registration == "closed":
            raise FlareError(ErrorCode.FORBIDDEN, "self-registration is disabled on this server")
        uid = check_id(username, "username")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise invalid(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
        _check_profile(display_name, "")
        invite_hash = None
        if self.registration == "invite":
            if not invite:
                raise FlareError(ErrorCode.FORBIDDEN, "registration on this server needs an invite token")
            invite_hash = _digest(invite)
        if self._guard is not None:
            await self._guard.check_register(ip)
        # Cheap refusals first: a taken name or a bad invite costs no hash.
        if await self._users.get_user(uid) is not None:
            raise _taken(uid)
        if invite_hash is not None and not _usable(await self._users.get_invite(invite_hash), self._clock()):
            raise _bad_invite()
        user = User(uid=uid, username=uid, display_name=display_name or uid, avatar="", created_at=now_ms())
        password_hash = await self._auth.hash_password(password)
        try:
            await self._users.create_user(user, password_hash, invite=invite_hash, now=int(self._clock()))
        except AlreadyExists:
            raise _taken(uid) from None
        except InviteUnusable:
            raise _bad_invite() from None
        return await self._auth.issue_pair(user.uid)

    async def login(self, username: str, password: str, *, ip: str = "") -> TokenPair:
        account = normalize_id(username)
        if account is None:
            raise unauthorized("wrong username or password")  # no account can have this name
        if self._guard is not None:
            await self._guard.check_login(ip, account)
        creds = await self._users.get_credentials(account)
        # Verify against a dummy hash when the user is unknown, so timing does not reveal usernames.
        ok = await self._auth.verify_password(creds[1] if creds else _DUMMY_HASH, password)
        if creds is None or not ok:
            if self._guard is not None:
                await self._guard.login_failed(account)
            raise unauthorized("wrong username or password")
        return await self._auth.issue_pair(creds[0])

    async def create_by_admin(self, uid: str, display_name: str = "", avatar: str = "") -> User:
        uid = check_id(uid, "user id")
        _check_profile(display_name, avatar)
        user = User(uid=uid, username=None, display_name=display_name or uid, avatar=avatar, created_at=now_ms())
        try:
            await self._users.create_user(user, None)
        except AlreadyExists:
            raise _taken(uid, "user") from None
        return user

    async def import_by_admin(self, users: list[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
        """Create many ``(uid, display_name, avatar)`` users at once (they share commits). Returns the ids
        created and the ids that already existed, normalised; an invalid entry fails the whole request first."""
        if len(users) > MAX_IMPORT:
            raise invalid(f"at most {MAX_IMPORT} users per request")
        wanted: dict[str, tuple[str, str]] = {}
        for uid, display_name, avatar in users:
            _check_profile(display_name, avatar)
            wanted.setdefault(check_id(uid, "user id"), (display_name, avatar))
        results = await asyncio.gather(
            *(self.create_by_admin(uid, name, avatar) for uid, (name, avatar) in wanted.items()),
            return_exceptions=True,
        )
        created, existing = [], []
        for uid, result in zip(wanted, results, strict=True):
            if isinstance(result, FlareError) and result.code == ErrorCode.CONFLICT:
                existing.append(uid)
            elif isinstance(result, BaseException):
                raise result
            else:
                created.append(uid)
        return created, existing

    async def issue_tokens_by_admin(self, uids: list[str], ttl_s: int | None = None) -> dict[str, str]:
        """Access tokens keyed by the normalised ids."""
        if len(uids) > MAX_IMPORT:
            raise invalid(f"at most {MAX_IMPORT} users per request")
        _check_ttl(ttl_s)
        normal = list(dict.fromkeys(check_id(u, "user id") for u in uids))
        found = {u.uid for u in await self._users.get_users(normal)}
        missing = [u for u in normal if u not in found]
        if missing:
            raise not_found(f"no such user: {', '.join(missing[:5])}")
        return {uid: self._auth.issue_access_token(uid, ttl_s=ttl_s) for uid in normal}

    async def issue_token_by_admin(self, uid: str, ttl_s: int | None = None) -> tuple[str, str]:
        """``(normalised uid, access token)``."""
        uid = check_id(uid, "user id")
        _check_ttl(ttl_s)
        if await self._users.get_user(uid) is None:
            raise not_found(f"no such user {uid!r}")
        return uid, self._auth.issue_access_token(uid, ttl_s=ttl_s)

    async def revoke_tokens_by_admin(self, uid: str) -> str:
        """Revoke every token of a user (all sessions and devices); returns the normalised uid."""
        uid = check_id(uid, "user id")
        if await self._users.get_user(uid) is None:
            raise not_found(f"no such user {uid!r}")
        await self._auth.revoke_all(uid)
        return uid

    async def get(self, uid: str) -> User:
        user = await self._users.get_user(uid)
        if user is None:
            raise not_found(f"no such user {uid!r}")
        return user

    async def profiles(self, uids: list[str]) -> list[User]:
        if len(uids) > 500:
            raise invalid("at most 500 user ids per request")
        return await self._users.get_users([check_id(u, "user id") for u in uids])

    async def update_profile(self, uid: str, *, display_name: str | None, avatar: str | None) -> User:
        _check_profile(display_name or "", avatar or "")
        if display_name is not None and not display_name.strip():
            raise invalid("display name must not be empty")
        await self._users.update_profile(uid, display_name=display_name, avatar=avatar)
        return await self.get(uid)

    # ------------------------------------------------------------------ invites (admin)

    async def create_invite(
        self, *, max_uses: int = 1, ttl_s: int = 7 * 24 * 3600, note: str = ""
    ) -> tuple[Invite, str]:
        """A new invite and its token (shown once: only its hash is stored)."""
        if not 1 <= max_uses <= MAX_INVITE_USES:
            raise invalid(f"max_uses must be 1-{MAX_INVITE_USES}")
        if not 60 <= ttl_s <= MAX_INVITE_TTL_S:
            raise invalid("ttl_s must be between 60 seconds and 365 days")
        check_text(note, "note")
        token = secrets.token_urlsafe(24)
        invite = Invite(
            invite_id=secrets.token_hex(8),
            token_hash=_digest(token),
            max_uses=max_uses,
            uses=0,
            expires_at=int(self._clock()) + ttl_s,
            created_at=now_ms(),
            note=note,
        )
        await self._users.create_invite(invite)
        return invite, token

    async def invites(self) -> list[Invite]:
        return await self._users.invites()

    async def delete_invite(self, invite_id: str) -> None:
        if not await self._users.delete_invite(invite_id):
            raise not_found(f"no such invite {invite_id!r}")


async def warn_identity_flags(store: UserStore) -> None:
    """Log a WARNING listing what the migrations flagged (ids colliding or not in normal form, names with control
    characters) while any flag remains: docs/operations.md says what to do about them."""
    flags = await store.identity_flags()
    if flags:
        shown = "; ".join(f"{f.kind} {f.subject!r}: {f.reason} {f.detail}".rstrip() for f in flags[:50])
        more = f" (and {len(flags) - 50} more)" if len(flags) > 50 else ""
        _log.warning(
            "%d stored ids or names break the identity rules (see docs/operations.md, 'Ids and names flagged'): %s%s",
            len(flags),
            shown,
            more,
        )


def _check_profile(display_name: str, avatar: str) -> None:
    if len(display_name) > MAX_DISPLAY_NAME:
        raise invalid(f"display name must be at most {MAX_DISPLAY_NAME} characters")
    if len(avatar) > MAX_AVATAR:
        raise invalid(f"avatar must be at most {MAX_AVATAR} characters")
    check_text(display_name, "display name")
    check_text(avatar, "avatar")


def _check_ttl(ttl_s: int | None) -> None:
    if ttl_s is not None and not 60 <= ttl_s <= 30 * 24 * 3600:
        raise invalid("ttl_s must be between 60 seconds and 30 days")


def _usable(invite: Invite | None, now: float) -> bool:
    return invite is not None and invite.uses < invite.max_uses and invite.expires_at > now


def _taken(uid: str, what: str = "username") -> FlareError:
    return FlareError(
        ErrorCode.CONFLICT, f"{what} {uid!r} is taken" if what == "username" else f"user {uid!r} already exists"
    )


def _bad_invite() -> FlareError:
    return FlareError(ErrorCode.FORBIDDEN, "invite token unknown, used up or expired")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# argon2 hash of a random password nobody knows (used only to equalise login timing).
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$wXMbhNdrhcl5wBbUyTbnEnzVfydbUcFnMiV0pNrQTBY"
