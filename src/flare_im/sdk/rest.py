"""Async client for Flare's REST API (accounts, groups, history, and where to connect)."""

from __future__ import annotations

from typing import Any

import httpx

from flare_im.protocol.errors import ErrorCode, FlareError


class RestClient:
    def __init__(
        self, base_url: str, *, token: str | None = None, admin_key: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._admin_key = admin_key
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def with_token(self, token: str) -> RestClient:
        return RestClient(self.base_url, token=token, admin_key=self._admin_key)

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, admin: bool = False
    ) -> Any:
        headers: dict[str, str] = {}
        if self.token and not admin:
            headers["Authorization"] = f"Bearer {self.token}"
        if admin and self._admin_key:
            headers["X-Admin-Key"] = self._admin_key
        resp = await self._http.request(method, path, json=json, params=params, headers=headers)
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                raise FlareError(ErrorCode(err["code"]), err["message"], retryable=err["retryable"])
            except (ValueError, KeyError):
                raise FlareError(
                    ErrorCode.INTERNAL if resp.status_code >= 500 else ErrorCode.BAD_REQUEST,
                    f"HTTP {resp.status_code}: {resp.text[:200]}",
                ) from None
        return None if resp.status_code == 204 else resp.json()

    # accounts
    async def register(self, username: str, password: str, display_name: str = "") -> dict[str, Any]:
        out: dict[str, Any] = await self.request(
            "POST", "/v1/auth/register", json={"username": username, "password": password, "display_name": display_name}
        )
        self.token = out["access_token"]
        return out

    async def login(self, username: str, password: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.request(
            "POST", "/v1/auth/login", json={"username": username, "password": password}
        )
        self.token = out["access_token"]
        return out

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.request("POST", "/v1/auth/refresh", json={"refresh_token": refresh_token})
        self.token = out["access_token"]
        return out

    async def admin_create_user(self, user_id: str, display_name: str = "", avatar: str = "") -> dict[str, Any]:
        out: dict[str, Any] = await self.request(
            "POST",
            "/v1/admin/users",
            admin=True,
            json={"user_id": user_id, "display_name": display_name, "avatar": avatar},
        )
        return out

    async def admin_import_users(self, user_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = await self.request(
            "POST", "/v1/admin/users:batch", admin=True, json={"users": [{"user_id": u} for u in user_ids]}
        )
        return out

    async def admin_issue_tokens(self, user_ids: list[str], ttl_s: int | None = None) -> dict[str, str]:
        out = await self.request("POST", "/v1/admin/tokens", admin=True, json={"user_ids": user_ids, "ttl_s": ttl_s})
        tokens: dict[str, str] = out["tokens"]
        return tokens

    async def admin_issue_token(self, user_id: str, ttl_s: int | None = None) -> str:
        out = await self.request(
            "POST", f"/v1/admin/users/{user_id}/tokens", admin=True, json={"ttl_s": ttl_s} if ttl_s else None
        )
        token: str = out["access_token"]
        return token

    async def me(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.request("GET", "/v1/me")
        return out

    async def gateways(self) -> list[str]:
        out = await self.request("GET", "/v1/gateways")
        urls: list[str] = out["websocket"]
        return urls

    # devices: where push notifications reach them
    async def register_push(
        self, device: str, provider: str, token: str, *, app_id: str = "", keys: dict[str, str] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = await self.request(
            "PUT",
            f"/v1/me/devices/{device}/push",
            json={"provider": provider, "token": token, "app_id": app_id, "keys": keys},
        )
        return out

    async def unregister_push(self, device: str) -> None:
        await self.request("DELETE", f"/v1/me/devices/{device}/push")

    async def devices(self) -> list[dict[str, Any]]:
        out = await self.request("GET", "/v1/me/devices")
        items: list[dict[str, Any]] = out["items"]
        return items

    # content filter (admin)
    async def admin_add_filter_rule(
        self, pattern: str, *, match: str = "word", action: str = "block", rule_id: str | None = None
    ) -> dict[str, Any]:
        body = {"pattern": pattern, "match": match, "action": action}
        if rule_id is None:
            out: dict[str, Any] = await self.request("POST", "/v1/admin/filter/rules", admin=True, json=body)
        else:
            out = await self.request("PUT", f"/v1/admin/filter/rules/{rule_id}", admin=True, json=body)
        return out

    async def admin_delete_filter_rule(self, rule_id: str) -> None:
        await self.request("DELETE", f"/v1/admin/filter/rules/{rule_id}", admin=True)

    async def admin_filter_rules(self) -> list[dict[str, Any]]:
        out = await self.request("GET", "/v1/admin/filter/rules", admin=True)
        items: list[dict[str, Any]] = out["items"]
        return items

    # groups
    async def create_group(self, name: str, members: list[str], *, group_id: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = await self.request(
            "POST", "/v1/groups", json={"name": name, "members": members, "group_id": group_id}
        )
        return out

    async def add_members(self, group_id: str, user_ids: list[str]) -> list[str]:
        out = await self.request("POST", f"/v1/groups/{group_id}/members", json={"user_ids": user_ids})
        added: list[str] = out["added"]
        return added

    async def remove_member(self, group_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/v1/groups/{group_id}/members/{user_id}")

    async def leave_group(self, group_id: str) -> None:
        await self.request("POST", f"/v1/groups/{group_id}/leave")

    # messages
    async def send(self, conv: str, cmid: str, body: dict[str, Any], kind: str = "text") -> dict[str, Any]:
        out: dict[str, Any] = await self.request(
            "POST", f"/v1/conversations/{conv}/messages", json={"cmid": cmid, "kind": kind, "body": body}
        )
        return out

    async def history(
        self, conv: str, *, after: int | None = None, before: int | None = None, limit: int = 50
    ) -> dict[str, Any]:
        params = {k: v for k, v in (("after", after), ("before", before), ("limit", limit)) if v is not None}
        out: dict[str, Any] = await self.request("GET", f"/v1/conversations/{conv}/messages", params=params)
        return out

    async def conversations(self, since: int = 0, limit: int = 100) -> dict[str, Any]:
        out: dict[str, Any] = await self.request("GET", "/v1/conversations", params={"since": since, "limit": limit})
        return out
