"""REST routes of notifications (docs/push.md): a user's settings and what was sent to its devices; for admins,
statistics per provider and category, the jobs of one user or device, and the dead letters."""

from __future__ import annotations

import time
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from flare_im.api.openapi import reply
from flare_im.backends.relational.notifications import DEAD, DROPPED, FAILED, MODES, SENT, NotificationStore, PushJob
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.notify_rules import format_hhmm
from flare_im.services.notify_settings import NotifySettingsService

if TYPE_CHECKING:
    from flare_im.api.http import ApiContext
    from flare_im.backends.relational.notifications import NotifySettings

MAX_OUTCOMES = 1_000_000  # jobs a stats query reads at most


@dataclass(slots=True)
class NotificationsApi:
    settings: NotifySettingsService
    jobs: NotificationStore
    disabled: Mapping[str, str] = field(default_factory=dict)  # provider -> why it is disabled
    vapid_public_key: str = ""  # the Web Push application server key ('' when Web Push is disabled)


# Enums of the fields, null (no change) included.
_MODES: Any = [*MODES, None]
_TIMEZONES: Any = [*sorted(zoneinfo.available_timezones()), None]
_HHMM = "^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
# Quiet hours are both set or both off: neither given, both "" (off), or both a time.
_QUIET_HOURS: dict[str, Any] = {
    "anyOf": [
        {"properties": {"quiet_start": {"type": "null"}, "quiet_end": {"type": "null"}}},
        {
            "properties": {"quiet_start": {"const": ""}, "quiet_end": {"const": ""}},
            "required": ["quiet_start", "quiet_end"],
        },
        {
            # "type": a pattern alone lets null through
            "properties": {
                "quiet_start": {"type": "string", "pattern": _HHMM},
                "quiet_end": {"type": "string", "pattern": _HHMM},
            },
            "required": ["quiet_start", "quiet_end"],
        },
    ]
}


class NotifySettingsBody(BaseModel):
    """Quiet hours are set together: ``quiet_start`` and ``quiet_end`` both times, or both ``""`` (off)."""

    model_config = ConfigDict(json_schema_extra=_QUIET_HOURS)
    mode: str | None = Field(default=None, description="all | mentions | none", json_schema_extra={"enum": _MODES})
    mentions_break_mute: StrictBool | None = None
    preview: StrictBool | None = Field(default=None, description='false: "New message", without sender or content')
    quiet_start: str | None = Field(
        default=None,
        max_length=5,
        description='"HH:MM" in timezone, "" for none',
        json_schema_extra={"pattern": "^(?:(?:[01][0-9]|2[0-3]):[0-5][0-9])?$"},
    )
    quiet_end: str | None = Field(
        default=None, max_length=5, json_schema_extra={"pattern": "^(?:(?:[01][0-9]|2[0-3]):[0-5][0-9])?$"}
    )
    timezone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA name, e.g. Asia/Shanghai",
        json_schema_extra={"enum": _TIMEZONES},
    )


class NotifySettingsReply(BaseModel):
    mode: Literal["all", "mentions", "none"]
    mentions_break_mute: bool
    preview: bool
    quiet_start: str
    quiet_end: str
    timezone: str
    version: int


class VapidKey(BaseModel):
    public_key: str


class PushJobEntry(BaseModel):
    job_id: str
    device: str
    provider: str
    category: str
    conv: str
    seq: int
    state: str
    reason: str
    tries: int
    created_at: int
    updated_at: int
    title: str
    body: str
    badge: int | None
    latency_ms: int = Field(default=0, description="left out until sent")
    next_at: int = Field(default=0, description="left out unless a retry is due")
    user_id: str = Field(default="", description="admin only")
    payload: dict[str, Any] = Field(default_factory=dict, description="admin only")


class PushJobs(BaseModel):
    items: list[PushJobEntry]


class PushStatsRow(BaseModel):
    provider: str
    category: str
    sent: int
    failed: int
    dead: int
    dropped: int
    pending: int
    latency_ms_p50: int | None
    latency_ms_p99: int | None


class PushStats(BaseModel):
    since: int
    until: int
    items: list[PushStatsRow]
    truncated: bool
    disabled_providers: dict[str, str]


_MAX_MS = 2**62  # bound of an epoch-ms query parameter: a stored INTEGER (int64) with room for the arithmetic on it
_OFF = (ErrorCode.UNAVAILABLE, "notifications are off on this server (push_enabled)")


def settings_json(s: NotifySettings) -> dict[str, Any]:
    return {
        "mode": s.mode,
        "mentions_break_mute": s.mentions_break_mute,
        "preview": s.preview,
        "quiet_start": format_hhmm(s.quiet_start),
        "quiet_end": format_hhmm(s.quiet_end),
        "timezone": s.timezone,
        "version": s.version,
    }


def job_json(j: PushJob, *, admin: bool = False) -> dict[str, Any]:
    payload = msgspec.json.decode(j.payload) if j.payload else {}
    out: dict[str, Any] = {
        "job_id": j.job_id,
        "device": j.device,
        "provider": j.provider,
        "category": j.category,
        "conv": j.conv,
        "seq": j.seq,
        "state": j.state,
        "reason": j.reason,
        "tries": j.tries,
        "created_at": j.created_at,
        "updated_at": j.updated_at,
        "title": payload.get("title", ""),
        "body": payload.get("body", ""),
        "badge": payload.get("badge"),
    }
    if j.latency_ms >= 0:
        out["latency_ms"] = j.latency_ms
    if j.next_at:
        out["next_at"] = j.next_at
    if admin:
        out["user_id"] = j.uid
        out["payload"] = payload
    return out


def _percentile(sorted_values: list[int], q: float) -> int | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def stats_of(outcomes: list[tuple[str, str, str, int]]) -> list[dict[str, Any]]:
    """Per (provider, category): jobs by state, and the latency of the sent ones (p50, p99, ms)."""
    groups: dict[tuple[str, str], tuple[dict[str, int], list[int]]] = {}
    for provider, category, state, latency in outcomes:
        counts, latencies = groups.setdefault((provider, category), ({}, []))
        counts[state] = counts.get(state, 0) + 1
        if state == SENT and latency >= 0:
            latencies.append(latency)
    rows = []
    for (provider, category), (counts, latencies) in sorted(groups.items()):
        latencies.sort()
        rows.append(
            {
                "provider": provider,
                "category": category,
                "sent": counts.get(SENT, 0),
                "failed": counts.get(FAILED, 0),
                "dead": counts.get(DEAD, 0),
                "dropped": counts.get(DROPPED, 0),
                "pending": sum(n for s, n in counts.items() if s not in (SENT, FAILED, DEAD, DROPPED)),
                "latency_ms_p50": _percentile(latencies, 0.50),
                "latency_ms_p99": _percentile(latencies, 0.99),
            }
        )
    return rows


def install_notification_routes(app: FastAPI, ctx: ApiContext, user: Any, admin: Any) -> None:
    """Adds the routes; ``user`` is the dependency that yields the caller's user id, ``admin`` the admin key's.
    With ``push_enabled`` off (``ctx.notifications`` None) they answer 503."""
    caller = Depends(user)

    class _Api:
        def __getattr__(self, name: str) -> Any:
            found = ctx.notifications
            if found is None:
                raise FlareError(ErrorCode.UNAVAILABLE, "notifications are off on this server (push_enabled)")
            return getattr(found, name)

    api: Any = _Api()

    @app.get("/v1/me/notifications", tags=["notifications"], **reply(NotifySettingsReply, _OFF))
    async def my_notification_settings(uid: str = caller) -> dict[str, Any]:
        """The user's notification settings (defaults until changed)."""
        return settings_json(await api.settings.get(uid))

    @app.patch("/v1/me/notifications", tags=["notifications"], **reply(NotifySettingsReply, _OFF))
    async def update_notification_settings(body: NotifySettingsBody, uid: str = caller) -> dict[str, Any]:
        """Change some of the settings; every device of the user gets a ``notify_settings`` frame."""
        changes = body.model_dump(exclude_none=True)
        return settings_json(await api.settings.update(uid, **changes))

    @app.get(
        "/v1/push/vapid",
        tags=["notifications"],
        **reply(VapidKey, (ErrorCode.NOT_FOUND, "Web Push is not configured on this server"), _OFF),
    )
    async def vapid_public_key() -> dict[str, str]:
        """The VAPID public key (base64url, uncompressed P-256 point) a web app subscribes with:
        ``pushManager.subscribe({userVisibleOnly: true, applicationServerKey: public_key})``. No credentials
        needed: the key is public. 404 when Web Push is not configured on this server."""
        if not api.vapid_public_key:
            why = api.disabled.get("webpush", "not configured")
            raise FlareError(ErrorCode.NOT_FOUND, f"Web Push is disabled on this server: {why}")
        return {"public_key": api.vapid_public_key}

    @app.get("/v1/me/notifications/history", tags=["notifications"], **reply(PushJobs, _OFF))
    async def my_notification_history(
        uid: str = caller,
        device: Annotated[str, Query(max_length=64)] = "",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """What the notification service did for the user's devices (sent, dropped and why, failed …), newest
        first, for as long as jobs are kept (push_history_days)."""
        return {"items": [job_json(j) for j in await api.jobs.push_jobs(uid, device=device, limit=limit)]}

    @app.get("/v1/admin/push/stats", tags=["admin"], dependencies=[Depends(admin)], **reply(PushStats, _OFF))
    async def push_stats(
        since: Annotated[int | None, Query(ge=0, le=_MAX_MS, description="epoch ms (default: an hour ago)")] = None,
        until: Annotated[int | None, Query(ge=0, le=_MAX_MS, description="epoch ms (default: now)")] = None,
    ) -> dict[str, Any]:
        """Jobs per provider and category updated in [since, until): sent, failed, dead, dropped, pending, and the
        latency of the sent ones from the event to the provider's acceptance (p50, p99)."""
        now = time.time_ns() // 1_000_000
        end = until if until is not None else now + 1
        start = since if since is not None else end - 3_600_000
        outcomes = await api.jobs.push_job_outcomes(start, end, MAX_OUTCOMES)
        return {
            "since": start,
            "until": end,
            "items": stats_of(outcomes),
            "truncated": len(outcomes) >= MAX_OUTCOMES,
            "disabled_providers": dict(api.disabled),
        }

    @app.get("/v1/admin/push/jobs", tags=["admin"], dependencies=[Depends(admin)], **reply(PushJobs, _OFF))
    async def push_jobs(
        user_id: Annotated[str, Query(max_length=64)] = "",
        device: Annotated[str, Query(max_length=64)] = "",
        state: Annotated[str, Query(max_length=16, description="e.g. dead: the dead letters")] = "",
        since: Annotated[int, Query(ge=0, le=_MAX_MS)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Recent jobs, newest first, of one user (and device), or of everyone; ``state=dead`` lists the dead
        letters with the payload that was to be sent."""
        found = await api.jobs.push_jobs(user_id, device=device, state=state, since=since, limit=limit)
        return {"items": [job_json(j, admin=True) for j in found]}
