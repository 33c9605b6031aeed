"""Devices' push targets (N2) and the content filter (F3, F5, F6) on a real server, over REST and WebSocket."""

from __future__ import annotations

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.sdk.rest import RestClient

from .conftest import Harness
from .witness import BARRIER, Wire, Witness, next_message, rest_barrier

DM = "d:alice:bob"
APNS = "a1" * 32  # 64 hex digits
FCM = "fcm-token:" + "x" * 40
WEB_KEYS = {
    "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
    "auth": "tBHItJI5svbpez7KI4CCXg",
}


async def expect_error(code: ErrorCode, call: object) -> FlareError:
    with pytest.raises(FlareError) as err:
        await call  # type: ignore[misc]
    assert err.value.code == code, err.value
    return err.value


async def test_push_targets_register_move_and_unregister(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice, bob = harness.rest("alice"), harness.rest("bob")

    phone = await alice.register_push("phone", "fcm", FCM, app_id="chat-app")
    assert (phone["device"], phone["provider"], phone["token"], phone["app_id"]) == ("phone", "fcm", FCM, "chat-app")
    await alice.register_push("mac", "apns", APNS.upper(), app_id="com.example.chat")
    await alice.register_push("web", "webpush", "https://push.example.net/send/abc", keys=WEB_KEYS)
    devices = {d["device"]: d for d in await alice.devices()}
    assert sorted(devices) == ["mac", "phone", "web"]
    assert devices["mac"]["token"] == APNS  # stored in the provider's canonical (lower-case) form
    assert devices["web"]["keys"] == WEB_KEYS

    # The provider rotated the phone's token: the registration is replaced, not added.
    await alice.register_push("phone", "fcm", FCM + "2")
    assert [d["token"] for d in await alice.devices() if d["device"] == "phone"] == [FCM + "2"]

    # Bob signs in on alice's old Mac: its token now reaches bob only.
    await bob.register_push("macbook", "apns", APNS)
    assert sorted(d["device"] for d in await alice.devices()) == ["phone", "web"]
    assert [(d["device"], d["token"]) for d in await bob.devices()] == [("macbook", APNS)]

    # Bad registrations are refused and change nothing.
    before = await alice.devices()
    for provider, token, keys in [
        ("apns", "not-hex", None),
        ("fcm", "short", None),
        ("fcm", FCM, WEB_KEYS),
        ("webpush", "http://insecure.example/ep", WEB_KEYS),
        ("webpush", "https://push.example.net/send/x", None),
        ("webpush", "https://push.example.net/send/x", {"p256dh": "x"}),
        ("carrier-pigeon", FCM, None),
    ]:
        await expect_error(ErrorCode.INVALID, alice.register_push("phone", provider, token, keys=keys))
    await expect_error(ErrorCode.INVALID, alice.register_push("d" * 65, "fcm", FCM))
    assert await alice.devices() == before

    # Logout on the phone.
    await alice.unregister_push("phone")
    await alice.unregister_push("phone")  # nothing left: still fine
    assert [d["device"] for d in await alice.devices()] == ["web"]

    async with RestClient(harness.srv.api_url) as anonymous:
        await expect_error(ErrorCode.UNAUTHORIZED, anonymous.register_push("phone", "fcm", FCM))


async def test_filter_blocks_and_masks_sends_and_edits(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    wire = Wire()
    bob = await harness.device("bob", on_frame=wire)
    admin = harness.admin

    block = await admin.admin_add_filter_rule("casino", action="block")
    await admin.admin_add_filter_rule("heck", action="mask", rule_id="no-heck")
    card = await admin.admin_add_filter_rule(r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b", match="regex", action="mask")
    listed = await admin.admin_filter_rules()
    assert sorted(r["rule_id"] for r in listed) == sorted([block["rule_id"], "no-heck", card["rule_id"]])

    # Blocked: an error to the sender, nothing stored, nothing pushed.
    pair = await Witness.open(harness, DM, ["alice", "bob"])
    err = await pair.refused(ErrorCode.BLOCKED, alice.send(DM, "best CASINO bonus", attempts=1))
    assert not err.retryable
    await pair.refused(ErrorCode.BLOCKED, harness.rest("alice").send(DM, "c-rest", {"text": "casino"}))

    # Masked: stored and delivered masked; the ack carries the stored body for the sending device.
    ack = await alice.send(DM, "what the heck, card 4111 1111 1111 1111")
    assert ack.seq == pair.last_barrier + 1  # the blocked sends took no seq
    assert ack.body == {"text": "what the ****, card *******************"}
    got = await next_message(bob)
    assert (got.seq, got.body["text"]) == (ack.seq, "what the ****, card *******************")
    clean = await alice.send(DM, "all fine")
    assert clean.body is None
    assert (await next_message(bob)).body == {"text": "all fine"}

    # Edits are screened like sends.
    await pair.barrier(skip_earlier=True)
    await pair.refused(ErrorCode.BLOCKED, alice.edit(DM, clean.seq, "casino night?", base_version=1, attempts=1))
    edited = await alice.edit(DM, clean.seq, "heck yes", base_version=1)
    assert edited.body == {"text": "**** yes"}
    event = await next_message(bob)
    assert (event.kind, event.body["body"]) == ("edit", {"text": "**** yes"})

    rest_ack = await harness.rest("alice").send(DM, "c-rest-2", {"text": "heck"})
    assert rest_ack["body"] == {"text": "****"}
    assert (await next_message(bob)).body == {"text": "****"}

    history = await harness.rest("bob").history(DM)
    texts = [m for m in history["items"] if m["kind"] == "text" and not m["cmid"].startswith(BARRIER)]
    assert [m["body"].get("text") for m in texts] == [
        "what the ****, card *******************",
        "**** yes",
        "****",
    ]

    # The check endpoint shows what the rules do, and a deleted rule stops applying at once.
    check = await admin.request("POST", "/v1/admin/filter/check", admin=True, json={"text": "Heck, casino"})
    assert check == {"blocked": True, "text": None}
    await admin.admin_delete_filter_rule(block["rule_id"])
    await expect_error(ErrorCode.NOT_FOUND, admin.admin_delete_filter_rule(block["rule_id"]))
    check = await admin.request("POST", "/v1/admin/filter/check", admin=True, json={"text": "Heck, casino"})
    assert check == {"blocked": False, "text": "****, casino"}
    last = await alice.send(DM, "casino")
    assert last.body is None

    # Bad rules and callers without the admin key are refused.
    await expect_error(ErrorCode.INVALID, admin.admin_add_filter_rule("(", match="regex"))
    await expect_error(ErrorCode.INVALID, admin.admin_add_filter_rule("x", action="shadowban"))
    async with RestClient(harness.srv.api_url, admin_key="wrong") as intruder:
        await expect_error(ErrorCode.UNAUTHORIZED, intruder.admin_add_filter_rule("anything"))
    # On the wire, bob got every stored message once, in order, the last "casino" (once the rule was gone)
    # included, and nothing for the refused ones.
    barrier = await rest_barrier(harness, DM, "alice", wire)
    assert wire.seqs(DM) == list(range(1, barrier + 1))
    assert last.seq == barrier - 1
