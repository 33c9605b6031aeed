"""Accounts: self-registration with a password, and users created by a business backend (admin key)."""

from __future__ import annotations

import asyncio

from flare_im.backends.relational.base import AlreadyExists, User, UserStore
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, invalid, not_found, unauthorized
from flare_im.services.auth import AuthService, TokenPair
from flare_im.services.conversations import check_id

MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_DISPLAY_NAME = 128
MAX_AVATAR = 1024
MAX_IMPORT = 1000


class UserService:
    def __init__(self, users: UserStore, auth: AuthService, *, allow_registration: bool) -> None:
        self._users = users
        self._auth = auth
        self._allow_registration = allow_registration

    async def register(self, username: str, password: str, display_name: str = "") -> TokenPair:
        """Create a user whose id is ``username`` and return its first tokens."""
        if not self._allow_registration:
            raise FlareError(ErrorCode.FORBIDDEN, "self-registration is disabled on this server")
        check_id(username, "username")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise invalid(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
        _check_profile(display_name, "")
        user = User(
            uid=username, username=username, display_name=display_name or username, avatar="", created_at=now_ms()
        )
        try:
            await self._users.create_user(user, await self._auth.hash_password(password))
        except AlreadyExists:
            raise FlareError(ErrorCode.CONFLICT, f"username {username!r} is taken") from None
        return await self._auth.issue_pair(user.uid)

    async def login(self, username: str, password: str) -> TokenPair:
        creds = await self._users.get_credentials(username)
        # Verify against a dummy hash when the user is unknown, so timing does not reveal usernames.
        ok = await self._auth.verify_password(creds[1] if creds else _DUMMY_HASH, password)
        if creds is None or not ok:
            raise unauthorized("wrong username or password")
        return await self._auth.issue_pair(creds[0])

    async def create_by_admin(self, uid: str, display_name: str = "", avatar: str = "") -> User:
        check_id(uid, "user id")
        _check_profile(display_name, avatar)
        user = User(uid=uid, username=None, display_name=display_name or uid, avatar=avatar, created_at=now_ms())
        try:
            await self._users.create_user(user, None)
        except AlreadyExists:
            raise FlareError(ErrorCode.CONFLICT, f"user {uid!r} already exists") from None
        return user

    async def import_by_admin(self, users: list[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
        """Create many ``(uid, display_name, avatar)`` users at once (they share commits). Returns the ids
        created and the ids that already existed; an invalid entry fails the whole request first."""
        if len(users) > MAX_IMPORT:
            raise invalid(f"at most {MAX_IMPORT} users per request")
        for uid, display_name, avatar in users:
            check_id(uid, "user id")
            _check_profile(display_name, avatar)
        results = await asyncio.gather(
            *(self.create_by_admin(uid, name, avatar) for uid, name, avatar in users), return_exceptions=True
        )
        created, existing = [], []
        for (uid, _, _), result in zip(users, results, strict=True):
            if isinstance(result, FlareError) and result.code == ErrorCode.CONFLICT:
                existing.append(uid)
            elif isinstance(result, BaseException):
                raise result
            else:
                created.append(uid)
        return created, existing

    async def issue_tokens_by_admin(self, uids: list[str], ttl_s: int | None = None) -> dict[str, str]:
        if len(uids) > MAX_IMPORT:
            raise invalid(f"at most {MAX_IMPORT} users per request")
        found = {u.uid for u in await self._users.get_users(uids)}
        missing = [u for u in uids if u not in found]
        if missing:
            raise not_found(f"no such user: {', '.join(missing[:5])}")
        return {uid: await self.issue_token_by_admin(uid, ttl_s) for uid in dict.fromkeys(uids)}

    async def issue_token_by_admin(self, uid: str, ttl_s: int | None = None) -> str:
        if await self._users.get_user(uid) is None:
            raise not_found(f"no such user {uid!r}")
        if ttl_s is not None and not 60 <= ttl_s <= 30 * 24 * 3600:
            raise invalid("ttl_s must be between 60 seconds and 30 days")
        return self._auth.issue_access_token(uid, ttl_s=ttl_s)

    async def get(self, uid: str) -> User:
        user = await self._users.get_user(uid)
        if user is None:
            raise not_found(f"no such user {uid!r}")
        return user

    async def profiles(self, uids: list[str]) -> list[User]:
        if len(uids) > 500:
            raise invalid("at most 500 user ids per request")
        return await self._users.get_users(uids)

    async def update_profile(self, uid: str, *, display_name: str | None, avatar: str | None) -> User:
        _check_profile(display_name or "", avatar or "")
        if display_name is not None and not display_name.strip():
            raise invalid("display name must not be empty")
        await self._users.update_profile(uid, display_name=display_name, avatar=avatar)
        return await self.get(uid)


def _check_profile(display_name: str, avatar: str) -> None:
    if len(display_name) > MAX_DISPLAY_NAME:
        raise invalid(f"display name must be at most {MAX_DISPLAY_NAME} characters")
    if len(avatar) > MAX_AVATAR:
        raise invalid(f"avatar must be at most {MAX_AVATAR} characters")


# argon2 hash of a random password nobody knows (used only to equalise login timing).
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$wXMbhNdrhcl5wBbUyTbnEnzVfydbUcFnMiV0pNrQTBY"
