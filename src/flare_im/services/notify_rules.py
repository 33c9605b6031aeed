"""Who is notified of what (N5, N6): categories, users' settings, mute, mentions and quiet hours.

Pure functions of their arguments (the time is passed in), so the rules are tested without a clock.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from functools import lru_cache
from typing import Any

from flare_im.backends.relational.notifications import NotifySettings
from flare_im.services.message_kinds import SYSTEM, is_content

MESSAGE, MENTION, CALL, SYSTEM_CATEGORY, BADGE = "message", "mention", "call", "system", "badge"
# Group events that concern the users they name: being added to or removed from a group.
PERSONAL_EVENTS = frozenset({"group_created", "members_added", "member_removed"})
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def category(kind: str, body: dict[str, Any], uid: str, sender: str) -> str:
    """The category of ``uid``'s notification of a message, "" when it notifies nobody of anything (an edit, a
    reaction, a group change that does not concern ``uid``). A call is a custom message whose ``data.type`` is
    "call"; a mention names ``uid`` or "all" in ``body.mentions``."""
    if uid == sender:
        return ""
    if kind == SYSTEM:
        users = body.get("users")
        if body.get("event") in PERSONAL_EVENTS and isinstance(users, list) and uid in users:
            return SYSTEM_CATEGORY
        return ""
    if not is_content(kind):
        return ""
    data = body.get("data")
    if kind == "custom" and isinstance(data, dict) and data.get("type") == "call":
        return CALL
    mentions = body.get("mentions")
    if isinstance(mentions, list) and (uid in mentions or "all" in mentions):
        return MENTION
    return MESSAGE


def mentions_user(body: dict[str, Any], uid: str) -> bool:
    """The message names ``uid`` itself (not only "all")."""
    mentions = body.get("mentions")
    return isinstance(mentions, list) and uid in mentions


def drop_reason(settings: NotifySettings, cat: str, *, muted: bool, mentioned: bool, now_s: float) -> str:
    """Why ``settings``' user gets no notification of category ``cat``, or "" when it gets one. ``muted``: the
    conversation is muted by the user; ``mentioned``: the message names the user itself."""
    if settings.mode == "none":
        return "notifications_off"
    if settings.mode == "mentions" and cat not in (MENTION, CALL, SYSTEM_CATEGORY):
        return "mentions_only"
    if muted and cat != CALL and not (cat == MENTION and mentioned and settings.mentions_break_mute):
        return "muted"
    if cat != CALL and in_quiet_hours(settings, now_s):
        return "quiet_hours"
    return ""


def in_quiet_hours(settings: NotifySettings, now_s: float) -> bool:
    start, end = settings.quiet_start, settings.quiet_end
    if start < 0 or end < 0 or start == end:
        return False
    local = dt.datetime.fromtimestamp(now_s, _zone(settings.timezone))
    minute = local.hour * 60 + local.minute
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # across midnight


@lru_cache(maxsize=512)
def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def valid_timezone(name: str) -> bool:
    if not name or len(name) > 64:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_hhmm(value: str) -> int:
    """``"22:30"`` -> 1350 minutes; "" -> -1 (none); ValueError otherwise."""
    if value == "":
        return -1
    match = _HHMM.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a time HH:MM (00:00-23:59)")
    return int(match[1]) * 60 + int(match[2])


def format_hhmm(minutes: int) -> str:
    return "" if minutes < 0 else f"{minutes // 60:02d}:{minutes % 60:02d}"
