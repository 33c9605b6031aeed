"""Users' notification settings (N6): what is notified (all, mentions only, none), whether an @mention breaks a
conversation's mute, preview on/off and quiet hours in the user's time zone. Changes are pushed to the user's
devices as a ``notify_settings`` frame (docs/protocol.md) and apply to the next notification the worker makes.

Two concurrent changes of one user's settings: the later write wins for the whole row (a change reads the row,
applies its fields and writes it back).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flare_im.backends.relational.notifications import MODES, NotificationStore, NotifySettings
from flare_im.protocol.errors import invalid
from flare_im.protocol.frames import NotifySettingsFrame, ServerFrame
from flare_im.services.notify_rules import format_hhmm, parse_hhmm, valid_timezone

Deliver = Callable[[list[str], ServerFrame, tuple[str, str] | None], None]  # hub / cluster: (uids, frame, skip)


def frame_of(s: NotifySettings) -> NotifySettingsFrame:
    return NotifySettingsFrame(
        mode=s.mode,
        mentions_break_mute=s.mentions_break_mute,
        preview=s.preview,
        quiet_start=format_hhmm(s.quiet_start),
        quiet_end=format_hhmm(s.quiet_end),
        timezone=s.timezone,
        version=s.version,
    )


class NotifySettingsService:
    def __init__(self, store: NotificationStore, deliver: Deliver | None = None) -> None:
        self._store = store
        self._deliver = deliver

    async def get(self, uid: str) -> NotifySettings:
        return (await self._store.notify_settings([uid])).get(uid) or NotifySettings(uid)

    async def update(
        self,
        uid: str,
        *,
        mode: str | None = None,
        mentions_break_mute: bool | None = None,
        preview: bool | None = None,
        quiet_start: str | None = None,
        quiet_end: str | None = None,
        timezone: str | None = None,
    ) -> NotifySettings:
        """Change the given fields (422 naming the first bad one); returns the settings as stored."""
        current = await self.get(uid)
        changes: dict[str, object] = {}
        if mode is not None:
            if mode not in MODES:
                raise invalid(f"mode must be one of {', '.join(MODES)}")
            changes["mode"] = mode
        if mentions_break_mute is not None:
            changes["mentions_break_mute"] = mentions_break_mute
        if preview is not None:
            changes["preview"] = preview
        if (quiet_start is None) != (quiet_end is None):
            raise invalid('quiet hours are set together: quiet_start and quiet_end ("" for both turns them off)')
        for name, value in (("quiet_start", quiet_start), ("quiet_end", quiet_end)):
            if value is not None:
                try:
                    changes[name] = parse_hhmm(value)
                except ValueError as exc:
                    raise invalid(f"{name}: {exc}") from None
        if timezone is not None:
            if not valid_timezone(timezone):
                raise invalid("timezone must be an IANA time zone name such as Europe/Paris or Asia/Shanghai")
            changes["timezone"] = timezone
        start = changes.get("quiet_start", current.quiet_start)
        end = changes.get("quiet_end", current.quiet_end)
        if (start == -1) != (end == -1):
            raise invalid('quiet hours need both quiet_start and quiet_end ("" for both turns them off)')
        version = max(time.time_ns() // 1_000_000, current.version + 1)
        updated = NotifySettings(**{**_fields(current), **changes, "version": version})  # type: ignore[arg-type]
        await self._store.put_notify_settings(updated)
        if self._deliver is not None:
            self._deliver([uid], frame_of(updated), None)
        return updated


def _fields(s: NotifySettings) -> dict[str, object]:
    return {
        "uid": s.uid,
        "mode": s.mode,
        "mentions_break_mute": s.mentions_break_mute,
        "preview": s.preview,
        "quiet_start": s.quiet_start,
        "quiet_end": s.quiet_end,
        "timezone": s.timezone,
    }
