"""Message search (U9) against a real server: the permission matrix (non-member, member who joined later,
cleared history, delete-for-me, recalled, edited, left), Chinese, Japanese and English queries, paging,
bad input, and search switched off and on again."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.sdk.rest import RestClient

from .conftest import Harness, ServerProcess

_cmids = itertools.count()


async def _send(rest: RestClient, conv: str, text: str) -> int:
    out = await rest.send(conv, f"s{next(_cmids)}", {"text": text})
    return int(out["seq"])


async def _op(rest: RestClient, conv: str, seq: int, op: str, **body: Any) -> None:
    await rest.request("POST", f"/v1/conversations/{conv}/messages/{seq}/ops", json={"op": op, **body})


async def _search(rest: RestClient, q: str, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = await rest.request("GET", "/v1/search", params={"q": q, **params})
    return out


async def _found(rest: RestClient, q: str, **params: Any) -> list[tuple[str, int]]:
    page = await _search(rest, q, **params)
    return [(i["message"]["conv"], i["message"]["seq"]) for i in page["items"]]


async def _expect(rest: RestClient, q: str, expected: list[tuple[str, int]], **params: Any) -> None:
    """The search finds ``expected``, once the index has caught up with what was sent (within 5 s)."""
    deadline = asyncio.get_running_loop().time() + 5
    # Polled: the condition is another process's index.
    while (got := await _found(rest, q, **params)) != expected and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert got == expected


async def _error(rest: RestClient, q: str, **params: Any) -> FlareError:
    with pytest.raises(FlareError) as err:
        await _search(rest, q, **params)
    return err.value


async def test_search_permission_matrix(harness: Harness) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        await harness.user(name)
    alice, bob, carol, dave = (harness.rest(n) for n in ("alice", "bob", "carol", "dave"))
    group = await alice.create_group("Launch", ["bob"])
    team, gid = group["conv"], group["group_id"]
    s1 = await _send(alice, team, "launch plan draft one")
    s2 = await _send(bob, team, "launch plan draft two")
    await dave.request("GET", "/v1/me")
    await alice.add_members(gid, ["dave"])  # dave joins after s1, s2 (and the notice of his joining)
    s3 = await _send(alice, team, "launch plan final")
    s4 = await _send(alice, team, "launch plan secret")
    s5 = await _send(alice, team, "launch venue harbour")
    direct = "d:alice:carol"
    d1 = await _send(carol, direct, "launch party invite")

    await _expect(alice, "LAUNCH", [(direct, d1), (team, s5), (team, s4), (team, s3), (team, s2), (team, s1)])
    # Not a member: nothing of the group, and asking for it by name is refused.
    await _expect(carol, "launch", [(direct, d1)])
    assert (await _error(carol, "launch", conv=team)).code == ErrorCode.FORBIDDEN
    # Joined later: only what came after the join.
    await _expect(dave, "launch", [(team, s5), (team, s4), (team, s3)])

    # Recalled: found by nobody. Edited: found by the new text, not the old.
    await _op(alice, team, s4, "recall", opid="r1")
    await _op(alice, team, s5, "edit", opid="e1", body={"text": "launch venue station"}, base_version=1)
    for rest in (alice, bob, dave):
        await _expect(rest, "secret", [])
        await _expect(rest, "harbour", [])
        await _expect(rest, "station", [(team, s5)])
    page = await _search(alice, "station")
    assert page["items"][0]["message"]["version"] == 2
    assert page["items"][0]["message"]["body"] == {"text": "launch venue station"}

    # Deleted for me: gone for bob only.
    await _op(bob, team, s3, "delete_for_me", opid="h1")
    await _expect(bob, "final", [])
    await _expect(alice, "final", [(team, s3)])

    # Cleared history: bob sees only what came after the seq he cleared to.
    await bob.request("PATCH", f"/v1/conversations/{team}/settings", json={"clear_to": s2})
    await _expect(bob, "launch", [(team, s5)])
    await _expect(alice, "launch", [(team, s5), (team, s3), (team, s2), (team, s1)], conv=team)

    # Left: nothing of the group any more.
    await dave.leave_group(gid)
    await _expect(dave, "launch", [])
    assert (await _error(dave, "launch", conv=team)).code == ErrorCode.FORBIDDEN


async def test_chinese_japanese_english_snippets_filters_and_paging(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice, bob = harness.rest("alice"), harness.rest("bob")
    dm = "d:alice:bob"
    zh = await _send(alice, dm, "我们明天在北京见面好吗")
    ja = await _send(bob, dm, "東京で会いましょう")
    en = await _send(alice, dm, "Meeting notes: see the Roadmap")

    await _expect(alice, "roadmap", [(dm, en)])  # the index has caught up with the three
    assert await _found(bob, "北京") == [(dm, zh)]  # a two-character word
    await _expect(bob, "北京见面", [(dm, zh)])
    await _expect(alice, "会いま", [(dm, ja)])
    assert await _found(alice, "roadmap notes") == [(dm, en)]  # every term, any order, case-folded
    await _expect(alice, "roadmap", [], sender="bob")
    await _expect(alice, "roadmap", [], since=5, until=5)  # an empty time range
    await _expect(alice, "京", [(dm, ja)], sender="bob")

    [item] = (await _search(bob, "ROADMAP"))["items"]
    assert item["snippet"] == "Meeting notes: see the Roadmap"
    [[start, end]] = item["highlights"]
    assert item["snippet"][start:end] == "Roadmap"

    seqs = [await _send(alice, dm, f"page {i} 页") for i in range(5)]
    await _expect(alice, "页", [(dm, s) for s in reversed(seqs)])
    first = await _search(alice, "页", limit=2)
    assert [i["message"]["seq"] for i in first["items"]] == seqs[:2:-1][:2]
    second = await _search(alice, "页", limit=2, cursor=first["next"])
    third = await _search(alice, "页", limit=2, cursor=second["next"])
    got = [i["message"]["seq"] for p in (first, second, third) for i in p["items"]]
    assert got == seqs[::-1]
    assert third["next"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": "ok", "limit": 0},
        {"q": "ok", "limit": 101},
        {"q": "ok", "cursor": "abc"},
        {"q": "ok", "cursor": "0"},
        {"q": "ok", "cursor": "9223372036854775807"},
        {"q": "\u3000\u2028"},
        {"q": "ok", "conv": "not-a-conv"},
        {"q": "ok", "since": -1},
    ],
)
async def test_bad_search_input_is_422(harness: Harness, params: dict[str, Any]) -> None:
    await harness.user("alice")
    with pytest.raises(FlareError) as err:
        await harness.rest("alice").request("GET", "/v1/search", params=params)
    assert err.value.code == ErrorCode.INVALID


async def test_search_needs_a_token(server: ServerProcess) -> None:
    async with RestClient(server.api_url) as anonymous:
        with pytest.raises(FlareError) as err:
            await anonymous.request("GET", "/v1/search", params={"q": "hello"})
    assert err.value.code == ErrorCode.UNAUTHORIZED


async def test_search_off_then_on_again_indexes_what_was_sent_meanwhile(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env_overrides={"FLARE_SEARCH_URL": "off"})
    srv.start()
    harness = Harness(srv)
    try:
        await harness.user("alice")
        await harness.user("bob")
        alice = harness.rest("alice")
        seq = await _send(alice, "d:alice:bob", "sent while search was off")
        assert (await _error(alice, "search")).code == ErrorCode.UNAVAILABLE
    finally:
        await harness.close()
        srv.stop()
    srv.env_overrides = {}
    srv.start()
    harness = Harness(srv)
    try:
        harness.tokens["alice"] = await harness.admin.admin_issue_token("alice")
        await _expect(harness.rest("alice"), "search", [("d:alice:bob", seq)])
    finally:
        await harness.close()
        srv.stop()
