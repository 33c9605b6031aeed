"""Notifications on a real `flare serve` (docs/push.md): the settings API and its frame, and what the push worker
records for offline and online devices when no provider is configured (every job dropped with the reason)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import NotifySettingsFrame

from .conftest import Harness

DM = "d:alice:bob"
APNS = "a1" * 32


async def history(harness: Harness, uid: str, count: int) -> list[dict[str, Any]]:
    """The user's notification history once it has ``count`` jobs (the worker runs beside the send path)."""
    for _ in range(200):
        items: list[dict[str, Any]] = (await harness.rest(uid).request("GET", "/v1/me/notifications/history"))["items"]
        if len(items) >= count:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"{uid} has {len(items)} jobs, expected {count}: {items}")


async def test_settings_are_read_changed_checked_and_pushed_to_the_users_devices(harness: Harness) -> None:
    await harness.user("bob")
    frames: list[Any] = []
    await harness.device("bob", "tablet", on_frame=frames.append)
    bob = harness.rest("bob")
    defaults = await bob.request("GET", "/v1/me/notifications")
    assert defaults == {"mode": "all", "mentions_break_mute": True, "preview": True, "quiet_start": "",
                        "quiet_end": "", "timezone": "UTC", "version": 0}  # fmt: skip
    changed = await bob.request(
        "PATCH",
        "/v1/me/notifications",
        json={
            "mode": "mentions",
            "preview": False,
            "quiet_start": "22:30",
            "quiet_end": "07:00",
            "timezone": "Asia/Tokyo",
        },
    )
    assert (changed["mode"], changed["preview"], changed["quiet_start"], changed["timezone"]) == (
        "mentions",
        False,
        "22:30",
        "Asia/Tokyo",
    )
    assert changed["version"] > 0
    assert await bob.request("GET", "/v1/me/notifications") == changed
    for _ in range(100):
        if any(isinstance(f, NotifySettingsFrame) for f in frames):
            break
        await asyncio.sleep(0.05)
    [frame] = [f for f in frames if isinstance(f, NotifySettingsFrame)]
    assert (frame.mode, frame.quiet_end, frame.version) == ("mentions", "07:00", changed["version"])
    for bad in ({"mode": "loud"}, {"quiet_start": "25:00"}, {"timezone": "Mars/Base"}, {"quiet_start": ""}):
        with pytest.raises(FlareError) as err:
            await bob.request("PATCH", "/v1/me/notifications", json=bad)
        assert err.value.code == ErrorCode.INVALID, bad
    assert await bob.request("GET", "/v1/me/notifications") == changed


async def test_jobs_of_offline_and_online_devices_with_no_provider_configured(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    await harness.rest("bob").register_push("phone", "apns", APNS)
    await harness.rest("alice").send(DM, "c1", {"text": "hi"})
    [job] = await history(harness, "bob", 1)
    assert (job["device"], job["conv"], job["seq"], job["state"], job["category"]) == ("phone", DM, 1, "dropped",
                                                                                       "message")  # fmt: skip
    assert job["reason"].startswith("provider_disabled: ")
    await harness.device("bob", "phone")  # online now: the message reaches it over its connection
    await harness.rest("alice").send(DM, "c2", {"text": "again"})
    newest = (await history(harness, "bob", 2))[0]
    assert (newest["seq"], newest["state"], newest["reason"]) == (2, "dropped", "online")
    admin = harness.admin
    stats = await admin.request("GET", "/v1/admin/push/stats", admin=True)
    assert stats["items"] == [
        {"provider": "apns", "category": "message", "sent": 0, "failed": 0, "dead": 0, "dropped": 2, "pending": 0,
         "latency_ms_p50": None, "latency_ms_p99": None}
    ]  # fmt: skip
    assert "apns" in stats["disabled_providers"]
    jobs = await admin.request("GET", "/v1/admin/push/jobs", params={"user_id": "bob"}, admin=True)
    assert [j["user_id"] for j in jobs["items"]] == ["bob", "bob"]
