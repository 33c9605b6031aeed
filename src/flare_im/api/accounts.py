"""REST routes of sessions and invites (logout, revoking a user's tokens, invites), the client address of a
request, and the ``Retry-After`` header of a 429/503 that says when to retry (services/abuse.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field, StrictBool

from flare_im.api import schemas as shapes
from flare_im.api.openapi import BEARER, reply
from flare_im.api.schemas import UserPath
from flare_im.backends.relational.base import Invite
from flare_im.netlimits import Network
from flare_im.protocol.errors import ErrorCode, unauthorized
from flare_im.services.abuse import RetryLater, client_ip

if TYPE_CHECKING:
    from flare_im.api.http import ApiContext


class LogoutBody(BaseModel):
    everywhere: StrictBool = Field(default=False, description="revoke every token of the user, on every device")


class InviteBody(BaseModel):
    max_uses: int = Field(default=1, ge=1, le=100_000, description="registrations the invite allows")
    ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=365 * 24 * 3600, description="seconds until it expires")
    note: str = shapes.text(256, default="")


def request_ip(request: Request, trusted: tuple[Network, ...]) -> str:
    """The client address of ``request`` (``X-Forwarded-For`` only from a trusted proxy)."""
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for"), trusted)


def _bearer(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials.strip():
        raise unauthorized("missing Authorization: Bearer <access token>")
    return credentials.credentials.strip()


def _invite(i: Invite, token: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"invite_id": i.invite_id}
    if token is not None:
        out["token"] = token
    return out | {
        "max_uses": i.max_uses,
        "uses": i.uses,
        "expires_at": i.expires_at,
        "created_at": i.created_at,
        "note": i.note,
    }


def install_account_routes(app: FastAPI, ctx: ApiContext, admin: Any) -> None:
    """Adds logout, token revocation and invites to ``app``; ``admin`` is the admin-key dependency."""

    @app.exception_handler(RetryLater)
    async def on_retry_later(_: Request, exc: RetryLater) -> JSONResponse:
        error = {"code": int(exc.code), "name": exc.code.name.lower(), "message": exc.message, "retryable": True}
        return JSONResponse(
            {"error": error | {"detail": exc.detail}},
            status_code=int(exc.code),
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.post("/v1/auth/logout", tags=["accounts"], status_code=204)
    async def logout(
        authorization: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)], body: LogoutBody | None = None
    ) -> None:
        """Revoke the session of the presented access token: its refresh tokens and every access token issued in
        it (this one included). ``{everywhere: true}``: every token of the user, all sessions and devices."""
        token = _bearer(authorization)
        if body is not None and body.everywhere:
            await ctx.auth.revoke_all(await ctx.auth.authenticate(token))
        else:
            await ctx.auth.logout(token)

    @app.post(
        "/v1/admin/users/{user_id}/revoke",
        tags=["admin"],
        status_code=204,
        dependencies=[Depends(admin)],
        **reply(None, ErrorCode.NOT_FOUND),
    )
    async def admin_revoke_tokens(user_id: UserPath) -> None:
        """Revoke every token of a user (refresh and access, all sessions): e.g. a compromised account. Its
        connected devices are closed (4012)."""
        if ctx.admin is not None:
            await ctx.admin.users.revoke(user_id)
        else:
            await ctx.users.revoke_tokens_by_admin(user_id)

    @app.post(
        "/v1/admin/invites", tags=["admin"], status_code=201, dependencies=[Depends(admin)], **reply(shapes.Invite)
    )
    async def create_invite(body: InviteBody | None = None) -> dict[str, Any]:
        """A registration invite (for ``registration = invite``). The ``token`` is in this reply only."""
        b = body or InviteBody()
        invite, token = await ctx.users.create_invite(max_uses=b.max_uses, ttl_s=b.ttl_s, note=b.note)
        return _invite(invite, token)

    @app.get("/v1/admin/invites", tags=["admin"], dependencies=[Depends(admin)], **reply(shapes.Invites))
    async def list_invites() -> dict[str, Any]:
        return {"items": [_invite(i) for i in await ctx.users.invites()]}

    @app.delete("/v1/admin/invites/{invite_id}", tags=["admin"], status_code=204, dependencies=[Depends(admin)])
    async def delete_invite(invite_id: str) -> None:
        await ctx.users.delete_invite(invite_id)
