"""The push worker (services/notify_worker.py) over SQLite, with a provider that records what it is asked to send
and answers what the test scripts, on a clock the test moves: who is notified, payloads, badges, collapse, recall,
read elsewhere, dedupe of a redelivered batch, retries with backoff and Retry-After, dead letters, invalid tokens;
with tracing on, the spans of traced events."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flare_im.backends.message_log.base import ConvHead
from flare_im.backends.push.base import Notification, PushResult
from flare_im.backends.relational.base import Group, Member, PushTarget, SettingsChange, User
from flare_im.backends.relational.notifications import NotifySettings
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.observability import tracing
from flare_im.services.notify import MessageEvent, ReadEvent, TargetCache, decode_event, encode_event
from flare_im.services.notify_worker import PushConfig, PushWorker, backoff_s, collapse_id

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
APNS = "ab" * 32


@dataclass
class FakeProvider:
    """A PushProvider that records each send and answers from ``script`` (then ``sent``)."""

    name: str
    sent: list[Notification] = field(default_factory=list)
    script: list[PushResult] = field(default_factory=list)

    async def send(self, n: Notification) -> PushResult:
        self.sent.append(n)
        return self.script.pop(0) if self.script else PushResult("sent", provider_id=f"id-{len(self.sent)}")

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    store: SqliteRelational
    worker: PushWorker
    apns: FakeProvider
    clock: Clock
    heads: dict[str, int]  # conv -> max seq
    online: dict[str, set[str]]
    seq: int = 0

    async def send(self, conv: str, sender: str, kind: str = "text", body: dict[str, Any] | None = None) -> int:
        self.heads[conv] = self.heads.get(conv, 0) + 1
        seq = self.heads[conv]
        members = [m.uid for m in await self.store.list_members(conv)]
        await self.store.mark_sent(conv, sender, seq, seq)
        text = body or {"text": f"hello {seq}"}
        others = [u for u in members if u != sender]
        event = MessageEvent(conv, seq, f"m{seq}", sender, kind, text, int(self.clock() * 1000), others)
        await self.worker.handle([decode_event(encode_event(event))])
        return seq

    async def op(self, conv: str, actor: str, op: str, target: int) -> None:
        self.heads[conv] += 1
        seq = self.heads[conv]
        members = [m.uid for m in await self.store.list_members(conv)]
        body = {"target": target, "version": 2}
        others = [u for u in members if u != actor]
        event = MessageEvent(conv, seq, f"m{seq}", actor, op, body, int(self.clock() * 1000), others)
        await self.worker.handle([event])

    async def read(self, uid: str, device: str, conv: str, seq: int) -> None:
        await self.store.advance_read(conv, uid, seq, 10_000 + seq)
        await self.worker.handle([ReadEvent(uid, device, conv, seq, int(self.clock() * 1000))])

    async def jobs(self, uid: str = "bob") -> dict[str, tuple[str, str]]:
        return {j.job_id: (j.state, j.reason) for j in await self.store.push_jobs(uid, limit=1000)}


DM = "d:ada:bob"
GROUP = "g:team"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "r.db")))
    store = SqliteRelational(db)
    db.start()
    for uid, name in (("ada", "Ada"), ("bob", "Bob"), ("cy", "Cy")):
        await store.create_user(User(uid, uid, name, "", 1), None)
    await store.add_members([Member(DM, "ada"), Member(DM, "bob")])
    await store.create_group(Group("team", "Team", "", "ada", 1), [Member(GROUP, u) for u in ("ada", "bob", "cy")])
    await store.put_push_target(PushTarget("bob", "phone", "apns", APNS, "com.x", "", "en", 1))
    heads: dict[str, int] = {}
    online: dict[str, set[str]] = {}
    clock = Clock()
    apns = FakeProvider("apns")

    async def read_heads(convs: Sequence[str]) -> dict[str, ConvHead]:
        return {c: ConvHead(c, heads[c], heads[c], None) for c in convs if c in heads}

    async def read_online(uids: Sequence[str]) -> dict[str, set[str]]:
        return {u: online[u] for u in uids if u in online}

    worker = PushWorker(
        jobs=store,
        devices=store,
        memberships=store,
        users=store,
        groups=store,
        heads=read_heads,
        online=read_online,
        targets=TargetCache(store),
        providers={"apns": apns},
        disabled={"fcm": "no FCM credentials (push_fcm_credentials)"},
        config=PushConfig(collapse_window_s=5.0, max_tries=3, backoff_s=2.0, device_rate=100),
        clock=clock,
        rng=random.Random(7),
    )
    yield World(store, worker, apns, clock, heads, online)
    await db.close()


async def test_an_offline_device_gets_one_notification_with_payload_and_badge(world: World) -> None:
    seq = await world.send(DM, "ada", body={"text": "lunch?"})
    [n] = world.apns.sent
    assert (n.title, n.body, n.badge, n.category, n.token, n.app_id) == ("Ada", "lunch?", 1, "message", APNS, "com.x")
    assert n.collapse_id == collapse_id(DM)
    assert len(n.collapse_id) <= 64
    assert dict(n.data) == {"type": "message", "conv": DM, "seq": "1", "msg_id": "m1", "sender": "ada", "kind": "text"}
    assert n.job_id == f"bob|phone|{DM}|{seq}"
    assert await world.jobs() == {n.job_id: ("sent", "id-1")}
    # A redelivered batch (the worker died before committing) notifies nobody twice.
    event = MessageEvent(DM, seq, "m1", "ada", "text", {"text": "lunch?"}, 0, ["bob"])
    await world.worker.handle([event, event])
    assert len(world.apns.sent) == 1


async def test_the_badge_counts_every_unread_conversation(world: World) -> None:
    world.clock.now += 10
    await world.send(GROUP, "ada")
    world.clock.now += 10
    await world.send(DM, "ada")
    assert [n.badge for n in world.apns.sent] == [1, 2]
    assert world.apns.sent[0].title == "Team"
    assert world.apns.sent[0].body == "Ada: hello 1"


async def test_an_online_device_gets_nothing(world: World) -> None:
    world.online["bob"] = {"phone"}
    seq = await world.send(DM, "ada")
    assert world.apns.sent == []
    assert await world.jobs() == {f"bob|phone|{DM}|{seq}": ("dropped", "online")}


async def test_locale_and_placeholders(world: World) -> None:
    await world.store.put_push_target(PushTarget("bob", "phone", "apns", APNS, "", "", "zh-CN", 2))
    await world.send(DM, "ada", "image", {"url": "https://x/i.png"})
    world.clock.now += 10
    await world.send(GROUP, "ada", "file", {"url": "https://x/f", "name": "a.pdf", "size": 1})
    assert [(n.title, n.body) for n in world.apns.sent] == [("Ada", "[图片]"), ("Team", "Ada\uff1a[文件] a.pdf")]


async def test_preview_off_hides_sender_and_content(world: World) -> None:
    await world.store.put_notify_settings(NotifySettings("bob", preview=False))
    await world.send(DM, "ada", body={"text": "secret"})
    [n] = world.apns.sent
    assert (n.title, n.body) == ("", "New message")


async def test_mute_is_broken_only_by_a_mention_of_the_user(world: World) -> None:
    await world.store.update_settings(GROUP, "bob", SettingsChange(muted=True), 1)
    await world.send(GROUP, "ada")
    world.clock.now += 10
    await world.send(GROUP, "ada", body={"text": "@all look", "mentions": ["all"]})
    world.clock.now += 10
    await world.send(GROUP, "ada", body={"text": "@bob look", "mentions": ["bob"]})
    [n] = world.apns.sent
    assert (n.category, n.body) == ("mention", "Ada mentioned you: @bob look")
    reasons = sorted(reason for state, reason in (await world.jobs()).values() if state == "dropped")
    assert reasons == ["muted", "muted"]
    await world.store.put_notify_settings(NotifySettings("bob", mentions_break_mute=False))
    world.clock.now += 10
    await world.send(GROUP, "ada", body={"text": "@bob again", "mentions": ["bob"]})
    assert len(world.apns.sent) == 1


async def test_modes_mentions_only_and_none(world: World) -> None:
    await world.store.put_notify_settings(NotifySettings("bob", mode="mentions"))
    await world.send(GROUP, "ada")
    world.clock.now += 10
    await world.send(GROUP, "ada", body={"text": "hi @bob", "mentions": ["bob"]})
    assert [n.category for n in world.apns.sent] == ["mention"]
    await world.store.put_notify_settings(NotifySettings("bob", mode="none"))
    world.clock.now += 10
    await world.send(GROUP, "ada", body={"text": "hi @bob", "mentions": ["bob"]})
    assert len(world.apns.sent) == 1
    assert "notifications_off" in {r for _, r in (await world.jobs()).values()}


async def test_quiet_hours_in_the_users_time_zone_let_calls_through(world: World) -> None:
    # T0 is 22:13 UTC = 06:13 in Shanghai: inside 23:00-07:00 there, outside it in UTC.
    await world.store.put_notify_settings(
        NotifySettings("bob", quiet_start=23 * 60, quiet_end=7 * 60, timezone="Asia/Shanghai")
    )
    await world.send(DM, "ada")
    world.clock.now += 10
    await world.send(DM, "ada", "custom", {"data": {"type": "call", "room": "r1"}})
    [call] = world.apns.sent
    assert (call.category, call.voip, call.priority, call.ttl_s) == ("call", True, "high", 60)
    assert call.body == "Incoming call from Ada"
    assert "quiet_hours" in {r for _, r in (await world.jobs()).values()}
    await world.store.put_notify_settings(NotifySettings("bob", quiet_start=23 * 60, quiet_end=7 * 60))
    world.clock.now += 10
    await world.send(DM, "ada")
    assert len(world.apns.sent) == 2


async def test_a_burst_collapses_into_one_summary_with_the_same_collapse_id(world: World) -> None:
    for _ in range(5):
        await world.send(DM, "ada")
        world.clock.now += 0.5
    assert [n.body for n in world.apns.sent] == ["hello 1"]
    assert await world.worker.run_due() == 0  # the window is still open
    world.clock.now = T0 + 5.0
    assert await world.worker.run_due() == 1
    first, summary = world.apns.sent
    assert (summary.title, summary.body, summary.badge) == ("Ada", "5 new messages from Ada", 5)
    assert summary.collapse_id == first.collapse_id
    assert dict(summary.data)["seq"] == "5"
    assert await world.worker.run_due() == 0
    world.clock.now += 1  # after the window: the next message is sent at once
    await world.send(DM, "ada")
    assert len(world.apns.sent) == 3


async def test_reading_elsewhere_sends_a_silent_badge_update_and_cancels_the_summary(world: World) -> None:
    await world.store.put_push_target(PushTarget("bob", "tablet", "apns", "cd" * 32, "", "", "en", 1))
    await world.send(DM, "ada")
    await world.send(DM, "ada")  # collapsed: a summary is scheduled for both devices
    world.clock.now += 1
    await world.send(GROUP, "ada")
    world.apns.sent.clear()
    world.online["bob"] = {"phone"}  # bob reads the direct conversation on the phone
    await world.read("bob", "phone", DM, 2)
    [update] = world.apns.sent
    assert (update.token, update.silent, update.category, update.badge) == ("cd" * 32, True, "badge", 1)
    assert update.collapse_id == collapse_id(DM)
    assert dict(update.data) == {"type": "read", "conv": DM, "seq": "2"}
    world.clock.now += 100
    await world.worker.run_due()
    assert len(world.apns.sent) == 1  # the tablet's pending summary of the direct conversation was dropped
    assert (await world.jobs())[f"bob|tablet|{DM}|1|burst1"] == ("dropped", "read_elsewhere")


async def test_a_recall_replaces_the_notification_it_concerns(world: World) -> None:
    seq = await world.send(DM, "ada", body={"text": "oops"})
    await world.op(DM, "ada", "recall", seq)
    first, replacement = world.apns.sent
    assert (replacement.body, replacement.collapse_id) == ("Ada recalled a message", first.collapse_id)
    assert replacement.job_id == f"bob|phone|{DM}|{seq}|recall"
    world.clock.now += 10
    await world.send(DM, "ada")
    await world.op(DM, "ada", "recall", seq)  # no longer the one shown, and the op is done anyway
    assert len(world.apns.sent) == 3


async def test_retries_back_off_honour_retry_after_and_end_in_the_dead_letters(world: World) -> None:
    world.apns.script = [PushResult("retry", "429 TooManyRequests", retry_after_s=30.0, status=429)]
    seq = await world.send(DM, "ada")
    job_id = f"bob|phone|{DM}|{seq}"
    [job] = [j for j in await world.store.push_jobs("bob") if j.job_id == job_id]
    assert (job.state, job.tries, job.next_at) == ("retrying", 1, int((T0 + 30) * 1000))
    world.clock.now += 29
    assert await world.worker.run_due() == 0
    world.apns.script = [PushResult("retry", "503", status=503), PushResult("retry", "503", status=503)]
    world.clock.now += 1
    assert await world.worker.run_due() == 1
    [job] = await world.store.push_jobs("bob")
    assert job.state == "retrying"
    assert 2.0 * 1000 <= job.next_at - int(world.clock.now * 1000) <= 4.0 * 1000
    world.clock.now += 10
    assert await world.worker.run_due() == 1
    [job] = await world.store.push_jobs("bob")
    assert (job.state, job.tries) == ("dead", 3)
    assert "3 tries" in job.reason
    assert job.payload
    assert len(world.apns.sent) == 3


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    config = PushConfig(backoff_s=1.0, backoff_max_s=10.0)
    rng = random.Random(1)
    delays = [backoff_s(t, config, rng, None) for t in (1, 2, 3, 4, 5, 6)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, [1, 2, 4, 8, 10, 10], strict=True))
    assert backoff_s(1, config, rng, 42.0) == 42.0


async def test_an_invalid_token_removes_the_registration(world: World) -> None:
    world.apns.script = [PushResult("invalid_token", "Unregistered", status=410)]
    await world.send(DM, "ada")
    assert await world.store.push_targets(["bob"]) == []
    [(state, reason)] = (await world.jobs()).values()
    assert (state, reason) == ("failed", "invalid_token: Unregistered")
    world.clock.now += 10
    await world.send(DM, "ada")
    assert len(world.apns.sent) == 1


async def test_a_disabled_provider_drops_with_its_reason(world: World) -> None:
    await world.store.put_push_target(PushTarget("cy", "android", "fcm", "f" * 40, "", "", "", 1))
    seq = await world.send(GROUP, "ada")
    assert (await world.jobs("cy"))[f"cy|android|{GROUP}|{seq}"] == (
        "dropped",
        "provider_disabled: no FCM credentials (push_fcm_credentials)",
    )


async def test_a_provider_down_then_up_loses_nothing(world: World) -> None:
    world.apns.script = [PushResult("retry", "ConnectError", status=0)] * 3
    world.worker.config = PushConfig(collapse_window_s=0.0, max_tries=8, backoff_s=1.0)
    for _ in range(3):
        await world.send(DM, "ada")
        world.clock.now += 0.1
    assert {state for state, _ in (await world.jobs()).values()} == {"retrying"}
    world.clock.now += 5
    assert await world.worker.run_due() == 3
    assert {state for state, _ in (await world.jobs()).values()} == {"sent"}
    assert sorted(dict(n.data)["seq"] for n in world.apns.sent[3:]) == ["1", "2", "3"]


async def test_a_worker_that_died_mid_send_leaves_its_job_to_the_due_loop(world: World) -> None:
    seq = 1
    world.heads[DM] = seq
    event = MessageEvent(DM, seq, "m1", "ada", "text", {"text": "hi"}, int(T0 * 1000), ["bob"])
    from flare_im.backends.relational.notifications import PushJob

    job = PushJob(f"bob|phone|{DM}|{seq}", "bob", "phone", "apns", "message", DM, seq, "queued", created_at=1,
                  payload='{"title": "Ada", "body": "hi", "badge": 1, "collapse_id": "c1"}')  # fmt: skip
    assert await world.store.claim_push_jobs([job], int(T0 * 1000), 60_000)  # claimed, then the worker died
    await world.worker.handle([event])  # redelivered within the lease: not sent twice
    assert world.apns.sent == []
    world.clock.now += 61
    assert await world.worker.run_due() == 1
    [n] = world.apns.sent
    assert (n.title, n.collapse_id, n.badge) == ("Ada", "c1", 1)


async def test_a_traced_event_gets_a_span_per_provider_request_and_an_untraced_one_none(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "ENABLED", True)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    world.heads.update({DM: 2, GROUP: 1})
    burst = [MessageEvent(DM, seq, f"m{seq}", "ada", "text", {"text": "hi"}, 0, ["bob"]) for seq in (1, 2)]
    untraced = MessageEvent(GROUP, 1, "g1", "ada", "text", {"text": "all"}, 0, ["bob", "cy"])
    spans = [provider.get_tracer("test").start_span(f"event {e.seq}") for e in burst]
    await world.worker.handle([*burst, untraced], [*spans, None])
    tracing.end_all(spans)
    assert [n.data["conv"] for n in world.apns.sent] == [DM, GROUP]  # the DM's second one waits (a summary)
    finished = {s.name: s for s in exporter.get_finished_spans()}
    deliver = finished["flare.push.deliver"]
    assert [s.name for s in exporter.get_finished_spans()].count("flare.push.deliver") == 1  # the group's: untraced
    assert deliver.parent is not None
    assert deliver.parent.span_id == spans[0].get_span_context().span_id
    assert dict(deliver.attributes or {}) == {
        "flare.push.provider": "apns",
        "flare.push.job_id": f"bob|phone|{DM}|1",
        "flare.push.try": 1,
        "flare.push.outcome": "sent",
    }
    assert dict(finished["event 1"].attributes or {}) == {"flare.push.sends": 1, "flare.push.drops": 0}
    assert dict(finished["event 2"].attributes or {}) == {"flare.push.sends": 0, "flare.push.drops": 1}
