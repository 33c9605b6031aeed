"""Authentication: argon2 password hashes, JWT access tokens, refresh-token families, revocation, the admin key.

**Sessions.** A login starts a session: a random id that is the ``family`` of its refresh tokens and the ``sid``
claim of every access token issued in it. A refresh token is single-use; the next one is of the same family.
Presenting a used refresh token again (someone kept a copy) revokes the whole family: its refresh tokens, and
the access tokens of the session, the thief's and the owner's alike. Logout revokes the session the same way.
An admin-issued access token is a session of its own.

**Verification** (REST on every request, the WebSocket at ``auth``) checks the signature and expiry, then that the
user exists, that the session is not revoked and that the token was issued after the user's ``tokens_after``
(set by "revoke all my tokens"). That state is read from the relational store once per ``cache_ttl_s`` per
(user, session) and kept in memory, so the hot paths do no storage read. A revocation made on this node applies
at once; one made on another node within ``cache_ttl_s``. Connections already authenticated are not closed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from flare_im.backends.relational.base import TokenState, TokenStore
from flare_im.protocol.errors import ErrorCode, FlareError, unauthorized
from flare_im.services.abuse import HashPool, available_memory, default_hash_concurrency
from flare_im.services.signing_keys import SigningKeys

_log = logging.getLogger(__name__)
_ALGORITHM = "HS256"
_ISSUER = "flare"
MAX_CACHED = 100_000  # (user, session) token states kept in memory


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: str


@dataclass(frozen=True, slots=True)
class AccessClaims:
    uid: str
    sid: str  # the session (refresh family); a token without one is a session of its own
    issued_at: float  # epoch seconds, millisecond precision
    expires_at: int


def load_or_create_secret(value: str, path: Path) -> str:
    """An explicitly configured secret, else the one kept in ``path``, else a new one written there."""
    if value:
        return value
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def new_hasher() -> PasswordHasher:
    return PasswordHasher()


def default_hash_pool(hasher: PasswordHasher, concurrency: int = 0, wait_s: float = 2.0) -> HashPool:
    """A pool of ``concurrency`` hashing slots (0: from available memory and the hasher's memory cost)."""
    if concurrency <= 0:
        concurrency = default_hash_concurrency(hasher.memory_cost * 1024, available_memory(), _cpus())
    return HashPool(concurrency, wait_s=wait_s)


def _cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class AuthService:
    def __init__(
        self,
        tokens: TokenStore,
        *,
        jwt_secret: str,
        previous_jwt_secrets: Sequence[str] = (),
        admin_key: str,
        access_ttl_s: int,
        refresh_ttl_s: int,
        hasher: PasswordHasher | None = None,
        hash_pool: HashPool | None = None,
        cache_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tokens = tokens
        self._secret = jwt_secret
        self._keys = SigningKeys(jwt_secret, tuple(previous_jwt_secrets))
        self._kid_header = {"kid": self._keys.current_id}
        self._keys_by_id = self._keys.by_id()
        self._admin_key = admin_key.encode()
        self.access_ttl_s = access_ttl_s
        self._refresh_ttl_s = refresh_ttl_s
        self._hasher = hasher or new_hasher()
        self.hash_pool = hash_pool or default_hash_pool(self._hasher)
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._states: dict[tuple[str, str], tuple[TokenState, float]] = {}
        # Banned and deleted accounts (services/admin.py): ``gate(uid, active)`` raises AccountRefused; ``active``:
        # also note the user as acting now (daily-active statistics). None when not configured.
        self.gate: Callable[[str, bool], None] | None = None

    # ------------------------------------------------------------------ passwords (bounded pool of threads)

    async def hash_password(self, password: str) -> str:
        return await self.hash_pool.run(self._hasher.hash, password)

    async def verify_password(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await self.hash_pool.run(verify)

    # ------------------------------------------------------------------ access tokens

    def issue_access_token(self, uid: str, *, ttl_s: int | None = None, sid: str | None = None) -> str:
        now = self._clock()
        claims: dict[str, Any] = {
            "sub": uid,
            "iat": round(now, 3),  # a NumericDate may have a fraction: revocation compares milliseconds
            "exp": int(now) + (ttl_s or self.access_ttl_s),
            "iss": _ISSUER,
            "typ": "access",
            "sid": sid or _new_id(),
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM, headers=self._kid_header)

    def _verifying_keys(self, token: str) -> list[str]:
        """The keys to try on ``token``: the one its ``kid`` names, or each (a token from before rotation)."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        if kid is None:
            return [self._keys.current, *self._keys.previous]
        key = self._keys_by_id.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise unauthorized("invalid token: signed by a key this server does not know (retired or foreign)")
        return [key]

    def decode_access_token(self, token: str) -> AccessClaims:
        """The claims of a correctly signed, unexpired access token (nothing is looked up); FlareError 401."""
        keys = self._verifying_keys(token)
        for i, key in enumerate(keys):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[_ALGORITHM],
                    issuer=_ISSUER,
                    options={"require": ["exp", "sub"], "verify_exp": False, "verify_iat": False},
                )
                break
            except jwt.InvalidSignatureError as exc:
                if i == len(keys) - 1:
                    raise unauthorized(f"invalid token: {exc}") from None
            except jwt.PyJWTError as exc:
                raise unauthorized(f"invalid token: {exc}") from None
        sub, exp, iat = claims.get("sub"), claims.get("exp"), claims.get("iat", 0)
        if claims.get("typ") != "access" or not isinstance(sub, str):
            raise unauthorized("invalid token: not an access token")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise unauthorized("invalid token: bad exp or iat")
        if exp <= self._clock():
            raise unauthorized("token expired")
        sid = claims.get("sid")
        if not isinstance(sid, str) or not sid:
            sid = "t:" + _digest(token)[:32]  # a token issued before sessions existed: a session of its own
        return AccessClaims(sub, sid, float(iat), int(exp))

    async def authenticate(self, token: str) -> str:
        """The user id of a valid access token of an existing user, not revoked; FlareError 401 otherwise. The
        one check of both transports (REST's Authorization header, the WebSocket's ``auth``)."""
        claims = self.decode_access_token(token)
        if self.gate is not None:  # a banned or deleted account: refused with its reason, nothing is read
            self.gate(claims.uid, False)
        state = await self._state(claims.uid, claims.sid)
        if state is None:
            raise unauthorized("invalid token: no such user")
        if state.session_revoked:
            raise unauthorized("token revoked: its session was logged out")
        if claims.issued_at * 1000 < state.tokens_after:
            raise unauthorized("token revoked: the user's tokens were revoked")
        if self.gate is not None:
            self.gate(claims.uid, True)
        return claims.uid

    async def _state(self, uid: str, sid: str) -> TokenState | None:
        key = (uid, sid)
        now = self._clock()
        cached = self._states.get(key)
        if cached is not None and now - cached[1] < self._cache_ttl_s:
            return cached[0]
        try:
            state = await self._tokens.token_state(uid, sid)
        except Exception as exc:  # the store is down: the client may retry, elsewhere or later
            _log.warning("cannot check a token: %r", exc)
            raise FlareError(ErrorCode.UNAVAILABLE, "cannot check the token now: retry shortly") from None
        if state is not None and self._cache_ttl_s > 0:  # an unknown user is not cached: it may be created
            if len(self._states) >= MAX_CACHED:
                for old in list(self._states)[: MAX_CACHED // 2]:  # the oldest half (insertion order)
                    del self._states[old]
            self._states.pop(key, None)
            self._states[key] = (state, now)
        return state

    def _forget(self, match: Callable[[tuple[str, str]], bool]) -> None:
        for key in [k for k in self._states if match(k)]:
            del self._states[key]

    # ------------------------------------------------------------------ sessions and refresh tokens

    async def issue_pair(self, uid: str, family: str | None = None) -> TokenPair:
        """A new access token and refresh token; ``family`` continues a session, None starts one (a login)."""
        if self.gate is not None:
            self.gate(uid, True)
        family = family or _new_id()
        refresh = secrets.token_urlsafe(32)
        expires_at = int(self._clock()) + self._refresh_ttl_s
        await self._tokens.put_refresh_token(_digest(refresh), uid, expires_at, family)
        return TokenPair(self.issue_access_token(uid, sid=family), refresh, self.access_ttl_s, uid)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Exchange a refresh token for a new pair of the same session; the old refresh token stops working.
        Presenting it again revokes the session (every refresh and access token of it)."""
        grant = await self._tokens.take_refresh_token(_digest(refresh_token))
        if grant is None:
            raise unauthorized("unknown or revoked refresh token")
        if grant.reused:
            self._forget(lambda key: key[1] == grant.family)
            raise unauthorized("refresh token already used: every token of its session is now revoked")
        if grant.expires_at < self._clock():
            raise unauthorized("refresh token expired")
        return await self.issue_pair(grant.uid, grant.family)

    async def logout(self, token: str) -> None:
        """Revoke the session of a valid access token: its refresh tokens and every access token of it."""
        claims = self.decode_access_token(token)
        await self.authenticate(token)
        # No access token of the session outlives the newest one that could still be issued from it.
        until = max(claims.expires_at, int(self._clock()) + self.access_ttl_s)
        await self._tokens.revoke_session(claims.sid, claims.uid, until)
        self._forget(lambda key: key[1] == claims.sid)

    async def revoke_all(self, uid: str) -> None:
        """Revoke every token of ``uid`` issued until now (refresh and access, every session and device)."""
        await self._tokens.revoke_user_tokens(uid, int(self._clock() * 1000) + 1)
        self._forget(lambda key: key[0] == uid)

    def check_admin_key(self, key: str | None) -> None:
        if not key or not hmac.compare_digest(key.encode(), self._admin_key):
            raise unauthorized("missing or wrong admin API key")


def _new_id() -> str:
    return secrets.token_hex(16)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
