"""Anti-spam (F2) against a real server: duplicates, link rules, mention cap, new accounts, escalating automatic
mutes, every decision recorded with its reason; refused sends store nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness, ServerProcess

DM = "d:alice:bob"
SPAM = "/v1/admin/moderation/spam"


def server_with(tmp_path: Path, **settings: str) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", env_overrides={f"FLARE_{k.upper()}": v for k, v in settings.items()})
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


@pytest.fixture
def spam_server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from server_with(
        tmp_path,
        spam_duplicate_max="2",
        spam_link_policy="deny",
        spam_max_mentions="3",
        spam_strikes="4",
        spam_mute_steps_s="2,600",
    )


@pytest.fixture
def new_account_server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from server_with(tmp_path, spam_new_account_s="3600", spam_new_account_per_min="2")


async def refusal(harness: Harness, text: str, **extra: object) -> FlareError:
    with pytest.raises(FlareError) as err:
        await harness.rest("alice").send(DM, f"c-{time.monotonic_ns()}", {"text": text, **extra})
    return err.value


async def test_rules_decisions_and_escalating_mute(spam_server: ServerProcess) -> None:
    harness = Harness(spam_server)
    try:
        for u in ("alice", "bob"):
            await harness.user(u)
        admin = harness.admin
        await admin.request("PUT", f"{SPAM}/domains/spam.biz", json={"policy": "deny"}, admin=True)
        assert (await admin.request("GET", f"{SPAM}/domains", admin=True))["items"] == [
            {"domain": "spam.biz", "policy": "deny"}
        ]
        first = await harness.rest("alice").send(DM, "ok-1", {"text": "see example.com"})

        err = await refusal(harness, "cheap pills at https://www.SPAM.biz/buy")
        assert (err.code, err.detail) == (ErrorCode.FORBIDDEN, {"reason": "spam", "rule": "link"})
        assert (await harness.rest("alice").send(DM, "ok-2", {"text": "Hello Bob"}))["seq"] == first["seq"] + 1
        assert (await harness.rest("alice").send(DM, "ok-3", {"text": "hello, bob!"}))["seq"] == first["seq"] + 2
        err = await refusal(harness, "HELLO BOB")
        assert (err.code, err.detail) == (ErrorCode.RATE_LIMITED, {"reason": "spam", "rule": "duplicate"})
        err = await refusal(harness, "hi all", mentions=["bob", "c", "d", "e"])
        assert (err.code, err.detail) == (ErrorCode.INVALID, {"reason": "spam", "rule": "mentions"})
        # Nothing refused was stored.
        history = await harness.rest("bob").history(DM)
        assert [m["seq"] for m in history["items"]] == [first["seq"], first["seq"] + 1, first["seq"] + 2]

        # The fourth refusal within the strike window mutes alice everywhere for the first step (2 s).
        err = await refusal(harness, "visit spam.biz")
        assert err.detail == {"reason": "spam", "rule": "link"}
        err = await refusal(harness, "an innocent message")
        assert err.code == ErrorCode.FORBIDDEN
        assert err.detail is not None
        assert err.detail["reason"] == "spam_muted"
        until = err.detail["until"]
        decisions = (await admin.request("GET", f"{SPAM}/decisions", params={"user_id": "alice"}, admin=True))["items"]
        assert [(d["rule"], d["action"]) for d in decisions] == [
            ("mute", "mute"),
            ("link", "refused"),
            ("mentions", "refused"),
            ("duplicate", "refused"),
            ("link", "refused"),
        ]
        assert decisions[0]["reason"].startswith("4 refused sends within 600 s: muted for 2 s")
        assert decisions[3]["reason"] == "the same text more than 2 times in 60 s"
        assert decisions[4]["reason"] == "links to www.spam.biz are not allowed"
        assert decisions[4]["conv"] == DM
        mutes = (await admin.request("GET", f"{SPAM}/mutes", admin=True))["items"]
        assert mutes == [{"user_id": "alice", "until": until}]
        await asyncio.sleep(max(0.0, until / 1000 - time.time()) + 0.1)
        assert (await harness.rest("alice").send(DM, "ok-4", {"text": "back"}))["seq"] == first["seq"] + 3

        # Bad input to the admin routes changes nothing.
        with pytest.raises(FlareError) as bad:
            await admin.request("PUT", f"{SPAM}/domains/not_a_domain", json={"policy": "deny"}, admin=True)
        assert bad.value.code == ErrorCode.INVALID
        with pytest.raises(FlareError) as bad:
            await admin.request("DELETE", f"{SPAM}/domains/nothing.example", admin=True)
        assert bad.value.code == ErrorCode.NOT_FOUND
        assert len((await admin.request("GET", f"{SPAM}/domains", admin=True))["items"]) == 1
    finally:
        await harness.close()


async def test_new_accounts_are_limited(new_account_server: ServerProcess) -> None:
    harness = Harness(new_account_server)
    try:
        for u in ("alice", "bob"):
            await harness.user(u)
        err = await refusal(harness, "my shop: example.com")
        assert (err.code, err.detail) == (ErrorCode.FORBIDDEN, {"reason": "spam", "rule": "new_account"})
        await harness.rest("alice").send(DM, "n1", {"text": "one"})
        await harness.rest("alice").send(DM, "n2", {"text": "two"})
        err = await refusal(harness, "three")
        assert (err.code, err.detail) == (ErrorCode.RATE_LIMITED, {"reason": "spam", "rule": "new_account"})
        assert len((await harness.rest("bob").history(DM))["items"]) == 2
    finally:
        await harness.close()
