"""Reports (F1) against a real server: users report messages and users; an admin works through the queue and
recalls, mutes or dismisses; refusals change nothing."""

from __future__ import annotations

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness

QUEUE = "/v1/admin/moderation/reports"


async def test_report_a_message_then_the_admin_recalls_it_and_mutes_the_sender(harness: Harness) -> None:
    for u in ("alice", "bob", "carol", "outsider"):
        await harness.user(u)
    group = await harness.rest("alice").create_group("g", ["bob", "carol"])
    gid, conv = group["group_id"], group["conv"]
    sent = await harness.rest("bob").send(conv, "spam-1", {"text": "buy cheap pills"})
    carol = await harness.device("carol")

    # Refusals first: each changes nothing (the queue stays empty).
    for who, body, code in (
        ("outsider", {"conv": conv, "seq": sent["seq"]}, ErrorCode.FORBIDDEN),  # cannot read the group
        ("carol", {"conv": conv, "seq": 999}, ErrorCode.NOT_FOUND),
        ("carol", {"conv": conv}, ErrorCode.INVALID),
        ("carol", {"conv": conv, "seq": sent["seq"], "reason": "boring"}, ErrorCode.INVALID),
        ("bob", {"conv": conv, "seq": sent["seq"]}, ErrorCode.FORBIDDEN),  # its own message
        ("carol", {"user_id": "nobody"}, ErrorCode.NOT_FOUND),
        ("carol", {}, ErrorCode.INVALID),
    ):
        with pytest.raises(FlareError) as err:
            await harness.rest(who).request("POST", "/v1/reports", json=body)
        assert err.value.code == code, (who, body)
    assert (await harness.admin.request("GET", QUEUE, admin=True))["items"] == []

    report = await harness.rest("carol").request(
        "POST", "/v1/reports", json={"conv": conv, "seq": sent["seq"], "reason": "spam", "note": "ads"}
    )
    assert report["user_id"] == "bob"
    assert report["state"] == "open"
    again = await harness.rest("carol").request("POST", "/v1/reports", json={"conv": conv, "seq": sent["seq"]})
    assert again["report_id"] == report["report_id"]  # one report, not two
    [queued] = (await harness.admin.request("GET", QUEUE, admin=True))["items"]
    assert queued["reporter"] == "carol"
    assert queued["message"]["body"] == {"text": "buy cheap pills"}

    # A refused action leaves the report open: mute needs a future end.
    with pytest.raises(FlareError) as err:
        await harness.admin.request(
            "POST", f"{QUEUE}/{report['report_id']}/resolve", json={"action": "mute", "mute_s": 0}, admin=True
        )
    assert err.value.code == ErrorCode.INVALID
    assert (await harness.admin.request("GET", f"{QUEUE}/{report['report_id']}", admin=True))["state"] == "open"

    recalled = await harness.admin.request(
        "POST", f"{QUEUE}/{report['report_id']}/resolve", json={"action": "recall", "note": "spam"}, admin=True
    )
    assert (recalled["state"], recalled["action"], recalled["resolution"]) == ("resolved", "recall", "spam")
    event = await carol.next_message(5)
    while event.kind != "recall":  # the device may first fill in what it missed before it connected
        event = await carol.next_message(5)
    assert event.body["target"] == sent["seq"]
    history = (await harness.rest("alice").history(conv))["items"]
    assert next(m for m in history if m["seq"] == sent["seq"])["state"] == "recalled"
    with pytest.raises(FlareError) as err:  # closed once
        await harness.admin.request(
            "POST", f"{QUEUE}/{report['report_id']}/resolve", json={"action": "dismiss"}, admin=True
        )
    assert err.value.code == ErrorCode.CONFLICT

    # The reporter sees the outcome; a second report of another message gets the sender muted.
    mine = (await harness.rest("carol").request("GET", "/v1/me/reports"))["items"]
    assert [(r["state"], r["action"]) for r in mine] == [("resolved", "recall")]
    sent2 = await harness.rest("bob").send(conv, "spam-2", {"text": "pills again"})
    second = await harness.rest("alice").request("POST", "/v1/reports", json={"conv": conv, "seq": sent2["seq"]})
    await harness.admin.request("POST", f"{QUEUE}/{second['report_id']}/resolve", json={"action": "mute"}, admin=True)
    with pytest.raises(FlareError) as err:
        await harness.rest("bob").send(conv, "spam-3", {"text": "still here"})
    assert err.value.detail == {"reason": "muted", "until": 2**62}
    mutes = (await harness.rest("carol").request("GET", f"/v1/groups/{gid}/mutes"))["items"]
    assert [(m["user_id"], m["actor"], m["until"]) for m in mutes] == [("bob", "system", 0)]
    assert (await harness.admin.request("GET", QUEUE, admin=True))["items"] == []  # nothing open
    closed = (await harness.admin.request("GET", QUEUE, params={"state": ""}, admin=True))["items"]
    assert len(closed) == 2


async def test_report_a_user_and_dismiss(harness: Harness) -> None:
    for u in ("alice", "mallory"):
        await harness.user(u)
    report = await harness.rest("alice").request(
        "POST", "/v1/reports", json={"user_id": "mallory", "reason": "impersonation"}
    )
    with pytest.raises(FlareError) as err:  # recall and mute need a message
        await harness.admin.request(
            "POST", f"{QUEUE}/{report['report_id']}/resolve", json={"action": "recall"}, admin=True
        )
    assert err.value.code == ErrorCode.CONFLICT
    with pytest.raises(FlareError) as err:  # users do not reach the queue
        await harness.rest("alice").request("GET", QUEUE)
    assert err.value.code == ErrorCode.UNAUTHORIZED
    done = await harness.admin.request(
        "POST", f"{QUEUE}/{report['report_id']}/resolve", json={"action": "dismiss"}, admin=True
    )
    assert done["state"] == "dismissed"
    with pytest.raises(FlareError) as err:
        await harness.admin.request("GET", f"{QUEUE}/nope", admin=True)
    assert err.value.code == ErrorCode.NOT_FOUND
