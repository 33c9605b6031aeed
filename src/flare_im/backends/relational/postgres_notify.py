"""Relational port on PostgreSQL, the notification part: users' notification settings and push jobs (mixed into
PostgresRelational; the contract is in notifications.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from flare_im.backends.relational.notifications import (
    FINAL_STATES,
    QUEUED,
    RETRYING,
    SCHEDULED,
    NotifySettings,
    PushJob,
    job_values,
)

NOTIFY_STEPS: tuple[str, ...] = (
    """CREATE TABLE notify_settings (
    uid TEXT PRIMARY KEY, mode TEXT NOT NULL, mentions_break_mute BOOLEAN NOT NULL, preview BOOLEAN NOT NULL,
    quiet_start INT NOT NULL, quiet_end INT NOT NULL, timezone TEXT NOT NULL, version BIGINT NOT NULL)""",
    """CREATE TABLE push_jobs (
    job_id TEXT PRIMARY KEY, uid TEXT NOT NULL, device TEXT NOT NULL, provider TEXT NOT NULL, category TEXT NOT NULL,
    conv TEXT NOT NULL, seq BIGINT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL, tries INT NOT NULL,
    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, next_at BIGINT NOT NULL, lease_until BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL, payload TEXT NOT NULL)""",
    "CREATE INDEX push_jobs_user ON push_jobs (uid, updated_at)",
    "CREATE INDEX push_jobs_updated ON push_jobs (updated_at)",
    "CREATE INDEX push_jobs_due ON push_jobs (next_at) WHERE state IN ('queued', 'scheduled', 'retrying')",
)

_SETTINGS_COLS = "uid, mode, mentions_break_mute, preview, quiet_start, quiet_end, timezone, version"
_JOB_COLS = (
    "job_id, uid, device, provider, category, conv, seq, state, reason, tries, created_at, updated_at, next_at,"
    " latency_ms, payload"
)
_VALUES = ", ".join(f"${i}" for i in range(1, 17))  # the job's columns, then lease_until
_FINAL = ", ".join(f"'{s}'" for s in FINAL_STATES)


class PostgresNotifications:
    """NotificationStore over ``self._pool``."""

    _pool: asyncpg.Pool

    async def notify_settings(self, uids: Sequence[str]) -> dict[str, NotifySettings]:
        rows = await self._pool.fetch(
            f"SELECT {_SETTINGS_COLS} FROM notify_settings WHERE uid = ANY($1::text[])", list(uids)
        )
        return {row[0]: NotifySettings(*row) for row in rows}

    async def put_notify_settings(self, settings: NotifySettings) -> None:
        s = settings
        await self._pool.execute(
            f"INSERT INTO notify_settings ({_SETTINGS_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (uid)"
            " DO UPDATE SET mode = excluded.mode, mentions_break_mute = excluded.mentions_break_mute,"
            " preview = excluded.preview, quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,"
            " timezone = excluded.timezone, version = excluded.version",
            *(s.uid, s.mode, s.mentions_break_mute, s.preview, s.quiet_start, s.quiet_end, s.timezone, s.version),
        )

    async def claim_push_jobs(self, jobs: Sequence[PushJob], now: int, lease_ms: int) -> set[str]:
        claimed: set[str] = set()
        if not jobs:
            return claimed
        async with self._pool.acquire() as conn:
            for j in jobs:
                args = (*job_values(j)[:7], QUEUED, j.reason, j.tries, j.created_at, now, j.next_at, -1, j.payload)
                found = await conn.fetchval(
                    f"INSERT INTO push_jobs ({_JOB_COLS}, lease_until) VALUES ({_VALUES})"
                    " ON CONFLICT (job_id) DO UPDATE SET lease_until = excluded.lease_until,"
                    " updated_at = excluded.updated_at WHERE push_jobs.state = 'queued'"
                    " AND push_jobs.lease_until <= $17 RETURNING job_id",
                    *args,
                    now + lease_ms,
                    now,
                )
                if found is not None:
                    claimed.add(found)
        return claimed

    async def record_push_jobs(self, jobs: Sequence[PushJob], *, only_new: bool = False) -> None:
        if not jobs:
            return
        update = ", ".join(f"{c} = excluded.{c}" for c in _JOB_COLS.replace(" ", "").split(",")[1:])
        conflict = "DO NOTHING" if only_new else f"DO UPDATE SET {update}, lease_until = 0"
        async with self._pool.acquire() as conn:
            await conn.executemany(
                f"INSERT INTO push_jobs ({_JOB_COLS}, lease_until) VALUES ({_VALUES}) ON CONFLICT (job_id) {conflict}",
                [(*job_values(j), 0) for j in jobs],
            )

    async def schedule_push_job(self, job: PushJob) -> bool:
        args = (*job_values(job)[:7], SCHEDULED, *job_values(job)[8:], 0)
        found = await self._pool.fetchval(
            f"INSERT INTO push_jobs ({_JOB_COLS}, lease_until) VALUES ({_VALUES})"
            " ON CONFLICT (job_id) DO UPDATE SET payload = excluded.payload, next_at = excluded.next_at,"
            " seq = excluded.seq, updated_at = excluded.updated_at WHERE push_jobs.state = 'scheduled'"
            " RETURNING job_id",
            *args,
        )
        return found is not None

    async def take_due_push_jobs(self, now: int, lease_ms: int, limit: int) -> list[PushJob]:
        rows = await self._pool.fetch(
            f"UPDATE push_jobs SET lease_until = $1 WHERE job_id IN (SELECT job_id FROM push_jobs"
            " WHERE state IN ($2, $3, $6) AND next_at <= $4 AND lease_until <= $4 ORDER BY next_at LIMIT $5"
            f" FOR UPDATE SKIP LOCKED) RETURNING {_JOB_COLS}",
            now + lease_ms,
            SCHEDULED,
            RETRYING,
            now,
            limit,
            QUEUED,
        )
        return sorted((PushJob(*row) for row in rows), key=lambda j: j.next_at)

    async def push_jobs(
        self, uid: str, *, device: str = "", state: str = "", since: int = 0, limit: int = 100
    ) -> list[PushJob]:
        where, args = ["updated_at >= $1"], list[Any]([since])
        for column, value in (("uid", uid), ("device", device), ("state", state)):
            if value:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        args.append(limit)
        rows = await self._pool.fetch(
            f"SELECT {_JOB_COLS} FROM push_jobs WHERE {' AND '.join(where)}"
            f" ORDER BY updated_at DESC, job_id LIMIT ${len(args)}",
            *args,
        )
        return [PushJob(*row) for row in rows]

    async def push_job_outcomes(self, since: int, until: int, limit: int) -> list[tuple[str, str, str, int]]:
        rows = await self._pool.fetch(
            "SELECT provider, category, state, latency_ms FROM push_jobs WHERE updated_at >= $1 AND updated_at < $2"
            " LIMIT $3",
            since,
            until,
            limit,
        )
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    async def purge_push_jobs(self, before: int) -> int:
        status = await self._pool.execute(
            f"DELETE FROM push_jobs WHERE state IN ({_FINAL}) AND updated_at < $1", before
        )
        return int(status.split()[-1])
