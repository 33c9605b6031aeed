"""The push worker (N1-N9): push events from the queue into notifications to offline devices, exactly once each.

For every batch of events (services/notify.py) it finds the recipients' registered devices that are not connected,
applies their settings (mode, mute, mentions, quiet hours, preview), renders the notification in the device's
language, sets the badge to the user's total unread, and sends it through the device's provider.

Exactly once to the user, over an at-least-once queue: every notification is a push job with an id of (user,
device, conversation, seq[, kind]) in the relational port (notifications.py). A job is *claimed* (inserted as
``queued`` with a lease) before it is sent and recorded with its outcome after; a redelivered event finds its jobs
claimed or done and sends nothing. The one window: a worker killed after the provider accepted a job and before
recording it. Then the job's lease runs out and it is sent again (by the redelivered event or the due loop) — with
the same collapse id, so the device replaces the notification it shows instead of showing a second one (and APNs
gets the same ``apns-id``).

The queue offset of a batch is committed once every job of it is recorded: final, or ``retrying``/``scheduled`` in
the store, where the due loop of any worker picks it up — retries and burst summaries survive a restart.

Frequency control: the first message of a conversation to a device is sent at once and opens a window of
``collapse_window_s``; the messages that follow within it become one summary ("5 new messages from Ada") sent when
the window closes, with the same collapse id (it replaces the first). A device gets at most ``device_rate`` per
``device_rate_window_s`` (the rest are dropped as ``rate_limited``); a provider at most ``provider_rate_per_s``
(sends wait).

Not guaranteed: a device that connects or disconnects while its event waits in the queue is judged by its state
when the worker handles the event; windows and "which notification is shown" live in the worker's memory, so after
a restart a burst may produce one more notification and a recall may not replace a notification sent before it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from msgspec.structs import replace

from flare_im.aio import GroupWriter
from flare_im.backends.message_log.base import ConvHead
from flare_im.backends.push.base import (
    FAILED,
    INVALID_TOKEN,
    RETRY,
    SENT,
    Notification,
    PushProvider,
    PushResult,
    content,
)
from flare_im.backends.relational.base import DeviceStore, GroupStore, MembershipStore, PushTarget, UserStore
from flare_im.backends.relational.notifications import (
    DEAD,
    DROPPED,
    QUEUED,
    RETRYING,
    SCHEDULED,
    NotificationStore,
    NotifySettings,
    PushJob,
)
from flare_im.backends.relational.notifications import FAILED as JOB_FAILED
from flare_im.backends.relational.notifications import SENT as JOB_SENT
from flare_im.observability import tracing
from flare_im.observability.stats import Counts
from flare_im.services import notify_templates as tpl
from flare_im.services.notify import OP_NOTIFYING, MessageEvent, PushEvent, ReadEvent, TargetCache, decode_event
from flare_im.services.notify_rules import BADGE, CALL, MENTION, SYSTEM_CATEGORY, category, drop_reason, mentions_user

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

Online = Callable[[Sequence[str]], Awaitable[dict[str, set[str]]]]  # uid -> its connected devices
Heads = Callable[[Sequence[str]], Awaitable[dict[str, ConvHead]]]


@dataclass(frozen=True, slots=True)
class PushConfig:
    collapse_window_s: float = 5.0  # a burst in one conversation to one device within this is one notification
    max_tries: int = 8  # sends of a job before it goes to the dead letters
    backoff_s: float = 2.0  # first retry delay; doubles each try (full jitter), at least the provider's Retry-After
    backoff_max_s: float = 900.0
    lease_s: float = 60.0  # a claimed job not recorded within this is sent again
    device_rate: int = 30  # notifications per device per device_rate_window_s (0: no limit)
    device_rate_window_s: float = 60.0
    provider_rate_per_s: float = 0.0  # sends per provider per second (0: no limit)
    max_in_flight: int = 64  # sends at once
    batch: int = 500  # events per queue batch
    due_poll_s: float = 0.5  # how often due retries and summaries are looked for
    due_batch: int = 200
    retention_s: float = 7 * 86400.0  # final jobs are kept this long (history, stats, dead letters)
    purge_every_s: float = 3600.0
    record_linger_s: float = 0.005  # an outcome waits this long for others to share its store write (at most)


class Consumer(Protocol):
    def batches(self, max_records: int, timeout_s: float) -> Any: ...


@functools.lru_cache(maxsize=65536)  # a hash per notification otherwise; conversations repeat
def collapse_id(conv: str) -> str:
    """One id per conversation (at most 64 bytes, as APNs requires): a newer notification replaces the shown one."""
    return "c" + hashlib.sha256(conv.encode()).hexdigest()[:32]


def backoff_s(tries: int, config: PushConfig, rng: random.Random, retry_after: float | None) -> float:
    """Delay before try ``tries + 1``: exponential with full jitter, capped, never below ``retry_after``."""
    ceiling = min(config.backoff_max_s, config.backoff_s * 2 ** max(0, tries - 1))
    delay = rng.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def _payload(n: Notification) -> str:
    return msgspec.json.encode(content(n)).decode()


def notification_of(job: PushJob, target: PushTarget) -> Notification:
    """The job's stored notification, addressed to the device's current registration."""
    p = msgspec.json.decode(job.payload) if job.payload else {}
    keys = msgspec.json.decode(target.keys) if target.keys else {}
    return Notification(
        job_id=job.job_id,
        provider=target.provider,
        token=target.token,
        app_id=target.app_id,
        keys=keys,
        category=p.get("category", job.category),
        title=p.get("title", ""),
        body=p.get("body", ""),
        badge=p.get("badge"),
        collapse_id=p.get("collapse_id", ""),
        priority=p.get("priority", "high"),
        silent=p.get("silent", False),
        voip=p.get("voip", False),
        ttl_s=p.get("ttl_s", 86400),
        data=p.get("data", {}),
        locale=p.get("locale", target.locale),
    )


@dataclass(slots=True)
class _Window:
    end: float
    first_seq: int
    count: int


class _Limiter:
    """Sliding-window counts per key (bounded: the oldest keys are forgotten first)."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self._limit, self._window_s, self._max_keys = limit, window_s, max_keys
        self._hits: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def allow(self, key: tuple[str, str], now: float) -> bool:
        if self._limit <= 0:
            return True
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            if len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        while hits and hits[0] <= now - self._window_s:
            hits.popleft()
        if len(hits) >= self._limit:
            return False
        hits.append(now)
        return True


class _Pace:
    """At most ``rate`` acquisitions per second (sends of one provider)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._next = 0.0

    async def acquire(self) -> None:
        if self._rate <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self._next)
        self._next = at + 1.0 / self._rate
        if at > now:
            await asyncio.sleep(at - now)


@dataclass(slots=True)
class _User:
    """What one batch needs of one recipient."""

    settings: NotifySettings
    muted: set[str]
    badge: int


class PushWorker:
    def __init__(
        self,
        *,
        jobs: NotificationStore,
        devices: DeviceStore,
        memberships: MembershipStore,
        users: UserStore,
        groups: GroupStore,
        heads: Heads,
        online: Online,
        targets: TargetCache,
        providers: Mapping[str, PushProvider],
        disabled: Mapping[str, str] | None = None,
        config: PushConfig | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """``providers``: the enabled adapters by name; ``disabled``: provider name -> why it is disabled (its
        jobs are dropped with that reason); ``clock``: epoch seconds (tests pass one they move)."""
        self._jobs = jobs
        self._devices = devices
        self._memberships = memberships
        self._users = users
        self._groups = groups
        self._heads = heads
        self._online = online
        self._targets = targets
        self._providers = dict(providers)
        self._disabled = dict(disabled or {})
        self.config = config or PushConfig()
        self._clock = clock
        self._rng = rng or random.Random()
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._shown: OrderedDict[tuple[str, str, str], tuple[int, int]] = OrderedDict()  # seqs of the shown one
        self._device_rate = _Limiter(self.config.device_rate, self.config.device_rate_window_s)
        self._paces = {name: _Pace(self.config.provider_rate_per_s) for name in self._providers}
        self._sending = asyncio.Semaphore(self.config.max_in_flight)
        # Outcomes are recorded as they come back, not once the whole batch is sent: a job sent but not recorded
        # is the one window in which a worker killed with SIGKILL sends twice (its lease runs out), so it stays
        # one store write and the linger long.
        self._recorder = GroupWriter(jobs.record_push_jobs, self.config.record_linger_s, self.config.batch)
        self._next_purge = 0.0
        self._cancels: list[PushJob] = []
        self.sent = 0
        self.batches = 0
        self.results = Counts()  # provider answers by (provider, outcome) (read by /metrics)

    # ------------------------------------------------------------------ running

    async def run(self, consumer: Consumer) -> None:
        """Consume push events until the consumer closes; look for due jobs between batches."""
        next_due = 0.0
        async for batch in consumer.batches(self.config.batch, self.config.due_poll_s):
            if batch.records:
                events = [decode_event(r.value) for r in batch.records]
                # Tracing on: a span per event published under a sampled trace, the gateway's send its parent.
                spans = tracing.batch_spans("flare.push.event", batch.records) if tracing.ENABLED else None
                handle = functools.partial(self.handle, events, spans)
                await self._until_done(handle, f"{len(events)} push events")
                try:
                    await batch.commit()
                except Exception as exc:  # redelivered to the partition's next owner: its jobs are claimed or done
                    log.warning("push batch not committed (%r); it will be delivered again", exc)
                if spans:
                    tracing.end_all([s for s in spans if s is not None])
                self.batches += 1
            if time.monotonic() >= next_due:
                next_due = time.monotonic() + self.config.due_poll_s
                await self._until_done(self.run_due, "due push jobs")
                await self._until_done(self.purge, "purging old push jobs")

    async def _until_done(self, step: Callable[[], Awaitable[Any]], what: str) -> None:
        while True:
            try:
                await step()
                return
            except Exception:  # the relational store is unavailable: keep the batch (uncommitted), retry
                log.exception("%s failed; retrying", what)
                await asyncio.sleep(1.0)

    async def purge(self) -> int:
        now = self._clock()
        if now < self._next_purge:
            return 0
        self._next_purge = now + self.config.purge_every_s
        return await self._jobs.purge_push_jobs(int((now - self.config.retention_s) * 1000))

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()

    # ------------------------------------------------------------------ events

    async def handle(self, events: Sequence[PushEvent], spans: Sequence[Span | None] | None = None) -> None:
        """Turn one batch of events into jobs and send or record every one of them (idempotent: a batch handled
        again sends nothing twice). ``spans``: each event's span (tracing), parent of its jobs' sends."""
        traced = _Traced(events, spans) if spans else None
        messages = [e for e in events if isinstance(e, MessageEvent)]
        reads = [e for e in events if isinstance(e, ReadEvent)]
        uids = list(dict.fromkeys([u for e in messages for u in e.recipients] + [e.uid for e in reads]))
        targets = {u: t for u, t in (await self._targets.get(uids)).items() if t}
        if not targets:
            return
        online = await self._online(list(targets))
        offline = {u: [t for t in ts if t.device not in online.get(u, set())] for u, ts in targets.items()}
        people = await self._people([u for u, ts in offline.items() if ts])
        names = await self._names(messages)
        now = self._clock()
        drops: list[PushJob] = []
        sends: list[tuple[PushJob, Notification]] = []
        for event in messages:
            sent, dropped = len(sends), len(drops)
            for uid in event.recipients:
                for target in targets.get(uid, ()):
                    if target in offline[uid]:
                        await self._message_job(event, people[uid], target, names, now, drops, sends)
                    elif event.kind not in OP_NOTIFYING and category(event.kind, event.body, uid, event.sender):
                        drops.append(self._job(event, target, "", DROPPED, now, reason="online"))
            if traced is not None:
                traced.jobs(event, sends[sent:], len(drops) - dropped)
        for read in reads:
            sent, dropped = len(sends), len(drops)
            for target in targets.get(read.uid, ()):
                self._cancel_summary(read, target, now)
                if target.device != read.device and target in offline[read.uid]:
                    self._read_job(read, people[read.uid], target, now, drops, sends)
            if traced is not None:
                traced.jobs(read, sends[sent:], len(drops) - dropped)
        await self._jobs.record_push_jobs(drops, only_new=True)
        cancels, self._cancels = self._cancels, []
        await self._jobs.record_push_jobs(cancels)
        await self._send_claimed(sends, now, traced)

    async def _message_job(
        self,
        event: MessageEvent,
        person: _User,
        target: PushTarget,
        names: dict[str, str],
        now: float,
        drops: list[PushJob],
        sends: list[tuple[PushJob, Notification]],
    ) -> None:
        uid, conv = target.uid, event.conv
        ctx = tpl.Context(
            tpl.language(target.locale),
            names.get(event.sender, event.sender),
            names.get(conv, "") if conv.startswith("g:") else "",
            person.settings.preview,
        )
        key = (uid, target.device, conv)
        if event.kind in OP_NOTIFYING:  # replaces the notification of its target, if that is the one shown
            target_seq = int(event.body.get("target", 0))
            shown = self._shown.get(key)
            if shown is None or not shown[0] <= target_seq <= shown[1]:
                return
            rendered = tpl.render_recall(ctx, event.kind)
            job = self._job(event, target, "message", QUEUED, now, suffix=event.kind, seq=target_seq)
            sends.append((job, self._notification(job, target, rendered, person.badge, event, silent=False)))
            return
        cat = category(event.kind, event.body, uid, event.sender)
        if not cat:
            return
        reason = drop_reason(
            person.settings, cat, muted=conv in person.muted, mentioned=mentions_user(event.body, uid), now_s=now
        )
        if not reason and target.provider not in self._providers:
            reason = f"provider_disabled: {self._disabled.get(target.provider, 'not configured')}"
        if reason:
            drops.append(self._job(event, target, cat, DROPPED, now, reason=reason))
            return
        window = self._windows.get(key)
        if cat != CALL and window is not None and now < window.end:
            window.count += 1
            summary = self._job(
                event, target, cat, SCHEDULED, now, suffix=f"burst{window.first_seq}", seq=window.first_seq
            )
            summary = replace(summary, seq=event.seq, next_at=int(window.end * 1000))
            rendered = tpl.render_burst(ctx, window.count)
            n = self._notification(summary, target, rendered, person.badge, event, silent=False)
            summary = replace(summary, payload=_payload(n))
            if await self._jobs.schedule_push_job(summary):
                drops.append(self._job(event, target, cat, DROPPED, now, reason=f"collapsed into {summary.job_id}"))
                return
        if not self._device_rate.allow((uid, target.device), now):
            drops.append(self._job(event, target, cat, DROPPED, now, reason="rate_limited"))
            return
        if cat != CALL:
            self._windows[key] = _Window(now + self.config.collapse_window_s, event.seq, 1)
            if len(self._windows) > 100_000:
                self._windows = {k: w for k, w in self._windows.items() if w.end > now}
        if cat == CALL:
            rendered = tpl.render_call(ctx)
        elif cat == SYSTEM_CATEGORY:
            rendered = tpl.render_system(ctx, str(event.body.get("event", "")), names.get(event.sender, event.sender))
        else:
            rendered = tpl.render_message(ctx, event.kind, event.body, mention=cat == MENTION)
        job = self._job(event, target, cat, QUEUED, now)
        sends.append((job, self._notification(job, target, rendered, person.badge, event, silent=False)))

    def _read_job(
        self,
        read: ReadEvent,
        person: _User,
        target: PushTarget,
        now: float,
        drops: list[PushJob],
        sends: list[tuple[PushJob, Notification]],
    ) -> None:
        """A silent badge update for a device that did not read, withdrawing the conversation's notification."""
        job_id = f"{read.uid}|{target.device}|{read.conv}|{read.seq}|read"
        if person.settings.mode == "none":
            drops.append(self._bare_job(job_id, target, BADGE, read.conv, read.seq, now, read.ts, DROPPED,
                                        "notifications_off"))  # fmt: skip
            return
        if target.provider not in self._providers:
            reason = f"provider_disabled: {self._disabled.get(target.provider, 'not configured')}"
            drops.append(self._bare_job(job_id, target, BADGE, read.conv, read.seq, now, read.ts, DROPPED, reason))
            return
        job = self._bare_job(job_id, target, BADGE, read.conv, read.seq, now, read.ts, QUEUED, "")
        n = Notification(
            job_id=job_id,
            provider=target.provider,
            token=target.token,
            app_id=target.app_id,
            keys=msgspec.json.decode(target.keys) if target.keys else {},
            category=BADGE,
            badge=person.badge,
            collapse_id=collapse_id(read.conv),
            priority="normal",
            silent=True,
            data={"type": "read", "conv": read.conv, "seq": str(read.seq)},
            locale=target.locale,
        )
        sends.append((replace(job, payload=_payload(n)), n))

    def _cancel_summary(self, read: ReadEvent, target: PushTarget, now: float) -> None:
        """The conversation was read: a pending burst summary of it is not sent to any device of the user."""
        key = (read.uid, target.device, read.conv)
        window = self._windows.pop(key, None)
        self._shown.pop(key, None)
        if window is not None and window.count > 1 and now < window.end:
            cancelled = f"{read.uid}|{target.device}|{read.conv}|{window.first_seq}|burst{window.first_seq}"
            job = self._bare_job(cancelled, target, "message", read.conv, window.first_seq, now, read.ts, DROPPED, "")
            self._cancels.append(replace(job, reason="read_elsewhere"))

    def _job(
        self,
        event: MessageEvent,
        target: PushTarget,
        cat: str,
        state: str,
        now: float,
        *,
        reason: str = "",
        suffix: str = "",
        seq: int | None = None,
    ) -> PushJob:
        seq = event.seq if seq is None else seq
        job_id = f"{target.uid}|{target.device}|{event.conv}|{seq}" + (f"|{suffix}" if suffix else "")
        return self._bare_job(job_id, target, cat or "message", event.conv, seq, now, event.ts, state, reason)

    @staticmethod
    def _bare_job(
        job_id: str, target: PushTarget, cat: str, conv: str, seq: int, now: float, ts: int, state: str, reason: str
    ) -> PushJob:
        return PushJob(
            job_id=job_id,
            uid=target.uid,
            device=target.device,
            provider=target.provider,
            category=cat,
            conv=conv,
            seq=seq,
            state=state,
            reason=reason,
            created_at=ts,
            updated_at=int(now * 1000),
        )

    def _notification(
        self, job: PushJob, target: PushTarget, rendered: tpl.Rendered, badge: int, event: MessageEvent, *, silent: bool
    ) -> Notification:
        call = job.category == CALL
        data = {
            "type": event.kind if event.kind in OP_NOTIFYING else "message",
            "conv": event.conv,
            "seq": str(job.seq),
            "msg_id": event.msg_id,
            "sender": event.sender,
            "kind": event.kind,
        }
        return Notification(
            job_id=job.job_id,
            provider=target.provider,
            token=target.token,
            app_id=target.app_id,
            keys=msgspec.json.decode(target.keys) if target.keys else {},
            category=job.category,
            title=rendered.title,
            body=rendered.body,
            badge=badge,
            collapse_id=collapse_id(event.conv),
            priority="high",
            silent=silent,
            voip=call,
            ttl_s=60 if call else 86400,
            data=data,
            locale=target.locale,
        )

    # ------------------------------------------------------------------ what a batch needs

    async def _people(self, uids: Sequence[str]) -> dict[str, _User]:
        """Settings, muted conversations and the badge (total unread) of each user."""
        stored = await self._jobs.notify_settings(uids)
        rows = await self._memberships.list_users_convs(uids)
        convs = list({m.conv for ms in rows.values() for m in ms if not m.left})
        heads = await self._heads(convs) if convs else {}
        people: dict[str, _User] = {}
        for uid in uids:
            unread = 0
            muted: set[str] = set()
            for m in rows[uid]:
                if m.left:
                    continue
                if m.muted:
                    muted.add(m.conv)
                head = heads.get(m.conv)
                if head is not None:
                    unread += max(0, head.max_seq - max(m.read_seq, m.join_seq, m.cleared_seq))
            people[uid] = _User(stored.get(uid) or NotifySettings(uid), muted, unread)
        return people

    async def _names(self, events: Sequence[MessageEvent]) -> dict[str, str]:
        """Display names of the senders and names of the groups (keyed by user id and by conversation)."""
        senders = list({e.sender for e in events})
        gids = list({e.conv[2:] for e in events if e.conv.startswith("g:")})
        names = {u.uid: u.display_name or u.uid for u in await self._users.get_users(senders)} if senders else {}
        if gids:
            names.update({f"g:{g.gid}": g.name for g in await self._groups.get_groups(gids)})
        return names

    async def badge(self, uid: str) -> int:
        return (await self._people([uid]))[uid].badge

    # ------------------------------------------------------------------ sending

    async def _send_claimed(
        self, sends: Sequence[tuple[PushJob, Notification]], now: float, traced: _Traced | None = None
    ) -> None:
        if not sends:
            return
        payloads = [_payload(n) for _, n in sends]  # one encode per job: claimed with it, recorded with it
        jobs = [replace(job, payload=payload) for (job, _), payload in zip(sends, payloads, strict=True)]
        claimed = await self._jobs.claim_push_jobs(jobs, int(now * 1000), int(self.config.lease_s * 1000))
        parent = traced.parents.get if traced is not None else _untraced
        todo = iter(
            [
                (job, n, payload, parent(job.job_id))
                for job, (_, n), payload in zip(jobs, sends, payloads, strict=True)
                if job.job_id in claimed
            ]
        )
        written: list[asyncio.Future[None]] = []

        async def lane() -> None:
            # A few lanes taking jobs in turn, not a task per job: what bounds the sends at once is the number
            # of lanes (each holds one of the ``max_in_flight`` slots while it runs).
            async with self._sending:
                for job, n, payload, span in todo:
                    written.append(self._recorder.submit(await self._deliver_traced(job, n, payload, span)))

        await asyncio.gather(*(lane() for _ in range(min(len(claimed), self.config.max_in_flight))))
        for done in dict.fromkeys(written):  # one future per group write
            await done

    async def run_due(self) -> int:
        """Send the scheduled summaries and retries that are due (and queued jobs whose worker died)."""
        now = self._clock()
        due = await self._jobs.take_due_push_jobs(
            int(now * 1000), int(self.config.lease_s * 1000), self.config.due_batch
        )
        if not due:
            return 0
        targets = await self._targets.get([j.uid for j in due])
        online = await self._online(list({j.uid for j in due}))
        badges: dict[str, int] = {}
        pending: list[Awaitable[None]] = []
        gone: list[PushJob] = []
        for job in due:
            target = next((t for t in targets.get(job.uid, ()) if t.device == job.device), None)
            if target is None:
                gone.append(self._final(job, DROPPED, "unregistered", now))
                continue
            if job.device in online.get(job.uid, ()):  # it came back: it syncs what this job was about
                gone.append(self._final(job, DROPPED, "online", now))
                continue
            n = notification_of(job, target)
            if n.badge is not None:  # the badge as it is now, not as it was when the job was made
                if job.uid not in badges:
                    badges[job.uid] = await self.badge(job.uid)
                n = replace(n, badge=badges[job.uid])
            pending.append(self._send_and_record(job, n, _payload(n)))
        await self._jobs.record_push_jobs(gone)
        await asyncio.gather(*pending)
        return len(gone) + len(pending)

    async def _send_and_record(self, job: PushJob, n: Notification, payload: str) -> None:
        async with self._sending:
            done = await self._deliver(job, n, payload)
        await self._recorder.record(done)

    async def _deliver_traced(self, job: PushJob, n: Notification, payload: str, parent: Span | None) -> PushJob:
        if parent is None:
            return await self._deliver(job, n, payload)
        attributes = {
            "flare.push.provider": n.provider,
            "flare.push.job_id": job.job_id,
            "flare.push.try": job.tries + 1,
        }
        span = tracing.start_client("flare.push.deliver", parent, attributes)
        with tracing.current(span):
            done = await self._deliver(job, n, payload)
        error = done.reason if done.state in (JOB_FAILED, DEAD, RETRYING) else ""
        tracing.finish(span, {"flare.push.outcome": done.state}, error=error[:200])
        return done

    async def _deliver(self, job: PushJob, n: Notification, payload: str) -> PushJob:
        """Send once and return the job in its new state (not yet recorded); ``payload`` is ``n`` as JSON. The
        caller holds one of the ``max_in_flight`` slots (``_sending``)."""
        provider = self._providers.get(n.provider)
        if provider is None:
            reason = f"provider_disabled: {self._disabled.get(n.provider, 'not configured')}"
            return self._final(job, DROPPED, reason, self._clock())
        if self.config.provider_rate_per_s > 0:
            await self._paces[n.provider].acquire()
        try:
            result = await provider.send(n)
        except Exception as exc:  # an adapter must not raise; if one does, treat it as transient
            log.warning("push provider %s raised %r", n.provider, exc)
            result = PushResult(RETRY, reason=f"{type(exc).__name__}: {exc}"[:300])
        self.results.add((n.provider, result.outcome))
        now = self._clock()
        tries = job.tries + 1
        updated_at = int(now * 1000)
        if result.outcome == SENT:
            self.sent += 1
            self._remember_shown(job)
            return replace(
                job,
                state=JOB_SENT,
                reason=result.provider_id[:500],
                next_at=0,
                latency_ms=max(0, updated_at - job.created_at),
                tries=tries,
                payload=payload,
                provider=n.provider,
                updated_at=updated_at,
            )
        if result.outcome == INVALID_TOKEN:
            await self._drop_registration(job, n.token)
            state, reason, next_at = JOB_FAILED, f"invalid_token: {result.reason}", 0
        elif result.outcome == RETRY and tries >= self.config.max_tries:
            state, reason, next_at = DEAD, f"{tries} tries; last: {result.reason or result.status}", 0
        elif result.outcome == RETRY:
            delay = backoff_s(tries, self.config, self._rng, result.retry_after_s)
            state, reason, next_at = RETRYING, result.reason or str(result.status), int((now + delay) * 1000)
        else:
            assert result.outcome == FAILED, result.outcome
            state, reason, next_at = JOB_FAILED, result.reason or str(result.status), 0
        return replace(
            job,
            state=state,
            reason=reason[:500],
            next_at=next_at,
            tries=tries,
            payload=payload,
            provider=n.provider,
            updated_at=updated_at,
        )

    @staticmethod
    def _final(job: PushJob, state: str, reason: str, now: float) -> PushJob:
        return replace(job, state=state, reason=reason[:500], updated_at=int(now * 1000), next_at=0)

    def _remember_shown(self, job: PushJob) -> None:
        if job.category == BADGE or job.job_id.endswith(("|recall", "|delete")):
            return
        key = (job.uid, job.device, job.conv)
        marker = job.job_id.rsplit("|burst", 1)
        first = int(marker[1]) if len(marker) == 2 and marker[1].isdigit() else job.seq
        self._shown[key] = (first, job.seq)
        self._shown.move_to_end(key)
        if len(self._shown) > 100_000:
            self._shown.popitem(last=False)

    async def _drop_registration(self, job: PushJob, token: str) -> None:
        """The provider says the token is dead: forget the registration (unless the device registered another)."""
        current = await self._devices.push_targets([job.uid])
        if any(t.device == job.device and t.token == token for t in current):
            await self._devices.delete_push_target(job.uid, job.device)
            log.info("push registration of %s/%s removed: the provider says the token is invalid", job.uid, job.device)
        self._targets.invalidate(job.uid)


def _untraced(_job_id: str) -> None:
    return None


class _Traced:
    """Which event's span each job of a traced batch belongs to (tracing on, some events sampled)."""

    __slots__ = ("_spans", "parents")

    def __init__(self, events: Sequence[PushEvent], spans: Sequence[Span | None]) -> None:
        self._spans = {id(e): s for e, s in zip(events, spans, strict=True) if s is not None}
        self.parents: dict[str, Span] = {}  # job id -> its event's span

    def jobs(self, event: PushEvent, sends: Sequence[tuple[PushJob, Notification]], drops: int) -> None:
        span = self._spans.get(id(event))
        if span is None:
            return
        span.set_attributes({"flare.push.sends": len(sends), "flare.push.drops": drops})
        for job, _ in sends:
            self.parents[job.job_id] = span
