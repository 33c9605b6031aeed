"""Search reaches the cold tier (embedded): after `flare archive run` moved every message to Parquet in the
object store, a restarted server finds them as before (same permission rules, same result shape, newest
first, the same cursor); an edit of an archived message is found by its new text only, a recalled one not at
all, and a search index made after the archive run (search.db deleted) indexes the archived parts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from flare_im.sdk.rest import RestClient

from .conftest import Harness, ServerProcess

DM = "d:alice:bob"


def _archive(data_dir: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "flare_im.cli", "archive", "run", "--older-than", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "archived" in run.stdout


async def _search(rest: RestClient, q: str, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = await rest.request("GET", "/v1/search", params={"q": q, **params})
    return out


async def _found(rest: RestClient, q: str, **params: Any) -> list[tuple[str, int]]:
    return [(i["message"]["conv"], i["message"]["seq"]) for i in (await _search(rest, q, **params))["items"]]


async def _expect(rest: RestClient, q: str, expected: list[tuple[str, int]], **params: Any) -> None:
    """Polled for 10 s: the index follows the store in the background."""
    deadline = asyncio.get_running_loop().time() + 10
    while (got := await _found(rest, q, **params)) != expected and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert got == expected


async def _relogin(srv: ServerProcess, users: list[str]) -> Harness:
    harness = Harness(srv)
    for uid in users:
        harness.tokens[uid] = await harness.admin.admin_issue_token(uid)
    return harness


async def test_archived_messages_are_searchable(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    users = ["alice", "bob", "carol", "dave"]
    harness = Harness(srv)
    try:
        for uid in users:
            await harness.user(uid)
        alice = harness.rest("alice")
        group = await alice.create_group("Crew", ["bob"])
        team, gid = group["conv"], group["group_id"]
        seqs = {}
        for name, conv, text in [
            ("map", DM, "the harbour map"),
            ("lunch", DM, "lunch at noon"),
            ("tour", DM, "harbour tour tickets"),
            ("edit", DM, "harbour meeting moved"),
            ("ok", DM, "ok see you"),
            ("team", team, "crew harbour briefing"),
            ("cn", DM, "我们在北京的港口见面"),
        ]:
            seqs[name] = int((await alice.send(conv, f"c-{name}", {"text": text}))["seq"])
        await _expect(
            alice, "harbour", [(team, seqs["team"]), (DM, seqs["edit"]), (DM, seqs["tour"]), (DM, seqs["map"])]
        )
    finally:
        await harness.close()
        srv.stop()

    _archive(srv.data_dir)
    srv.start()
    harness = await _relogin(srv, users)
    try:
        alice, bob, carol = harness.rest("alice"), harness.rest("bob"), harness.rest("carol")
        found = [(team, seqs["team"]), (DM, seqs["edit"]), (DM, seqs["tour"]), (DM, seqs["map"])]
        await _expect(bob, "HARBOUR", found)  # once the index has read the new parts (at start)
        assert await _found(bob, "北京") == [(DM, seqs["cn"])]
        assert await _found(bob, "ok") == [(DM, seqs["ok"])]  # a short term: no index lookup
        assert await _found(bob, "harbour", conv=DM) == found[1:]
        assert await _found(carol, "harbour") == []  # not a member
        page = await _search(bob, "map")
        [item] = page["items"]
        assert item["message"]["body"] == {"text": "the harbour map"}
        assert item["message"]["sender"] == "alice"
        assert item["snippet"] == "the harbour map"
        assert item["highlights"] == [[12, 15]]
        # Paging through archived hits: newest first, with the cursor of the page before.
        got: list[tuple[str, int]] = []
        cursor = None
        while True:
            page = await _search(bob, "harbour", limit=1, **({"cursor": cursor} if cursor else {}))
            got += [(i["message"]["conv"], i["message"]["seq"]) for i in page["items"]]
            if (cursor := page["next"]) is None:
                break
        assert got == found

        await alice.add_members(gid, ["dave"])  # joined after the archived messages: none of them
        assert await _found(harness.rest("dave"), "harbour") == []

        await alice.request(
            "POST",
            f"/v1/conversations/{DM}/messages/{seqs['edit']}/ops",
            json={"op": "edit", "opid": "e1", "body": {"text": "meeting at the station"}, "base_version": 1},
        )
        await alice.request(
            "POST", f"/v1/conversations/{DM}/messages/{seqs['tour']}/ops", json={"op": "recall", "opid": "r1"}
        )
        await _expect(bob, "harbour", [(team, seqs["team"]), (DM, seqs["map"])])
        await _expect(bob, "station", [(DM, seqs["edit"])])
        await _expect(alice, "tickets", [])
        [edited] = (await _search(bob, "station"))["items"]
        assert edited["message"]["version"] == 2
    finally:
        await harness.close()
        srv.stop()

    # A second archive run (the operations' events; the edited and recalled copies stay hot), then a new
    # index (search.db deleted): built from the store and the archived parts.
    _archive(srv.data_dir)
    for name in ("search.db", "search.db-wal", "search.db-shm"):
        (srv.data_dir / name).unlink(missing_ok=True)
    srv.start()
    harness = await _relogin(srv, users)
    try:
        bob, carol = harness.rest("bob"), harness.rest("carol")
        await _expect(bob, "harbour", [(team, seqs["team"]), (DM, seqs["map"])])
        await _expect(bob, "station", [(DM, seqs["edit"])])
        assert await _found(bob, "tickets") == []
        assert await _found(bob, "moved") == []
        assert await _found(bob, "北京") == [(DM, seqs["cn"])]
        assert await _found(carol, "harbour") == []
        assert await _found(harness.rest("dave"), "harbour") == []
    finally:
        await harness.close()
        srv.stop()
