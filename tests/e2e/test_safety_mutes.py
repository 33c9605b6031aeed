"""Group mutes (U2) against a real server: the permission matrix, refusals that store nothing, mute-all with
admins still sending, and a mute that ends at its time."""

from __future__ import annotations

import asyncio
import time

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness


def ms() -> int:
    return time.time_ns() // 1_000_000


async def test_mute_permission_matrix_and_refused_sends_store_nothing(harness: Harness) -> None:
    for u in ("owner", "admin", "admin2", "member", "other", "outsider"):
        await harness.user(u)
    group = await harness.rest("owner").create_group("g", ["admin", "admin2", "member", "other"])
    gid, conv = group["group_id"], group["conv"]
    await harness.rest("owner").set_role(gid, "admin", "admin")
    await harness.rest("owner").set_role(gid, "admin2", "admin")
    path = f"/v1/groups/{gid}/mutes"

    # Who may mute whom: a member nobody, an admin members only, the owner admins too; nobody the owner.
    refusals = [
        ("member", "other", ErrorCode.FORBIDDEN),
        ("outsider", "member", ErrorCode.FORBIDDEN),
        ("admin", "admin2", ErrorCode.FORBIDDEN),
        ("admin", "owner", ErrorCode.FORBIDDEN),
        ("owner", "owner", ErrorCode.FORBIDDEN),
        ("owner", "outsider", ErrorCode.NOT_FOUND),
    ]
    for actor, target, code in refusals:
        with pytest.raises(FlareError) as err:
            await harness.rest(actor).request("PUT", f"{path}/{target}", json={})
        assert err.value.code == code, (actor, target)
    with pytest.raises(FlareError) as err:  # no time at all
        await harness.rest("admin").request("PUT", f"{path}/member", json={"duration_s": 0})
    assert err.value.code == ErrorCode.INVALID
    assert (await harness.rest("member").request("GET", path))["items"] == []

    muted = await harness.rest("admin").request("PUT", f"{path}/member", json={"duration_s": 3600})
    assert abs(muted["until"] - (ms() + 3_600_000)) < 60_000
    assert muted["user_id"] == "member"
    assert muted["actor"] == "admin"
    owner_mutes_admin = await harness.rest("owner").request("PUT", f"{path}/admin2", json={})
    assert owner_mutes_admin["until"] == 0  # until lifted

    before = await harness.rest("owner").history(conv)
    member = await harness.device("member")
    with pytest.raises(FlareError) as err:
        await member.send(conv, "let me speak")
    assert err.value.code == ErrorCode.FORBIDDEN
    assert err.value.detail == {"reason": "muted", "until": muted["until"]}
    with pytest.raises(FlareError) as err:
        await harness.rest("admin2").send(conv, "c1", {"text": "me neither"})
    assert err.value.detail is not None
    assert err.value.detail["reason"] == "muted"
    # Nothing stored: the history is what it was.
    assert await harness.rest("owner").history(conv) == before
    assert (await harness.rest("other").send(conv, "c2", {"text": "others still talk"}))["seq"] > 0

    await harness.rest("admin").request("DELETE", f"{path}/member")
    assert (await member.send(conv, "thanks")).seq > 0
    with pytest.raises(FlareError) as err:
        await harness.rest("admin").request("DELETE", f"{path}/member")  # nothing left to lift
    assert err.value.code == ErrorCode.NOT_FOUND
    events = [m["body"].get("event") for m in (await harness.rest("owner").history(conv))["items"]]
    assert "member_muted" in events
    assert "member_unmuted" in events


async def test_mute_all_lets_admins_send_and_a_mute_ends_at_its_time(harness: Harness) -> None:
    for u in ("owner", "admin", "member"):
        await harness.user(u)
    group = await harness.rest("owner").create_group("g", ["admin", "member"])
    gid, conv = group["group_id"], group["conv"]
    await harness.rest("owner").set_role(gid, "admin", "admin")
    with pytest.raises(FlareError) as err:
        await harness.rest("member").request("PUT", f"/v1/groups/{gid}/mute-all", json={})
    assert err.value.code == ErrorCode.FORBIDDEN

    mute = await harness.rest("admin").request("PUT", f"/v1/groups/{gid}/mute-all", json={"duration_s": 2})
    until = mute["until"]
    member = await harness.device("member")
    with pytest.raises(FlareError) as err:
        await member.send(conv, "hello?")
    assert err.value.detail == {"reason": "muted_all", "until": until}
    assert (await harness.rest("admin").send(conv, "a1", {"text": "admins may"}))["seq"] > 0
    assert (await harness.rest("owner").send(conv, "o1", {"text": "owner too"}))["seq"] > 0
    # The mute ends at its time: no one lifts it.
    await asyncio.sleep(max(0.0, (until - ms()) / 1000) + 0.05)
    assert (await member.send(conv, "free again")).seq > 0
    assert (await harness.rest("member").request("GET", f"/v1/groups/{gid}/mutes"))["items"] == []
