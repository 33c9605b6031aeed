"""The relational port's notification part: users' notification settings, and the push jobs of the notification
service (services/notify_worker.py) — its dedupe record, retry schedule, dead letters and history in one table.

A push job is one notification to one device, identified by ``job_id`` (device, conversation, seq and what kind
of notification). Its row moves through states:

- ``queued``: a worker claimed it and is sending it; ``lease_until`` says until when the claim holds.
- ``scheduled``: to be sent at ``next_at`` (a burst summary waiting for its window to close).
- ``retrying``: the provider asked to try again; sent again at ``next_at``.
- final: ``sent``, ``failed`` (the provider refused it for good, or the token is dead), ``dead`` (out of tries:
  the dead-letter store, with its payload) and ``dropped`` (never sent, ``reason`` says why).

Rows are kept for a bounded time (``purge_push_jobs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

QUEUED, SCHEDULED, RETRYING = "queued", "scheduled", "retrying"
SENT, FAILED, DEAD, DROPPED = "sent", "failed", "dead", "dropped"
PENDING_STATES = (QUEUED, SCHEDULED, RETRYING)
FINAL_STATES = (SENT, FAILED, DEAD, DROPPED)
MODES = ("all", "mentions", "none")


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """A user's notification settings (all of the user's devices)."""

    uid: str
    mode: str = "all"  # all | mentions (only @mentions of the user, and calls) | none
    mentions_break_mute: bool = True  # an @mention of the user notifies even in a muted conversation
    preview: bool = True  # False: "New message", without sender or content
    quiet_start: int = -1  # minutes after midnight in ``timezone``; -1: no quiet hours
    quiet_end: int = -1  # quiet hours run from start (inclusive) to end (exclusive), across midnight if end < start
    timezone: str = "UTC"  # IANA name
    version: int = 0  # grows with every change (epoch ms of the change)


class PushJob(msgspec.Struct, frozen=True):
    # A frozen Struct, not a frozen dataclass: the push worker makes three per notification (see Notification).
    job_id: str
    uid: str
    device: str
    provider: str
    category: str  # message | mention | call | system | badge
    conv: str
    seq: int
    state: str
    reason: str = ""  # why it was dropped, failed or retried (the provider's words where it gave some)
    tries: int = 0  # sends attempted
    created_at: int = 0  # epoch ms: when the event it notifies of happened
    updated_at: int = 0  # epoch ms of the last state change
    next_at: int = 0  # epoch ms: when a scheduled or retrying job is due
    latency_ms: int = -1  # sent: from the event to the provider's acceptance
    payload: str = ""  # the notification as JSON (pending and dead jobs; kept for the history of the others)


def job_values(j: PushJob) -> tuple[Any, ...]:
    """``j``'s fields in the column order of the push_jobs table, for both adapters' INSERTs."""
    return (
        j.job_id,
        j.uid,
        j.device,
        j.provider,
        j.category,
        j.conv,
        j.seq,
        j.state,
        j.reason,
        j.tries,
        j.created_at,
        j.updated_at,
        j.next_at,
        j.latency_ms,
        j.payload,
    )


class NotificationStore(Protocol):
    async def notify_settings(self, uids: Sequence[str]) -> dict[str, NotifySettings]:
        """The stored settings of ``uids`` (one round trip); users who never changed theirs are absent."""
        ...

    async def put_notify_settings(self, settings: NotifySettings) -> None:
        """Create or replace the settings of ``settings.uid``."""
        ...

    async def claim_push_jobs(self, jobs: Sequence[PushJob], now: int, lease_ms: int) -> set[str]:
        """Claim jobs for sending, atomically per job: a new job is inserted as ``queued`` with a lease until
        ``now + lease_ms``; a ``queued`` job whose lease ran out (its worker died mid-send) is taken over with a
        new lease. Returns the ids claimed. A job in any other state, or whose lease still holds, is not claimed:
        two callers never both claim one job within a lease."""
        ...

    async def record_push_jobs(self, jobs: Sequence[PushJob], *, only_new: bool = False) -> None:
        """Write the jobs' current state (insert or replace by ``job_id``; the lease is released). With
        ``only_new``, a job that already has a row is left as it is (recording drops never hides a send)."""
        ...

    async def schedule_push_job(self, job: PushJob) -> bool:
        """Insert ``job`` as ``scheduled`` or, if it is still scheduled, replace its payload and due time (a
        burst summary growing). False if the job exists in another state (already sent or dropped)."""
        ...

    async def take_due_push_jobs(self, now: int, lease_ms: int, limit: int) -> list[PushJob]:
        """Up to ``limit`` pending jobs due at ``now``, oldest due first, each leased until ``now + lease_ms`` so
        that no other caller takes (or claims) it meanwhile: ``scheduled`` and ``retrying`` jobs whose ``next_at``
        has come, and ``queued`` jobs whose lease ran out (their worker died mid-send and nothing redelivered
        them). The caller records each job's outcome; a job it never records is due again once the lease runs
        out."""
        ...

    async def push_jobs(
        self, uid: str, *, device: str = "", state: str = "", since: int = 0, limit: int = 100
    ) -> list[PushJob]:
        """Jobs of ``uid`` ("" for every user) and, if given, of one ``device`` and one ``state``, updated at or
        after ``since``, newest first."""
        ...

    async def push_job_outcomes(self, since: int, until: int, limit: int) -> list[tuple[str, str, str, int]]:
        """``(provider, category, state, latency_ms)`` of up to ``limit`` jobs updated in ``[since, until)``."""
        ...

    async def purge_push_jobs(self, before: int) -> int:
        """Delete final jobs last updated before ``before``; returns how many."""
        ...
