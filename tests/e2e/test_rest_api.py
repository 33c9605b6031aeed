"""The REST API gateway: accounts, tokens, admin integration, profiles, groups, history, service endpoints."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.sdk.client import FlareClient
from flare_im.sdk.rest import RestClient

from .conftest import Harness, ServerProcess
from .witness import Witness


async def test_register_login_refresh_and_profile(server: ServerProcess) -> None:
    async with RestClient(server.api_url) as rest:
        reg = await rest.register("carol", "correct horse", display_name="Carol")
        assert reg["user_id"] == "carol"
        assert reg["token_type"] == "Bearer"
        me = await rest.me()
        assert (me["user_id"], me["display_name"], me["username"]) == ("carol", "Carol", "carol")

        with pytest.raises(FlareError) as err:
            await rest.register("carol", "another password")
        assert err.value.code == ErrorCode.CONFLICT
        with pytest.raises(FlareError) as err:
            await rest.register("dave", "short")
        assert err.value.code == ErrorCode.INVALID
        with pytest.raises(FlareError) as err:
            await rest.login("carol", "wrong password")
        assert err.value.code == ErrorCode.UNAUTHORIZED
        with pytest.raises(FlareError) as err:
            await rest.login("nobody", "whatever123")
        assert err.value.code == ErrorCode.UNAUTHORIZED

        login = await rest.login("carol", "correct horse")
        refreshed = await rest.refresh(login["refresh_token"])
        assert refreshed["access_token"]
        assert refreshed["refresh_token"] != login["refresh_token"]
        with pytest.raises(FlareError) as err:  # refresh tokens are single-use
            await rest.refresh(login["refresh_token"])
        assert err.value.code == ErrorCode.UNAUTHORIZED
        with pytest.raises(FlareError) as err:  # and the reuse revoked the session, refreshed tokens included
            await rest.me()
        assert err.value.code == ErrorCode.UNAUTHORIZED
        relogin = await rest.login("carol", "correct horse")

        updated = await rest.request("PATCH", "/v1/me", json={"display_name": "Carol C.", "avatar": "https://a/b.png"})
        assert (updated["display_name"], updated["avatar"]) == ("Carol C.", "https://a/b.png")

        # The token from login works on the WebSocket too.
        client = FlareClient(server.ws_url, relogin["access_token"], "web")
        ok = await client.connect()
        assert ok.user == "carol"
        await client.close()


async def test_admin_api_requires_the_key(server: ServerProcess) -> None:
    async with RestClient(server.api_url, admin_key="wrong") as bad:
        with pytest.raises(FlareError) as err:
            await bad.admin_create_user("eve")
        assert err.value.code == ErrorCode.UNAUTHORIZED
    async with RestClient(server.api_url) as none:
        with pytest.raises(FlareError) as err:
            await none.admin_create_user("eve")
        assert err.value.code == ErrorCode.UNAUTHORIZED
    async with RestClient(server.api_url, admin_key=server.admin_key) as admin:
        created = await admin.admin_create_user("eve", display_name="Eve")
        assert created["user_id"] == "eve"
        with pytest.raises(FlareError) as err:
            await admin.admin_create_user("eve")
        assert err.value.code == ErrorCode.CONFLICT
        with pytest.raises(FlareError) as err:
            await admin.admin_create_user("bad id!")
        assert err.value.code == ErrorCode.INVALID
        with pytest.raises(FlareError) as err:
            await admin.admin_issue_token("ghost")
        assert err.value.code == ErrorCode.NOT_FOUND
        token = await admin.admin_issue_token("eve", ttl_s=600)
    async with RestClient(server.api_url, token=token) as eve:
        assert (await eve.me())["display_name"] == "Eve"
        with pytest.raises(FlareError) as err:  # admin-created users have no password to log in with
            await eve.login("eve", "anything-at-all")
        assert err.value.code == ErrorCode.UNAUTHORIZED


async def test_admin_batch_import_and_tokens(server: ServerProcess) -> None:
    async with RestClient(server.api_url, admin_key=server.admin_key) as admin:
        await admin.admin_create_user("b0")
        out = await admin.admin_import_users(["b0", "b1", "b2"])
        assert (sorted(out["created"]), out["existing"]) == (["b1", "b2"], ["b0"])
        with pytest.raises(FlareError) as err:  # one invalid id fails the whole request, nothing created
            await admin.admin_import_users(["b3", "not valid"])
        assert err.value.code == ErrorCode.INVALID
        with pytest.raises(FlareError) as err:
            await admin.admin_issue_tokens(["b3"])
        assert err.value.code == ErrorCode.NOT_FOUND
        tokens = await admin.admin_issue_tokens(["b1", "b2"], ttl_s=600)
    assert sorted(tokens) == ["b1", "b2"]
    client = FlareClient(server.ws_url, tokens["b2"], "d")
    assert (await client.connect()).user == "b2"
    await client.close()


async def test_profiles_groups_and_history(harness: Harness) -> None:
    for u in ("owner", "adm", "mem", "other"):
        await harness.user(u)
    owner, adm, mem = harness.rest("owner"), harness.rest("adm"), harness.rest("mem")
    profiles = await owner.request("GET", "/v1/users", params={"ids": "adm,mem,ghost"})
    assert sorted(p["user_id"] for p in profiles["items"]) == ["adm", "mem"]

    group = await owner.create_group("Team", ["adm", "mem"], group_id="team")
    assert (group["group_id"], group["conv"], group["owner"], group["member_count"]) == ("team", "g:team", "owner", 3)
    with pytest.raises(FlareError) as err:
        await owner.create_group("Again", [], group_id="team")
    assert err.value.code == ErrorCode.CONFLICT
    with pytest.raises(FlareError) as err:
        await owner.create_group("Ghosts", ["ghost"])
    assert err.value.code == ErrorCode.NOT_FOUND

    await owner.request("PUT", "/v1/groups/team/members/adm/role", json={"role": "admin"})
    # Refused changes change nothing: no notice in the log, no push, every list as it was.
    team = await Witness.open(harness, "g:team", ["adm", "owner", "mem"], others=["other"])
    only_owner = adm.request("PUT", "/v1/groups/team/members/mem/role", json={"role": "admin"})
    await team.refused(ErrorCode.FORBIDDEN, only_owner)  # only the owner sets roles
    await team.refused(ErrorCode.FORBIDDEN, mem.add_members("team", ["other"]))  # members cannot add
    await team.refused(ErrorCode.FORBIDDEN, mem.update_group("team", name="mine"))  # nor rename
    await team.refused(ErrorCode.FORBIDDEN, mem.remove_member("team", "adm"))  # nor remove
    await team.refused(ErrorCode.NOT_FOUND, adm.add_members("team", ["ghost"]))
    assert await adm.add_members("team", ["other", "mem"]) == ["other"]
    renamed = await adm.request("PATCH", "/v1/groups/team", json={"name": "Team 2"})
    assert renamed["name"] == "Team 2"
    assert renamed["member_count"] == 4

    members = await mem.request("GET", "/v1/groups/team/members")
    assert {m["user_id"]: m["role"] for m in members["items"]} == {
        "owner": "owner",
        "adm": "admin",
        "mem": "member",
        "other": "member",
    }

    await team.barrier(skip_earlier=True)  # past the pushes of the changes above
    await team.refused(ErrorCode.FORBIDDEN, adm.remove_member("team", "owner"))  # an admin cannot remove the owner
    await adm.remove_member("team", "other")
    await team.barrier(skip_earlier=True)
    await team.refused(ErrorCode.FORBIDDEN, harness.rest("other").history("g:team"))
    await team.refused(ErrorCode.FORBIDDEN, harness.rest("other").send("g:team", "c-back", {"text": "let me back"}))

    await owner.leave_group("team")  # ownership passes to the admin
    members = await mem.request("GET", "/v1/groups/team/members")
    assert {m["user_id"]: m["role"] for m in members["items"]} == {"adm": "owner", "mem": "member"}

    sent = [await mem.send("g:team", f"c{i}", {"text": f"t{i}"}) for i in range(5)]
    page = await adm.history("g:team", after=sent[0]["seq"], limit=2)
    assert [m["seq"] for m in page["items"]] == [sent[1]["seq"], sent[2]["seq"]]
    assert page["more"]
    newest = await adm.history("g:team", limit=2)
    assert [m["seq"] for m in newest["items"]] == [sent[3]["seq"], sent[4]["seq"]]
    events = [m["body"].get("event") for m in (await adm.history("g:team", limit=500))["items"]]
    assert events[:1] == ["group_created"]
    assert "role_changed" in events
    assert "member_left" in events

    convs = await adm.conversations()
    [entry] = [c for c in convs["items"] if c["conv"] == "g:team"]
    # unread: 5 messages + the 2 notices of the old owner leaving
    assert (entry["name"], entry["role"], entry["member_count"], entry["unread"]) == ("Team 2", "owner", 2, 7)
    left = await owner.conversations()
    [gone] = [c for c in left["items"] if c["conv"] == "g:team"]
    assert gone["left"] is True
    assert gone.get("unread", 0) == 0
    assert "last" not in gone

    await adm.request("POST", "/v1/conversations/g:team/read", json={"seq": sent[-1]["seq"]})
    [entry] = [c for c in (await adm.conversations())["items"] if c["conv"] == "g:team"]
    assert entry["unread"] == 0


async def test_service_endpoints_and_error_shape(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.api_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        gateways = (await http.get("/v1/gateways")).json()
        assert gateways["websocket"] == [server.ws_url]
        spec = (await http.get("/openapi.json")).json()
        assert "/v1/conversations/{conv}/messages" in spec["paths"]
        resp = await http.get("/v1/me")
        assert resp.status_code == 401
        assert resp.json()["error"] == {
            "code": 401,
            "name": "unauthorized",
            "retryable": False,
            "message": "missing Authorization: Bearer <access token>",
        }
        resp = await http.post("/v1/auth/login", content=b"{nope", headers={"content-type": "application/json"})
        assert resp.status_code == 400
        assert resp.json()["error"]["name"] == "bad_request"
        resp = await http.post("/v1/auth/login", json={"username": 5})
        assert resp.status_code == 422


@pytest.mark.parametrize("how", ["removed", "left"])
async def test_the_notice_of_a_departure_comes_after_it_is_recorded(harness: Harness, how: str) -> None:
    """A client that syncs the moment the member_removed/member_left notice reaches it finds itself gone (the
    notice used to be stored before the removal, and a quick client still read itself as a member)."""
    for uid in ("boss", "leaver"):
        await harness.user(uid)
    await harness.rest("boss").create_group("exit", ["leaver"], group_id="exit")
    leaver = await harness.device("leaver")
    await leaver.catch_up()  # holds the group's history so far: the notice is next in order
    seen: list[tuple[str, bool]] = []

    async def on_notice() -> None:
        message = await leaver.next_message()
        while message.body.get("event") not in ("member_removed", "member_left"):
            message = await leaver.next_message()
        # at once, before anything else: the list and the REST view both say it is over
        [entry] = [c for c in await leaver.sync(since=0) if c.conv == "g:exit"]
        seen.append((str(message.body["event"]), entry.left))

    watcher = asyncio.create_task(on_notice())
    if how == "removed":
        await harness.rest("boss").remove_member("exit", "leaver")
    else:
        await harness.rest("leaver").leave_group("exit")
    await asyncio.wait_for(watcher, 10)
    assert seen == [("member_removed" if how == "removed" else "member_left", True)]
    with pytest.raises(FlareError) as refused:
        await harness.rest("leaver").history("g:exit")
    assert refused.value.code == ErrorCode.FORBIDDEN
