"""Async client for Flare's REST API (accounts, groups, history, and where to connect).

Every method is one HTTP request, sent once: nothing is retried here. A failure raises ``FlareError``
with the server's code, message and ``retryable`` flag (docs/protocol.md §5, §11); a call whose error
is retryable (429, 500, 503) may be sent again, a ``send`` with the same ``cmid``. Transport failures
(connection refused, timeouts) raise ``httpx`` exceptions. The full reference is docs/sdk-python.md.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from flare_im.protocol.errors import ErrorCode, FlareError


class RestClient:
    """One user's (or an admin's) HTTP session with the REST API.

    ``token`` is the bearer access token: ``register``, ``login`` and ``refresh`` set it; ``admin_key``
    is sent as ``X-Admin-Key`` by the ``admin_*`` calls. Use it as ``async with RestClient(url) as rest``
    or call ``aclose()`` when done. Methods return the decoded JSON reply.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        admin_key: str | None = None,
        timeout: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._admin_key = admin_key
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, verify=verify)

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    def with_token(self, token: str) -> RestClient:
        """A new client for the same server and admin key, acting as the user of ``token`` (close it too)."""
        return RestClient(self.base_url, token=token, admin_key=self._admin_key)

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, admin: bool = False
    ) -> Any:
        """Any REST call (docs/protocol.md §11) for which there is no method: ``path`` like ``"/v1/me"``.
        Sends the bearer token, or with ``admin=True`` the admin key instead. Returns the decoded JSON, or
        None for 204. Raises ``FlareError`` (with ``detail`` when the server gave one) for HTTP >= 400."""
        headers: dict[str, str] = {}
        if self.token and not admin:
            headers["Authorization"] = f"Bearer {self.token}"
        if admin and self._admin_key:
            headers["X-Admin-Key"] = self._admin_key
        resp = await self._http.request(method, path, json=json, params=params, headers=headers)
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                raise FlareError(
                    ErrorCode(err["code"]), err["message"], retryable=err["retryable"], detail=err.get("detail")
                )
            except (ValueError, KeyError):
                raise FlareError(
                    ErrorCode.INTERNAL if resp.status_code >= 500 else ErrorCode.BAD_REQUEST,
                    f"HTTP {resp.status_code}: {resp.text[:200]}",
                ) from None
        return None if resp.status_code == 204 else resp.json()

    # accounts
    async def register(self, username: str, password: str, display_name: str = "") -> dict[str, Any]:
        """Create an account (the username becomes the user id; passwords are 8-256 characters) and use its
        access token from now on. Returns ``{user_id, access_token, refresh_token, token_type, expires_in}``.
        Raises ``FlareError`` 409 if the name is taken, 403 if the server disabled registration, 422."""
        out: dict[str, Any] = await self.request(
            "POST", "/v1/auth/register", json={"username": username, "password": password, "display_name": display_name}
        )
        self.token = out["access_token"]
        return out

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in and use the new access token from now on. Returns the same tokens as ``register``.
        Raises ``FlareError`` 401 on a wrong username or password."""
        out: dict[str, Any] = await self.request(
            "POST", "/v1/auth/login", json={"username": username, "password": password}
        )
        self.token = out["access_token"]
        return out

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Trade a refresh token (single-use) for a new pair and use the new access token from now on.
        Raises ``FlareError`` 401 if the refresh token is unknown, used or expired."""
        out: dict[str, Any] = await self.request("POST", "/v1/auth/refresh", json={"refresh_token": refresh_token})
        self.token = out["access_token"]
        return out

    async def admin_create_user(self, user_id: str, display_name: str = "", avatar: str = "") -> dict[str, Any]:
        """Admin key: create a user for a business backend that owns the accounts (no password). Returns the
        profile. Raises ``FlareError`` 409 if the id exists, 401 without a valid admin key."""
        out: dict[str, Any] = await self.request(
            "POST",
            "/v1/admin/users",
            admin=True,
            json={"user_id": user_id, "display_name": display_name, "avatar": avatar},
        )
        return out

    async def admin_import_users(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Admin key: create up to 1000 users at once. Returns ``{"created": [...], "existing": [...]}``;
        existing users are left unchanged, so a repeated import is harmless."""
        out: dict[str, list[str]] = await self.request(
            "POST", "/v1/admin/users:batch", admin=True, json={"users": [{"user_id": u} for u in user_ids]}
        )
        return out

    async def admin_issue_tokens(self, user_ids: list[str], ttl_s: int | None = None) -> dict[str, str]:
        """Admin key: access tokens for up to 1000 users, ``{user_id: token}``, valid ``ttl_s`` seconds (60 s
        to 30 days; default ``access_token_ttl_s``). Raises ``FlareError`` 404 if any user does not exist."""
        out = await self.request("POST", "/v1/admin/tokens", admin=True, json={"user_ids": user_ids, "ttl_s": ttl_s})
        tokens: dict[str, str] = out["tokens"]
        return tokens

    async def admin_issue_token(self, user_id: str, ttl_s: int | None = None) -> str:
        """Admin key: one access token for ``user_id`` (see ``admin_issue_tokens``). Raises 404 if no such user."""
        out = await self.request(
            "POST", f"/v1/admin/users/{user_id}/tokens", admin=True, json={"ttl_s": ttl_s} if ttl_s else None
        )
        token: str = out["access_token"]
        return token

    async def me(self) -> dict[str, Any]:
        """This user's profile: ``{user_id, display_name, avatar, ...}``."""
        out: dict[str, Any] = await self.request("GET", "/v1/me")
        return out

    async def gateways(self) -> list[str]:
        """The WebSocket URLs to connect ``FlareClient`` to (no token needed)."""
        out = await self.request("GET", "/v1/gateways")
        urls: list[str] = out["websocket"]
        return urls

    # devices: where push notifications reach them
    async def register_push(
        self, device: str, provider: str, token: str, *, app_id: str = "", keys: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Register where push notifications reach ``device`` (the ``device`` given to ``FlareClient``):
        ``provider`` is ``"apns"``, ``"fcm"``, ``"webpush"`` (``keys={"p256dh", "auth"}`` required) or
        ``"webhook"`` (a token of a provider the operator's webhook relays). Replaces the device's previous
        registration; returns it. Its offline devices get notifications (docs/push.md)."""
        out: dict[str, Any] = await self.request(
            "PUT",
            f"/v1/me/devices/{device}/push",
            json={"provider": provider, "token": token, "app_id": app_id, "keys": keys},
        )
        return out

    async def unregister_push(self, device: str) -> None:
        """Stop notifications to ``device`` (at logout); fine when nothing was registered."""
        await self.request("DELETE", f"/v1/me/devices/{device}/push")

    async def devices(self) -> list[dict[str, Any]]:
        """The push targets of this user's devices."""
        out = await self.request("GET", "/v1/me/devices")
        items: list[dict[str, Any]] = out["items"]
        return items

    # content filter (admin)
    async def admin_add_filter_rule(
        self, pattern: str, *, match: str = "word", action: str = "block", rule_id: str | None = None
    ) -> dict[str, Any]:
        """Admin key: add a content-filter rule (or create/replace ``rule_id``). ``match`` is ``"word"``
        (case-insensitive substring) or ``"regex"``; ``action`` is ``"block"`` (error 451) or ``"mask"``.
        Returns the rule with its ``rule_id``. Raises ``FlareError`` 422 for a bad pattern."""
        body = {"pattern": pattern, "match": match, "action": action}
        if rule_id is None:
            out: dict[str, Any] = await self.request("POST", "/v1/admin/filter/rules", admin=True, json=body)
        else:
            out = await self.request("PUT", f"/v1/admin/filter/rules/{rule_id}", admin=True, json=body)
        return out

    async def admin_delete_filter_rule(self, rule_id: str) -> None:
        """Admin key: delete a rule. Raises ``FlareError`` 404 if there is no such rule."""
        await self.request("DELETE", f"/v1/admin/filter/rules/{rule_id}", admin=True)

    async def admin_filter_rules(self) -> list[dict[str, Any]]:
        """Admin key: every content-filter rule."""
        out = await self.request("GET", "/v1/admin/filter/rules", admin=True)
        items: list[dict[str, Any]] = out["items"]
        return items

    # groups
    async def create_group(self, name: str, members: list[str], *, group_id: str | None = None) -> dict[str, Any]:
        """Create a group owned by this user with ``members`` (besides the owner); ``group_id`` is generated
        unless given. Returns ``{group_id, conv, name, avatar, owner, created_at, member_count}``; ``conv``
        (``"g:<group_id>"``) is the conversation to send to. Raises ``FlareError`` 404 if a member does not
        exist, 409 if ``group_id`` is taken."""
        out: dict[str, Any] = await self.request(
            "POST", "/v1/groups", json={"name": name, "members": members, "group_id": group_id}
        )
        return out

    async def group(self, group_id: str) -> dict[str, Any]:
        """The group's info, as ``create_group`` returns it. Raises ``FlareError`` 403 for a non-member."""
        out: dict[str, Any] = await self.request("GET", f"/v1/groups/{group_id}")
        return out

    async def update_group(
        self, group_id: str, *, name: str | None = None, avatar: str | None = None
    ) -> dict[str, Any]:
        """Owner or admin: change the name and/or avatar (a ``group_updated`` system message is logged).
        Returns the group's info. Raises ``FlareError`` 403 for other members."""
        body = {k: v for k, v in (("name", name), ("avatar", avatar)) if v is not None}
        out: dict[str, Any] = await self.request("PATCH", f"/v1/groups/{group_id}", json=body)
        return out

    async def group_members(self, group_id: str) -> list[dict[str, Any]]:
        """The current members: ``[{user_id, role, join_seq}]``."""
        out = await self.request("GET", f"/v1/groups/{group_id}/members")
        items: list[dict[str, Any]] = out["items"]
        return items

    async def set_role(self, group_id: str, user_id: str, role: str) -> None:
        """Owner only: make ``user_id`` an ``"admin"`` or ``"member"``, or ``"owner"`` (transfers ownership;
        the old owner becomes admin). Raises ``FlareError`` 403 for anyone but the owner."""
        await self.request("PUT", f"/v1/groups/{group_id}/members/{user_id}/role", json={"role": role})

    async def add_members(self, group_id: str, user_ids: list[str]) -> list[str]:
        """Owner or admin: add users (they read history from now on). Returns those newly added (users
        already in the group are skipped). Raises ``FlareError`` 403, or 404 if a user does not exist."""
        out = await self.request("POST", f"/v1/groups/{group_id}/members", json={"user_ids": user_ids})
        added: list[str] = out["added"]
        return added

    async def remove_member(self, group_id: str, user_id: str) -> None:
        """Owner or admin: remove a member. Raises ``FlareError`` 403 if not allowed."""
        await self.request("DELETE", f"/v1/groups/{group_id}/members/{user_id}")

    async def leave_group(self, group_id: str) -> None:
        """Leave the group; an owner who leaves hands ownership to the oldest admin, else the oldest member."""
        await self.request("POST", f"/v1/groups/{group_id}/leave")

    # messages
    async def send(self, conv: str, cmid: str, body: dict[str, Any], kind: str = "text") -> dict[str, Any]:
        """Send a message as this user (bots, backends): the same send path and idempotency key (user,
        ``cmid``) as the WebSocket, so a retry with the same ``cmid`` stores it once. Not retried here.
        Returns ``{conv, seq, msg_id, ts, duplicate}``, plus ``body`` when the content filter masked it.
        All of the user's devices get the message. Errors as for ``FlareClient.send``."""
        out: dict[str, Any] = await self.request(
            "POST", f"/v1/conversations/{conv}/messages", json={"cmid": cmid, "kind": kind, "body": body}
        )
        return out

    async def history(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """A page of messages, as ``FlareClient.pull``: ``{conv, items, max_seq, min_seq, more}`` with items
        as JSON objects, ascending by seq. Raises ``FlareError`` 403, 410, 416 as ``pull`` does."""
        params = {k: v for k, v in (("after", after), ("before", before), ("limit", limit)) if v is not None}
        out: dict[str, Any] = await self.request("GET", f"/v1/conversations/{conv}/messages", params=params)
        return out

    async def revisions(self, conv: str, seq: int) -> dict[str, Any]:
        """Edit history of message ``seq``: ``{"message": ..., "revisions": [{version, body, ts}]}``, oldest
        first. Raises ``FlareError`` 410 for a recalled or deleted message (its history is deleted)."""
        out: dict[str, Any] = await self.request("GET", f"/v1/conversations/{conv}/messages/{seq}/revisions")
        return out

    async def conversations(self, since: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of the conversation list changed since list version ``since``, as ``FlareClient.sync``:
        ``{items, version, more}``; pass ``version`` as ``since`` for the next page."""
        out: dict[str, Any] = await self.request("GET", "/v1/conversations", params={"since": since, "limit": limit})
        return out
