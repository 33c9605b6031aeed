"""Invite links, join approval and member limits (U2) against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import JoinRequestFrame, ServerFrame

from .conftest import Harness, ServerProcess


async def members(harness: Harness, gid: str) -> list[str]:
    return sorted(m["user_id"] for m in await harness.rest("owner").group_members(gid))


async def test_join_by_invite_link_with_uses_revocation_and_refusals(harness: Harness) -> None:
    for u in ("owner", "member", "dave", "erin", "frank"):
        await harness.user(u)
    group = await harness.rest("owner").create_group("g", ["member"])
    gid, conv = group["group_id"], group["conv"]
    with pytest.raises(FlareError) as err:  # a plain member makes no links
        await harness.rest("member").request("POST", f"/v1/groups/{gid}/invites", json={})
    assert err.value.code == ErrorCode.FORBIDDEN
    link = await harness.rest("owner").request("POST", f"/v1/groups/{gid}/invites", json={"max_uses": 1})
    code = link["code"]
    preview = await harness.rest("dave").request("GET", f"/v1/invites/{code}")
    assert (preview["group_id"], preview["approval"]) == (gid, False)

    owner = await harness.device("owner")
    joined = await harness.rest("dave").request("POST", f"/v1/invites/{code}/join", json={})
    assert joined == {"state": "joined", "group_id": gid, "conv": conv}
    assert await members(harness, gid) == ["dave", "member", "owner"]
    notice = await owner.next_message(5)
    while notice.body.get("event") != "member_joined":
        notice = await owner.next_message(5)
    assert (notice.body["users"], notice.body["via"]) == (["dave"], "invite")
    # dave is a member now: he sends, and joining again counts nothing.
    assert (await harness.rest("dave").send(conv, "d1", {"text": "hi all"}))["seq"] > 0
    again = await harness.rest("dave").request("POST", f"/v1/invites/{code}/join")
    assert again["state"] == "member"
    # Used up (max_uses 1): erin is refused and nothing changes.
    with pytest.raises(FlareError) as err:
        await harness.rest("erin").request("POST", f"/v1/invites/{code}/join")
    assert err.value.code == ErrorCode.GONE
    assert await members(harness, gid) == ["dave", "member", "owner"]
    [listed] = (await harness.rest("owner").request("GET", f"/v1/groups/{gid}/invites"))["items"]
    assert (listed["uses"], listed["max_uses"]) == (1, 1)

    unlimited = await harness.rest("owner").request("POST", f"/v1/groups/{gid}/invites", json={})
    await harness.rest("owner").request("DELETE", f"/v1/groups/{gid}/invites/{unlimited['code']}")
    with pytest.raises(FlareError) as err:  # revoked
        await harness.rest("frank").request("POST", f"/v1/invites/{unlimited['code']}/join")
    assert err.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(FlareError) as err:
        await harness.rest("frank").request("POST", "/v1/invites/not-a-code/join")
    assert err.value.code == ErrorCode.NOT_FOUND
    assert await members(harness, gid) == ["dave", "member", "owner"]


async def test_join_with_approval(harness: Harness) -> None:
    for u in ("owner", "admin", "member", "dave", "erin"):
        await harness.user(u)
    group = await harness.rest("owner").create_group("g", ["admin", "member"])
    gid = group["group_id"]
    await harness.rest("owner").set_role(gid, "admin", "admin")
    frames: dict[str, list[JoinRequestFrame]] = {"admin": [], "dave": [], "erin": []}

    def collector(who: str) -> object:
        def seen(frame: ServerFrame) -> None:
            if isinstance(frame, JoinRequestFrame):
                frames[who].append(frame)

        return seen

    for who in frames:
        await harness.device(who, on_frame=collector(who))
    link = await harness.rest("admin").request("POST", f"/v1/groups/{gid}/invites", json={"approval": True})
    code = link["code"]

    asked = await harness.rest("dave").request("POST", f"/v1/invites/{code}/join", json={"note": "hi, I'm Dave"})
    assert asked["state"] == "pending"
    await harness.rest("erin").request("POST", f"/v1/invites/{code}/join")
    assert (await harness.rest("dave").request("POST", f"/v1/invites/{code}/join"))["state"] == "pending"  # once
    assert await members(harness, gid) == ["admin", "member", "owner"]  # nobody joined yet
    with pytest.raises(FlareError) as err:
        await harness.rest("member").request("GET", f"/v1/groups/{gid}/join-requests")
    assert err.value.code == ErrorCode.FORBIDDEN
    pending = (await harness.rest("admin").request("GET", f"/v1/groups/{gid}/join-requests"))["items"]
    assert [(r["user_id"], r["note"]) for r in pending] == [("dave", "hi, I'm Dave"), ("erin", "")]
    for _ in range(50):
        if len(frames["admin"]) >= 2:
            break
        await asyncio.sleep(0.05)
    assert [(f.user, f.state) for f in frames["admin"]] == [("dave", "pending"), ("erin", "pending")]
    [listed] = (await harness.rest("admin").request("GET", f"/v1/groups/{gid}/invites"))["items"]
    assert listed["uses"] == 2  # one per request, not per ask

    with pytest.raises(FlareError) as err:  # a member decides nothing
        await harness.rest("member").request("POST", f"/v1/groups/{gid}/join-requests/dave", json={"approve": True})
    assert err.value.code == ErrorCode.FORBIDDEN
    approved = await harness.rest("admin").request(
        "POST", f"/v1/groups/{gid}/join-requests/dave", json={"approve": True}
    )
    assert (approved["state"], approved["decider"]) == ("approved", "admin")
    denied = await harness.rest("owner").request(
        "POST", f"/v1/groups/{gid}/join-requests/erin", json={"approve": False}
    )
    assert denied["state"] == "denied"
    with pytest.raises(FlareError) as err:  # decided once
        await harness.rest("owner").request("POST", f"/v1/groups/{gid}/join-requests/erin", json={"approve": True})
    assert err.value.code == ErrorCode.NOT_FOUND
    assert await members(harness, gid) == ["admin", "dave", "member", "owner"]
    for _ in range(50):
        if frames["dave"] and frames["erin"]:
            break
        await asyncio.sleep(0.05)
    assert [f.state for f in frames["dave"]] == ["approved"]
    assert [f.state for f in frames["erin"]] == ["denied"]
    assert (await harness.rest("dave").send(group["conv"], "d1", {"text": "thanks"}))["seq"] > 0


@pytest.fixture
def small_groups(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", env_overrides={"FLARE_GROUP_MAX_MEMBERS": "3"})
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


async def test_member_limit_refuses_beyond_it_and_changes_nothing(small_groups: ServerProcess) -> None:
    harness = Harness(small_groups)
    try:
        for u in ("owner", "a", "b", "c", "d"):
            await harness.user(u)
        with pytest.raises(FlareError) as err:  # created over the server's limit (3)
            await harness.rest("owner").create_group("big", ["a", "b", "c"])
        assert err.value.code == ErrorCode.INVALID
        group = await harness.rest("owner").create_group("g", ["a"])
        gid = group["group_id"]
        await harness.rest("owner").add_members(gid, ["b"])  # 3: at the limit
        with pytest.raises(FlareError) as err:
            await harness.rest("owner").add_members(gid, ["c"])
        assert err.value.code == ErrorCode.INVALID
        link = await harness.rest("owner").request("POST", f"/v1/groups/{gid}/invites", json={})
        with pytest.raises(FlareError) as err:
            await harness.rest("c").request("POST", f"/v1/invites/{link['code']}/join")
        assert err.value.code == ErrorCode.INVALID
        assert err.value.detail == {"limit": 3}
        assert await members(harness, gid) == ["a", "b", "owner"]
        [listed] = (await harness.rest("owner").request("GET", f"/v1/groups/{gid}/invites"))["items"]
        assert listed["uses"] == 0  # the refused join counted nothing

        # An administrator gives this group its own, larger limit (past the server's).
        raised = await harness.admin.request(
            "PUT", f"/v1/admin/groups/{gid}/limit", json={"max_members": 4}, admin=True
        )
        assert raised["max_members"] == 4
        assert (await harness.rest("c").request("POST", f"/v1/invites/{link['code']}/join"))["state"] == "joined"
        with pytest.raises(FlareError) as err:
            await harness.rest("owner").add_members(gid, ["d"])
        assert err.value.code == ErrorCode.INVALID
        assert await members(harness, gid) == ["a", "b", "c", "owner"]
        with pytest.raises(FlareError) as err:
            await harness.admin.request("PUT", "/v1/admin/groups/nosuch/limit", json={"max_members": 4}, admin=True)
        assert err.value.code == ErrorCode.NOT_FOUND
    finally:
        await harness.close()
