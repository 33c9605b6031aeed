"""Contract of the relational port's notification part (src/flare_im/backends/relational/notifications.py):
settings, and push jobs as the notification service's dedupe record, schedule, dead letters and history."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from msgspec import structs

from flare_im.backends.relational.notifications import NotifySettings, PushJob


def job(job_id: str, *, uid: str = "alice", device: str = "phone", state: str = "queued", **kw: Any) -> PushJob:
    fields: dict[str, Any] = {
        "provider": "apns",
        "category": "message",
        "conv": "d:alice:bob",
        "seq": 1,
        "created_at": 1_000,
        "updated_at": 1_000,
        "payload": '{"body": "hi"}',
    }
    fields.update(kw)
    return PushJob(job_id=job_id, uid=uid, device=device, state=state, **fields)


async def test_settings_are_absent_until_put_and_then_replaced(relational: Any) -> None:
    assert await relational.notify_settings(["alice"]) == {}
    mine = NotifySettings("alice", mode="mentions", preview=False, quiet_start=22 * 60, quiet_end=7 * 60,
                          timezone="Asia/Shanghai", version=5)  # fmt: skip
    await relational.put_notify_settings(mine)
    await relational.put_notify_settings(NotifySettings("bob", mentions_break_mute=False, version=1))
    found = await relational.notify_settings(["alice", "bob", "carol"])
    assert found == {"alice": mine, "bob": NotifySettings("bob", mentions_break_mute=False, version=1)}
    await relational.put_notify_settings(replace(mine, mode="none", version=6))
    assert (await relational.notify_settings(["alice"]))["alice"].mode == "none"


async def test_a_job_is_claimed_once_while_its_lease_holds(relational: Any) -> None:
    jobs = [job("a"), job("b")]
    assert await relational.claim_push_jobs(jobs, 2_000, 30_000) == {"a", "b"}
    assert await relational.claim_push_jobs(jobs, 3_000, 30_000) == set()  # another worker, lease holds
    # The worker died mid-send: after the lease, the redelivered job is taken over (sent again, same collapse id).
    assert await relational.claim_push_jobs(jobs[:1], 32_000, 30_000) == {"a"}


async def test_concurrent_claims_of_one_job_have_one_winner(relational: Any) -> None:
    results = await asyncio.gather(*(relational.claim_push_jobs([job("x")], 1_000, 30_000) for _ in range(8)))
    assert sum(len(r) for r in results) == 1


async def test_a_recorded_job_is_never_claimed_again(relational: Any) -> None:
    await relational.claim_push_jobs([job("a")], 2_000, 30_000)
    await relational.record_push_jobs([job("a", state="sent", updated_at=2_500, latency_ms=1_500, tries=1)])
    assert await relational.claim_push_jobs([job("a")], 99_000_000, 30_000) == set()
    [stored] = await relational.push_jobs("alice")
    assert (stored.state, stored.tries, stored.latency_ms) == ("sent", 1, 1_500)


async def test_recording_only_new_jobs_keeps_what_is_there(relational: Any) -> None:
    await relational.record_push_jobs([job("a", state="sent")])
    await relational.record_push_jobs([job("a", state="dropped", reason="online"), job("b", state="dropped")],
                                      only_new=True)  # fmt: skip
    states = {j.job_id: j.state for j in await relational.push_jobs("alice")}
    assert states == {"a": "sent", "b": "dropped"}


async def test_due_jobs_are_taken_in_due_order_and_leased(relational: Any) -> None:
    await relational.record_push_jobs(
        [
            job("late", state="retrying", next_at=5_000, tries=1),
            job("early", state="retrying", next_at=3_000, tries=2),
            job("future", state="retrying", next_at=900_000),
            job("done", state="sent", next_at=1_000),
        ]
    )
    assert await relational.schedule_push_job(job("burst", next_at=4_000))
    taken = await relational.take_due_push_jobs(6_000, 10_000, 10)
    assert [j.job_id for j in taken] == ["early", "burst", "late"]
    assert taken[0].tries == 2
    assert await relational.take_due_push_jobs(7_000, 10_000, 10) == []  # leased
    # Never recorded (the worker died): due again once the lease ran out.
    assert {j.job_id for j in await relational.take_due_push_jobs(16_000, 10_000, 10)} == {"early", "burst", "late"}
    assert [j.job_id for j in await relational.take_due_push_jobs(99_000, 10_000, 1)] == ["early"]


async def test_a_queued_job_whose_lease_ran_out_is_due(relational: Any) -> None:
    assert await relational.claim_push_jobs([job("q")], 1_000, 30_000) == {"q"}
    assert await relational.take_due_push_jobs(20_000, 30_000, 10) == []
    [taken] = await relational.take_due_push_jobs(31_000, 30_000, 10)
    assert (taken.job_id, taken.state, taken.payload) == ("q", "queued", '{"body": "hi"}')
    assert await relational.claim_push_jobs([job("q")], 32_000, 30_000) == set()  # the due loop holds it now


async def test_a_schedule_grows_until_the_job_leaves_that_state(relational: Any) -> None:
    assert await relational.schedule_push_job(job("s", seq=1, next_at=4_000, payload="1"))
    assert await relational.schedule_push_job(job("s", seq=3, next_at=4_000, payload="3"))
    [stored] = await relational.push_jobs("alice")
    assert (stored.state, stored.seq, stored.payload) == ("scheduled", 3, "3")
    await relational.record_push_jobs([structs.replace(stored, state="sent")])
    assert not await relational.schedule_push_job(job("s", seq=4, next_at=4_000, payload="4"))


async def test_history_filters_and_orders_newest_first(relational: Any) -> None:
    await relational.record_push_jobs(
        [
            job("1", updated_at=10, state="sent"),
            job("2", updated_at=30, state="dead", device="tablet"),
            job("3", updated_at=20, state="dropped", uid="bob"),
        ]
    )
    assert [j.job_id for j in await relational.push_jobs("alice")] == ["2", "1"]
    assert [j.job_id for j in await relational.push_jobs("", since=15)] == ["2", "3"]
    assert [j.job_id for j in await relational.push_jobs("alice", device="phone")] == ["1"]
    assert [j.job_id for j in await relational.push_jobs("", state="dead")] == ["2"]
    assert [j.job_id for j in await relational.push_jobs("", limit=1)] == ["2"]


async def test_outcomes_by_time_range_and_purge_keeps_pending_jobs(relational: Any) -> None:
    await relational.record_push_jobs(
        [
            job("1", updated_at=10, state="sent", latency_ms=40),
            job("2", updated_at=20, state="failed", provider="fcm", category="mention"),
            job("3", updated_at=30, state="retrying", next_at=10_000),
        ]
    )
    outcomes = sorted(await relational.push_job_outcomes(10, 30, 100))
    assert outcomes == [("apns", "message", "sent", 40), ("fcm", "mention", "failed", -1)]
    assert await relational.purge_push_jobs(100) == 2
    assert [j.job_id for j in await relational.push_jobs("")] == ["3"]


async def test_one_claim_mixes_new_held_lapsed_and_repeated_jobs(relational: Any) -> None:
    await relational.claim_push_jobs([job("held")], 1_000, 10_000)  # leased until 11,000
    await relational.claim_push_jobs([job("lapsed")], 1_000, 2_000)  # until 3,000: its worker died
    await relational.record_push_jobs([job("done", state="sent")])
    batch = [job("new"), job("held"), job("lapsed"), job("done"), job("new"), job("other")]
    assert await relational.claim_push_jobs(batch, 6_000, 30_000) == {"new", "lapsed", "other"}
    assert await relational.claim_push_jobs(batch, 12_000, 30_000) == {"held"}  # the others are leased anew
    states = {j.job_id: j.state for j in await relational.push_jobs("alice")}
    assert states == {"new": "queued", "held": "queued", "lapsed": "queued", "done": "sent", "other": "queued"}


async def test_recording_replaces_claimed_jobs_and_inserts_unknown_ones_in_one_call(relational: Any) -> None:
    await relational.claim_push_jobs([job("a"), job("b")], 2_000, 30_000)
    outcomes = [
        job("a", state="sent", reason="apns-1", tries=1, updated_at=2_400, latency_ms=1_400, payload='{"n": 1}'),
        job("b", state="retrying", reason="429", tries=1, updated_at=2_500, next_at=9_000),
        job("c", state="dropped", reason="read_elsewhere", updated_at=2_600),  # never claimed: no row yet
    ]
    await relational.record_push_jobs(outcomes)
    stored = {j.job_id: j for j in await relational.push_jobs("alice")}
    assert stored == {o.job_id: o for o in outcomes}
    assert await relational.claim_push_jobs([job("a"), job("b")], 99_000_000, 30_000) == set()  # leases released
    failed, dead = structs.replace(outcomes[0], state="failed"), structs.replace(outcomes[0], state="dead")
    await relational.record_push_jobs([failed, dead])
    assert {j.job_id: j.state for j in await relational.push_jobs("alice")}["a"] == "dead"  # the last one wins
