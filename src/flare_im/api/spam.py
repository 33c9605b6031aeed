"""Admin REST routes of the anti-spam (services/spam.py): link rules, the decisions with their reasons, and the
automatic mutes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field

from flare_im.api.openapi import reply
from flare_im.api.schemas import UserPath
from flare_im.backends.safety.base import ALLOW, DENY
from flare_im.identity import check_id
from flare_im.protocol.errors import ErrorCode, FlareError, invalid

if TYPE_CHECKING:
    from flare_im.api.safety import SafetyApi

PREFIX = "/v1/admin/moderation/spam"
MAX_ID = 2**62
_DOMAIN_PATTERN = r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
DomainPath = Annotated[
    str,
    Path(
        max_length=253,
        description="a domain, e.g. example.com (covers its subdomains)",
        json_schema_extra={"pattern": _DOMAIN_PATTERN},
    ),
]


class DomainRuleBody(BaseModel):
    policy: Literal["allow", "deny"]


class DomainRule(BaseModel):
    domain: str
    policy: str


class DomainRules(BaseModel):
    items: list[DomainRule]


class Decision(BaseModel):
    decision_id: int
    user_id: str
    rule: str = Field(description="duplicate | link | mentions | new_account, or mute")
    action: str = Field(description="refused (a send) | mute (an automatic mute) | lift (an administrator's)")
    reason: str
    conv: str = ""
    created_at: int


class Decisions(BaseModel):
    items: list[Decision]


class SpamMute(BaseModel):
    user_id: str
    until: int


class SpamMutes(BaseModel):
    items: list[SpamMute]


def _domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if not re.match(_DOMAIN_PATTERN, domain):
        raise invalid("not a domain name (like example.com)")
    return domain


def install_spam_routes(app: FastAPI, api: Callable[[], SafetyApi], admin: Any) -> None:
    guarded = [Depends(admin)]

    @app.get(f"{PREFIX}/domains", tags=["admin"], dependencies=guarded, **reply(DomainRules))
    async def domain_rules() -> dict[str, Any]:
        """The link rules (``spam_link_policy`` says how they apply)."""
        rules = api().spam.domain_rules()
        return {"items": [{"domain": d, "policy": p} for d, p in sorted(rules.items())]}

    @app.put(f"{PREFIX}/domains/{{domain}}", tags=["admin"], dependencies=guarded, **reply(DomainRule))
    async def set_domain_rule(domain: DomainPath, body: DomainRuleBody) -> dict[str, Any]:
        """Allow or deny links to a domain and its subdomains (every node applies it within seconds)."""
        if body.policy not in (ALLOW, DENY):
            raise invalid(f"policy must be {ALLOW} or {DENY}")
        name = _domain(domain)
        await api().spam.set_domain(name, body.policy)
        return {"domain": name, "policy": body.policy}

    @app.delete(
        f"{PREFIX}/domains/{{domain}}",
        tags=["admin"],
        status_code=204,
        dependencies=guarded,
        **reply(None, ErrorCode.NOT_FOUND),
    )
    async def delete_domain_rule(domain: DomainPath) -> None:
        if not await api().spam.set_domain(_domain(domain), None):
            raise FlareError(ErrorCode.NOT_FOUND, "no rule for this domain")

    @app.get(f"{PREFIX}/decisions", tags=["admin"], dependencies=guarded, **reply(Decisions))
    async def decisions(
        user_id: Annotated[str, Query(max_length=64)] = "",
        before: Annotated[int, Query(ge=0, le=MAX_ID, description="a decision_id: the next page")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """What the anti-spam decided, newest first: each refused send and automatic mute with its rule and reason."""
        found = await api().spam.decisions(uid=user_id, before=before, limit=limit)
        return {
            "items": [
                {"decision_id": d.decision_id, "user_id": d.uid, "rule": d.rule, "action": d.action,
                 "reason": d.reason, "conv": d.conv, "created_at": d.created_at}
                for d in found
            ]
        }  # fmt: skip

    @app.get(f"{PREFIX}/mutes", tags=["admin"], dependencies=guarded, **reply(SpamMutes))
    async def spam_mutes() -> dict[str, Any]:
        """Users the anti-spam muted everywhere, with when it ends."""
        mutes = await api().spam.mutes()
        return {"items": [{"user_id": u, "until": t} for u, t in sorted(mutes.items())]}

    @app.delete(
        f"{PREFIX}/mutes/{{user_id}}",
        tags=["admin"],
        status_code=204,
        dependencies=guarded,
        **reply(None, ErrorCode.NOT_FOUND),
    )
    async def lift_spam_mute(request: Request, user_id: UserPath) -> None:
        """Lift an automatic mute at once (recorded as a decision)."""
        principal = getattr(request.state, "admin", None)
        if not await api().spam.lift(check_id(user_id, "user id"), str(getattr(principal, "key_id", "root"))):
            raise FlareError(ErrorCode.NOT_FOUND, "this user is not muted by the anti-spam")
