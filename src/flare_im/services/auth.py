"""Authentication: argon2 password hashes, JWT access tokens, single-use refresh tokens, the admin key."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from flare_im.backends.relational.base import UserStore
from flare_im.protocol.errors import unauthorized

_ALGORITHM = "HS256"
_ISSUER = "flare"


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: str


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


class AuthService:
    def __init__(
        self,
        users: UserStore,
        *,
        jwt_secret: str,
        admin_key: str,
        access_ttl_s: int,
        refresh_ttl_s: int,
    ) -> None:
        self._users = users
        self._secret = jwt_secret
        self._admin_key = admin_key.encode()
        self.access_ttl_s = access_ttl_s
        self._refresh_ttl_s = refresh_ttl_s
        self._hasher = PasswordHasher()

    # ------------------------------------------------------------------ passwords (off the event loop)

    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify_password(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(verify)

    # ------------------------------------------------------------------ tokens

    def issue_access_token(self, uid: str, *, ttl_s: int | None = None) -> str:
        now = int(time.time())
        claims = {"sub": uid, "iat": now, "exp": now + (ttl_s or self.access_ttl_s), "iss": _ISSUER, "typ": "access"}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify_access_token(self, token: str) -> str:
        """The user id of a valid access token; FlareError 401 otherwise."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], issuer=_ISSUER, options={"require": ["exp", "sub"]}
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
            raise unauthorized("invalid token: not an access token")
        uid: str = claims["sub"]
        return uid

    async def issue_pair(self, uid: str) -> TokenPair:
        refresh = secrets.token_urlsafe(32)
        expires_at = int(time.time()) + self._refresh_ttl_s
        await self._users.put_refresh_token(_digest(refresh), uid, expires_at)
        return TokenPair(self.issue_access_token(uid), refresh, self.access_ttl_s, uid)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Exchange a refresh token for a new pair; the old refresh token stops working."""
        taken = await self._users.take_refresh_token(_digest(refresh_token))
        if taken is None:
            raise unauthorized("unknown or already used refresh token")
        uid, expires_at = taken
        if expires_at < time.time():
            raise unauthorized("refresh token expired")
        return await self.issue_pair(uid)

    def check_admin_key(self, key: str | None) -> None:
        if not key or not hmac.compare_digest(key.encode(), self._admin_key):
            raise unauthorized("missing or wrong admin API key")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
